//! What /proc says about the processes under test: CPU time, memory, and a
//! name to print them by. Every reading is `None` where there is no /proc or
//! no such process, so a missing figure never stops a run.

/// CPU seconds (user + system) a process has used, so a workload can report
/// what its requests cost the server.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks; USER_HZ is 100 on every mainstream build.
    Some((user + system) / 100.0)
}

/// Kilobytes of one `/proc/<pid>/status` field such as `VmRSS` (resident
/// now) or `VmHWM` (the peak resident size since the process started).
pub(crate) fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, field)
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A short name for a process, so a table of several processes of one
/// program tells them apart: the program, then its `--config` file's stem or
/// its `--name` (etcd's member name), e.g. `cairn-log log-1`, `etcd bench-0`.
pub(crate) fn process_name(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let arguments: Vec<String> = cmdline
        .split(|byte| *byte == 0)
        .filter(|argument| !argument.is_empty())
        .map(|argument| String::from_utf8_lossy(argument).into_owned())
        .collect();
    name_from_arguments(&arguments)
}

fn name_from_arguments(arguments: &[String]) -> Option<String> {
    let program = arguments.first()?;
    let program = program.rsplit('/').next().unwrap_or(program);
    let detail = arguments
        .windows(2)
        .find_map(|pair| match pair[0].as_str() {
            "--config" => std::path::Path::new(&pair[1])
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned()),
            "--name" => Some(pair[1].clone()),
            _ => None,
        });
    Some(match detail {
        Some(detail) => format!("{program} {detail}"),
        None => program.to_owned(),
    })
}

/// Process ids, one per line, as `deploy/local/*.sh` write them; lines that
/// are not numbers are skipped.
pub(crate) fn read_pids(path: &std::path::Path) -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_cpu_reading_and_a_peak() {
        let mut spin = 0_u64;
        for step in 0..5_000_000_u64 {
            spin = spin.wrapping_add(step * step);
        }
        assert!(spin > 0);
        let used = cpu_seconds(std::process::id());
        assert!(matches!(used, Some(seconds) if seconds >= 0.0), "{used:?}");
        let peak = status_kib(std::process::id(), "VmHWM");
        assert!(matches!(peak, Some(kib) if kib > 0), "{peak:?}");
    }

    #[test]
    fn a_status_field_is_found_by_its_whole_name() {
        let status = "VmPeak:\t  2000 kB\nVmHWM:\t  1234 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(status_field_kib(status, "VmHWM"), Some(1234));
        assert_eq!(status_field_kib(status, "VmRSS"), Some(1000));
        assert_eq!(status_field_kib(status, "Vm"), None);
    }

    #[test]
    fn processes_are_named_by_program_and_config_or_member() {
        let words = |text: &str| text.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            name_from_arguments(&words("/x/release/cairn-log --config .bench/log-1.toml")),
            Some("cairn-log log-1".into())
        );
        assert_eq!(
            name_from_arguments(&words("etcd --name bench-0 --data-dir d")),
            Some("etcd bench-0".into())
        );
        assert_eq!(
            name_from_arguments(&words("nats-server -a 127.0.0.1")),
            Some("nats-server".into())
        );
        assert_eq!(name_from_arguments(&[]), None);
    }
}

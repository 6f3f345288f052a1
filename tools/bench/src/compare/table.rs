//! The comparison as text: one row per workload with both systems' figures
//! and cairn/etcd ratios, the notes some workloads carry, and memory.

use std::fmt::Write as _;

use super::results::{Compared, Memory, ProcessPeak, Report, Side};

/// A figure, or `-` where a system has none.
fn figure(side: Option<&Side>, pick: fn(&Side) -> f64, decimals: usize) -> String {
    match side {
        Some(side) => format!("{:.decimals$}", pick(side)),
        None => "-".into(),
    }
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".into(), |ratio| format!("{ratio:.2}x"))
}

/// Rates and latencies, then ratios.
pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let group = |name: &str, width: usize| format!("{:-^width$}", format!(" {name} "));
    let _ = writeln!(
        out,
        "{:<30} {} | {} | {} | {}",
        "",
        group("ops/s", 29),
        group("p50 ms", 25),
        group("p99 ms", 25),
        group("max ms", 25),
    );
    let _ = writeln!(
        out,
        "{:<30} {:>10} {:>10} {:>7} | {}",
        "workload",
        "etcd",
        "cairn",
        "ratio",
        vec![format!("{:>8} {:>8} {:>7}", "etcd", "cairn", "ratio"); 3].join(" | ")
    );
    for row in &report.workloads {
        let (etcd, cairn) = (row.etcd.as_ref(), row.cairn.as_ref());
        let pair = |pick: fn(&Side) -> f64, decimals| {
            format!(
                "{:>8} {:>8}",
                figure(etcd, pick, decimals),
                figure(cairn, pick, decimals)
            )
        };
        let _ = writeln!(
            out,
            "{:<30} {:>10} {:>10} {:>7} | {} {:>7} | {} {:>7} | {} {:>7}",
            row.workload,
            figure(etcd, |side| side.best.per_second, 0),
            figure(cairn, |side| side.best.per_second, 0),
            times(row.throughput_ratio),
            pair(|side| side.best.p50_ms, 2),
            times(row.p50_ratio),
            pair(|side| side.best.p99_ms, 2),
            times(row.p99_ratio),
            pair(|side| side.best.max_ms, 1),
            times(row.max_ratio),
        );
    }
    let _ = writeln!(
        out,
        "ratio = cairn/etcd: above 1x cairn is faster in ops/s, below 1x it is faster in latency. \
         watch rows: events delivered/s and put-to-event latency; lease: keep-alives/s."
    );
    for row in &report.workloads {
        for line in notes(row) {
            let _ = writeln!(out, "{}: {line}", row.workload);
        }
    }
    out
}

/// The lines a workload adds beyond its row: conflicts, deliveries, grants,
/// puts with and without watchers, the servers' CPU per request, errors and
/// failed rounds.
fn notes(row: &Compared) -> Vec<String> {
    let mut lines = Vec::new();
    let sides = [("etcd", row.etcd.as_ref()), ("cairn", row.cairn.as_ref())];
    let each = |describe: &dyn Fn(&Side) -> Option<String>| -> Option<String> {
        let parts: Vec<String> = sides
            .iter()
            .filter_map(|(name, side)| Some(format!("{name} {}", describe((*side)?)?)))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    };
    if let Some(line) = each(&|side| {
        let conflicts = side.notes.conflicts?;
        let answered = side.best.operations;
        let committed = answered.saturating_sub(conflicts);
        let seconds = side.best.operations as f64 / side.best.per_second.max(f64::EPSILON);
        Some(format!(
            "{:.0} committed/s, {conflicts} of {answered} conflicted ({:.0}%)",
            committed as f64 / seconds.max(f64::EPSILON),
            conflicts as f64 * 100.0 / (answered.max(1) as f64)
        ))
    }) {
        lines.push(line);
    }
    if let Some(line) = each(&|side| {
        let (delivered, expected) = (side.notes.delivered?, side.notes.expected?);
        let puts = side.notes.puts.unwrap_or(0);
        Some(format!(
            "{puts} puts, {delivered} of {expected} events delivered ({:.1}%)",
            delivered as f64 * 100.0 / (expected.max(1) as f64)
        ))
    }) {
        lines.push(line);
    }
    if let Some(line) = each(&|side| {
        Some(format!(
            "granted in {:.2} s, {} keep-alives answered TTL 0",
            side.notes.grant_seconds?,
            side.notes.ttl_zero.unwrap_or(0)
        ))
    }) {
        lines.push(line);
    }
    if let Some(line) = each(&|side| {
        Some(format!(
            "{} ranges of the read set answered meanwhile",
            side.notes.ranges?
        ))
    }) {
        lines.push(line);
    }
    if let Some(line) = each(&|side| {
        Some(format!(
            "{:.0} puts/s with the watchers open, {:.0} after they closed, with/without {}",
            side.notes.puts_with_watchers?,
            side.notes.puts_without_watchers?,
            times(side.notes.puts_with_over_without)
        ))
    }) {
        lines.push(line);
    }
    if let Some(line) = each(&|side| Some(format!("{:.0} µs", side.notes.cpu_us_per_request?))) {
        let cpu = |side: Option<&Side>| side?.notes.cpu_us_per_request;
        let ratio = match (cpu(row.etcd.as_ref()), cpu(row.cairn.as_ref())) {
            (Some(etcd), Some(cairn)) if etcd > 0.0 => {
                format!(" (cairn/etcd {:.2}x)", cairn / etcd)
            }
            _ => String::new(),
        };
        lines.push(format!("server CPU per request, best round: {line}{ratio}"));
    }
    if let Some(line) = each(&|side| {
        (side.best.errors > 0).then(|| format!("{} errors in the best round", side.best.errors))
    }) {
        lines.push(line);
    }
    if let Some(line) = each(&|side| {
        (side.rounds_per_second.len() > 1).then(|| {
            let rates: Vec<String> = side
                .rounds_per_second
                .iter()
                .map(|rate| format!("{rate:.0}"))
                .collect();
            format!("[{}]", rates.join(", "))
        })
    }) {
        lines.push(format!("every round's rate: {line}"));
    }
    for (name, side) in sides {
        for failure in side
            .map(|side| side.failures.as_slice())
            .unwrap_or_default()
        {
            lines.push(format!("{name} round failed: {failure}"));
        }
        if side.is_none() {
            lines.push(format!("{name}: no round finished"));
        }
    }
    lines
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Every process's peak memory, the total per system, and their ratio.
pub(super) fn render_memory(memory: &Memory) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "peak resident memory (VmHWM)");
    let _ = writeln!(
        out,
        "{:<6} {:<22} {:>8} {:>10}",
        "system", "process", "pid", "MiB"
    );
    let rows = |out: &mut String, system: &str, processes: &[ProcessPeak]| {
        for process in processes {
            let peak = process
                .peak_kib
                .map_or_else(|| "gone".into(), |kib| format!("{:.1}", mib(kib)));
            let _ = writeln!(
                out,
                "{system:<6} {:<22} {:>8} {peak:>10}",
                process.name, process.pid
            );
        }
    };
    rows(&mut out, "etcd", &memory.etcd);
    rows(&mut out, "cairn", &memory.cairn);
    let _ = writeln!(
        out,
        "total: etcd {:.1} MiB in {} processes, cairn {:.1} MiB in {}; cairn/etcd {}",
        mib(memory.etcd_total_kib),
        memory.etcd.len(),
        mib(memory.cairn_total_kib),
        memory.cairn.len(),
        times(memory.ratio)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::results::{Notes, Report};
    use super::*;
    use crate::report::Summary;

    fn side(conflicts: Option<u64>) -> Side {
        Side {
            best: Summary {
                label: "w".into(),
                operations: 1000,
                errors: 0,
                per_second: 500.0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 3.0,
            },
            notes: Notes {
                conflicts,
                ..Notes::default()
            },
            rounds_per_second: vec![400.0, 500.0],
            distribution: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// A two-round report of `workloads`.
    fn report_of(workloads: Vec<Compared>) -> Report {
        Report {
            etcd_endpoint: "e".into(),
            cairn_endpoint: "c".into(),
            rounds: 2,
            round_seconds: 2.0,
            value_bytes: 256,
            key_bytes: 8,
            workloads,
            memory: Memory::default(),
        }
    }

    #[test]
    fn every_workload_has_a_row_and_its_notes() {
        let report = report_of(vec![
            Compared::new(
                "cas",
                "txn CAS",
                Some(side(Some(250))),
                Some(side(Some(500))),
            ),
            Compared::new("put", "put", Some(side(None)), None),
        ]);
        let text = render(&report);
        assert!(text.contains("txn CAS"), "{text}");
        assert!(
            text.contains("375 committed/s, 250 of 1000 conflicted (25%)"),
            "{text}"
        );
        assert!(text.contains("1.00x"), "{text}");
        assert!(text.contains("cairn: no round finished"), "{text}");
        assert!(text.contains("[400, 500]"), "{text}");
    }

    #[test]
    fn the_servers_cpu_per_request_is_noted_with_its_ratio() {
        let costing = |micros| {
            let mut side = side(None);
            side.notes.cpu_us_per_request = Some(micros);
            side
        };
        let report = report_of(vec![Compared::new(
            "put-100",
            "put",
            Some(costing(80.0)),
            Some(costing(200.0)),
        )]);
        let text = render(&report);
        assert!(
            text.contains(
                "put: server CPU per request, best round: etcd 80 µs; cairn 200 µs (cairn/etcd 2.50x)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_watch_on_own_keys_notes_the_puts_with_and_without_watchers() {
        let mut watched = side(None);
        watched.notes = Notes {
            puts_with_watchers: Some(9_500.0),
            puts_without_watchers: Some(10_000.0),
            puts_with_over_without: Some(0.95),
            ..Notes::default()
        };
        let report = report_of(vec![Compared::new(
            "watch-keys",
            "watch, own keys",
            Some(watched),
            Some(side(None)),
        )]);
        let text = render(&report);
        assert!(
            text.contains(
                "watch, own keys: etcd 9500 puts/s with the watchers open, \
                 10000 after they closed, with/without 0.95x\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn memory_lists_every_process_and_the_totals() {
        let peak = |pid, kib| ProcessPeak {
            pid,
            name: format!("p{pid}"),
            peak_kib: kib,
        };
        let memory = Memory::new(
            vec![peak(1, Some(1024))],
            vec![peak(2, Some(2048)), peak(3, None)],
        );
        let text = render_memory(&memory);
        assert!(text.contains("p3"), "{text}");
        assert!(text.contains("gone"), "{text}");
        assert!(text.contains("cairn/etcd 2.00x"), "{text}");
    }
}

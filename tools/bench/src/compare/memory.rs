//! The processes of a system, from the pid files its start script wrote,
//! and their peak memory: what running it costs, beside how fast it is.

use std::path::PathBuf;

use super::results::ProcessPeak;
use crate::procfs::{process_name, read_pids, status_kib};

/// The processes listed in `files`, each pid once, in the order listed. A
/// file that cannot be read is reported and skipped.
pub(super) fn pids(files: &[PathBuf]) -> Vec<u32> {
    let mut pids: Vec<u32> = Vec::new();
    for file in files {
        match read_pids(file) {
            Ok(listed) => {
                for pid in listed {
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
            }
            Err(error) => eprintln!("processes: {error}"),
        }
    }
    pids
}

/// Each process's `VmHWM`, the peak resident size since it started.
pub(super) fn peaks(pids: &[u32]) -> Vec<ProcessPeak> {
    pids.iter()
        .map(|&pid| ProcessPeak {
            pid,
            name: process_name(pid).unwrap_or_else(|| "(gone)".into()),
            peak_kib: status_kib(pid, "VmHWM"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_read_once_each_and_this_process_has_a_peak() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("cairn-bench-memory-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let me = std::process::id();
        let (first, second) = (dir.join("pids"), dir.join("watch-pids"));
        std::fs::write(&first, format!("{me}\nnot a pid\n"))?;
        std::fs::write(&second, format!("{me}\n"))?;
        let found = peaks(&pids(&[first, second, dir.join("missing")]));
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pid, me);
        assert!(matches!(found[0].peak_kib, Some(kib) if kib > 0));
        Ok(())
    }
}

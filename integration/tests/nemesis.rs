//! Random faults against a recorded workload, judged by the history checker:
//! clients through the edge doing puts, linearizable reads and
//! compare-and-set on a few keys, a watcher from the first revision, and a
//! nemesis killing, pausing and cutting off every kind of process. The same
//! harness passes against a real etcd cluster under its own faults, and
//! fails against a cairn deliberately broken to serve stale reads.
//!
//! `CAIRNTEST_SEED` replays a run's choices.

use std::time::Duration;

use anyhow::{ensure, Result};
use cairn_integration::checker::{check, CheckOptions, Report};
use cairn_integration::etcd::Etcd;
use cairn_integration::log_cluster::LogClusterOptions;
use cairn_integration::nemesis::{seed, Faulty, Nemesis};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::with_process_output;
use cairn_integration::workload::{Workload, WorkloadOptions};

/// How long the faults go on.
const FAULTS_FOR: Duration = Duration::from_secs(40);
/// How long the store may take, after the last fault, to answer the final
/// reads and bring the watcher to the last revision.
const SETTLE_PATIENCE: Duration = Duration::from_secs(90);

/// Runs the workload against `endpoints` while `system` suffers faults, and
/// checks what was recorded.
async fn run_under_faults<S: Faulty>(
    system: &mut S,
    endpoints: &[String],
    faults_for: Duration,
) -> Result<(Report, Vec<String>)> {
    let seed = seed();
    let options = WorkloadOptions {
        seed,
        ..WorkloadOptions::default()
    };
    let workload = Workload::start(endpoints, options).await?;
    let mut nemesis = Nemesis::new(seed);
    let faults = nemesis.run(system, faults_for).await;
    let recorded = workload.finish(SETTLE_PATIENCE).await;
    faults?;
    let mut recorded = recorded?;
    recorded.settle_unseen_writes();
    let report = check(
        &recorded.operations,
        Some(&recorded.events),
        &CheckOptions {
            sole_writer: true,
            ..CheckOptions::default()
        },
    );
    Ok((report, nemesis.log))
}

fn relayed_stack(mvcc_extra: &str) -> StackOptions {
    StackOptions {
        log: LogClusterOptions {
            relays: true,
            ..LogClusterOptions::default()
        },
        mvcc_extra: mvcc_extra.to_owned(),
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_stays_linearizable_and_its_watch_whole_under_random_faults() -> Result<()> {
    let mut stack = Stack::start(relayed_stack("")).await?;
    let dir = stack.cluster.dir().to_owned();
    let endpoints = vec![stack.edge.addr.clone()];
    let outcome = async {
        let (report, faults) = run_under_faults(&mut stack, &endpoints, FAULTS_FOR).await?;
        eprintln!("{report}\nfaults:\n{}", faults.join("\n"));
        ensure!(
            report.passed(),
            "{report}\n\nfaults:\n{}",
            faults.join("\n")
        );
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_etcd_passes_the_same_checker_under_kills_and_pauses() -> Result<()> {
    let mut etcd = Etcd::start_cluster(3).await?;
    let endpoints = etcd.endpoints();
    let (report, faults) = run_under_faults(&mut etcd, &endpoints, FAULTS_FOR / 2).await?;
    eprintln!("{report}\nfaults:\n{}", faults.join("\n"));
    ensure!(
        report.passed(),
        "{report}\n\nfaults:\n{}\n\netcd's log ends with:\n{}",
        faults.join("\n"),
        etcd.output_tail(30)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_cairn_that_answers_linearizable_reads_without_a_read_index(
) -> Result<()> {
    let mut stack = Stack::start(relayed_stack("[testing]\nskip_read_index = true\n")).await?;
    let dir = stack.cluster.dir().to_owned();
    let endpoints = vec![stack.edge.addr.clone()];
    let outcome = async {
        let (report, faults) = run_under_faults(&mut stack, &endpoints, FAULTS_FOR / 2).await?;
        ensure!(
            !report.passed(),
            "stale reads went unnoticed:\n{report}\n\nfaults:\n{}",
            faults.join("\n")
        );
        eprintln!("caught, as it should be:\n{report}");
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}

//! Random faults against a recorded workload, judged by the history checker:
//! clients through the edge doing puts, linearizable reads and
//! compare-and-set on a few keys, a watcher from the first revision, and a
//! nemesis killing, pausing and cutting off every kind of process. The same
//! harness passes against a real etcd cluster under its own faults, and
//! fails against a cairn deliberately broken to serve stale reads.
//!
//! `CAIRNTEST_SEED` replays a run's choices; `CAIRNTEST_CHAOS_FOR` (e.g.
//! `10m`, what `just chaos 10m` sets) runs the cairn test longer than CI's
//! 40 s, `CAIRNTEST_LOG_NODES=5` gives the log five nodes (the nemesis then
//! kills two at once as its minority), and every run prints a summary table.

use std::time::Duration;

use anyhow::{ensure, Result};
use cairn_integration::checker::{check, CheckOptions, Report};
use cairn_integration::etcd::Etcd;
use cairn_integration::log_cluster::LogClusterOptions;
use cairn_integration::nemesis::{Faulty, Nemesis};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::workload::{Recorded, Workload, WorkloadOptions};
use cairn_integration::{duration_from_env, run_seed, with_process_output};

/// One run at a time: each is a dozen processes, and a real etcd cluster
/// starting beside a cairn one (both picking free ports, both needing the
/// two cores to elect) makes either miss its deadlines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the faults go on unless `CAIRNTEST_CHAOS_FOR` says otherwise.
const FAULTS_FOR: Duration = Duration::from_secs(40);
/// How long the store may take, after the last fault, to answer the final
/// reads and bring the watcher to the last revision.
const SETTLE_PATIENCE: Duration = Duration::from_secs(90);

/// Runs the workload against `endpoints` while `system` suffers faults, and
/// checks what was recorded.
async fn run_under_faults<S: Faulty>(
    system: &mut S,
    endpoints: &[String],
    watch_endpoints: &[String],
    faults_for: Duration,
) -> Result<(Report, String)> {
    let seed = run_seed("nemesis");
    let options = WorkloadOptions {
        seed,
        watch_endpoints: watch_endpoints.to_vec(),
        ..WorkloadOptions::default()
    };
    let workload = Workload::start(endpoints, options).await?;
    let mut nemesis = Nemesis::new(seed);
    let faults = nemesis.run(system, faults_for).await;
    let recorded = workload.finish(SETTLE_PATIENCE).await;
    faults?;
    let mut recorded = recorded?;
    let outcomes = recorded.outcomes();
    recorded.settle_unseen_writes();
    let report = check(
        &recorded.operations,
        Some(&recorded.events),
        &CheckOptions {
            sole_writer: true,
            // A 10-minute run holds ~25,000 calls per key; a violation near the
            // end of one takes ~8M steps to find (~400k steps/s in a debug build).
            search_budget: 50_000_000,
        },
    );
    let summary = summary(&report, &recorded, outcomes, &nemesis, faults_for);
    Ok((report, summary))
}

/// The run in two tables: what the clients saw, and which faults they saw it under.
fn summary(
    report: &Report,
    recorded: &Recorded,
    (ok, failed, unknown): (usize, usize, usize),
    nemesis: &Nemesis,
    faults_for: Duration,
) -> String {
    let mut table = format!(
        "| faults for | calls | ok | failed | unknown outcome | watch events | violations | undecided keys | seconds with an acknowledged write |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {:?} | {} | {ok} | {failed} | {unknown} | {} | {} | {} | {:.1} % |\n\n\
         | fault | times |\n|---|---|\n",
        faults_for,
        recorded.operations.len(),
        recorded.events.len(),
        report.violations.len(),
        report.undecided.len(),
        100.0 * recorded.write_availability(),
    );
    for (kind, times) in &nemesis.counts {
        table.push_str(&format!("| {kind} | {times} |\n"));
    }
    table.push_str(&format!("\nfaults in order:\n{}", nemesis.log.join("\n")));
    table
}

/// A stack whose log nodes sit behind relays; `CAIRNTEST_LOG_NODES` (3 or
/// 5) sets how many.
fn relayed_stack() -> Result<StackOptions> {
    let nodes = match std::env::var("CAIRNTEST_LOG_NODES") {
        Ok(nodes) => nodes
            .parse()
            .map_err(|_| anyhow::anyhow!("CAIRNTEST_LOG_NODES={nodes}: expected 3 or 5"))?,
        Err(_) => 3,
    };
    Ok(StackOptions {
        log: LogClusterOptions {
            nodes,
            relays: true,
            ..LogClusterOptions::default()
        },
        ..StackOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_stays_linearizable_and_its_watch_whole_under_random_faults() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start(relayed_stack()?).await?;
    let dir = stack.cluster.dir().to_owned();
    let endpoints = vec![stack.edge.addr.clone()];
    let outcome = async {
        let faults_for = duration_from_env("CAIRNTEST_CHAOS_FOR", FAULTS_FOR)?;
        let (report, summary) = run_under_faults(&mut stack, &endpoints, &[], faults_for).await?;
        eprintln!("{report}\n\n{summary}");
        ensure!(report.passed(), "{report}\n\n{summary}");
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_etcd_passes_the_same_checker_under_kills_and_pauses() -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut etcd = Etcd::start_cluster(3).await?;
    let endpoints = etcd.endpoints();
    let (report, summary) = run_under_faults(&mut etcd, &endpoints, &[], FAULTS_FOR / 2).await?;
    eprintln!("{report}\n\n{summary}");
    ensure!(
        report.passed(),
        "{report}\n\n{summary}\n\netcd's log ends with:\n{}",
        etcd.output_tail(30)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_cairn_that_answers_linearizable_reads_without_a_read_index(
) -> Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Both replicas skip the read index and the second applies 100 ms late.
    // Clients call the replicas straight, so a write the first acknowledged
    // is often read from the second before it has applied it; the watcher
    // uses the edge.
    let skipping = "[testing]\nskip_read_index = true\n";
    let mut stack = Stack::start(StackOptions {
        mvcc_extra: skipping.to_owned(),
        second_mvcc_extra: Some(format!("{skipping}apply_lag_ms = 100\n")),
        ..relayed_stack()?
    })
    .await?;
    let dir = stack.cluster.dir().to_owned();
    let endpoints: Vec<String> = stack
        .replicas
        .iter()
        .map(|replica| replica.addr.clone())
        .collect();
    let watch = vec![stack.edge.addr.clone()];
    let outcome = async {
        let (report, summary) =
            run_under_faults(&mut stack, &endpoints, &watch, FAULTS_FOR / 2).await?;
        ensure!(
            !report.passed(),
            "stale reads went unnoticed:\n{report}\n\n{summary}"
        );
        eprintln!("caught, as it should be:\n{report}");
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}

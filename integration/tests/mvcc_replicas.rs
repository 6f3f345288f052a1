//! cairn-mvcc as real processes: two replicas on a three-node log and a real
//! nats-server, under 20 concurrent clients, with NATS and one replica
//! restarted mid-run.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn_integration::eventually;
use cairn_integration::log_cluster::{LogCluster, LogClusterOptions};
use cairn_integration::mvcc_cluster::{start_replicas, MvccReplica, NatsServer};
use cairn_proto::cairn::mvcc::v1::{EventsRequest, RevisionEvents};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use parking_lot_free::Shared;
use prost::Message;

const CLIENTS: usize = 20;
const OPS_PER_CLIENT: usize = 150;
const STREAM: &str = "CAIRN_REVISIONS";

mod parking_lot_free {
    //! What the clients share: the highest acknowledged revision of each key
    //! and overall, and what went wrong.

    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct Shared {
        pub acked: Mutex<HashMap<Vec<u8>, i64>>,
        pub violations: Mutex<Vec<String>>,
    }

    impl Shared {
        pub(crate) fn acked_of(&self, key: &[u8]) -> i64 {
            self.acked
                .lock()
                .map(|acked| acked.get(key).copied().unwrap_or(0))
                .unwrap_or(0)
        }

        pub(crate) fn record(&self, key: &[u8], revision: i64) {
            if let Ok(mut acked) = self.acked.lock() {
                let entry = acked.entry(key.to_vec()).or_insert(0);
                *entry = (*entry).max(revision);
            }
        }

        pub(crate) fn violation(&self, message: String) {
            if let Ok(mut violations) = self.violations.lock() {
                violations.push(message);
            }
        }
    }
}

fn key(client: usize, slot: usize) -> Vec<u8> {
    format!("key-{client:02}-{slot}").into_bytes()
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_agree_reads_are_linearizable_and_the_stream_has_no_gap() -> Result<()> {
    let cluster = LogCluster::start(LogClusterOptions::default()).await?;
    let endpoints: Vec<String> = cluster.addrs()?;
    let mut nats = NatsServer::start(cluster.dir()).await?;
    let mut replicas = start_replicas(
        cluster.dir(),
        &["mvcc-1", "mvcc-2"],
        &endpoints,
        &nats.url,
        "",
    )
    .await?;

    let shared = Arc::new(Shared::default());
    let highest_acked = Arc::new(AtomicI64::new(0));
    let reads_checked = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = replicas
        .iter()
        .map(MvccReplica::kv)
        .collect::<Result<_>>()?;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let clients = clients.clone();
        let shared = shared.clone();
        let highest_acked = highest_acked.clone();
        let reads_checked = reads_checked.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            for op in 0..OPS_PER_CLIENT {
                let mut kv = clients[(client + op) % clients.len()].clone();
                if op % 5 == 4 {
                    // Read a key another client writes.
                    let target = key((client + op) % CLIENTS, op % 10);
                    let floor_key = shared.acked_of(&target);
                    let floor_all = highest_acked.load(Ordering::SeqCst);
                    let request = RangeRequest {
                        key: target.clone(),
                        ..Default::default()
                    };
                    match kv.range(request).await {
                        Ok(response) => {
                            let response = response.into_inner();
                            let revision = response.header.map_or(0, |header| header.revision);
                            let seen = response.kvs.first().map_or(0, |kv| kv.mod_revision);
                            if revision < floor_all || seen < floor_key {
                                shared.violation(format!(
                                    "read of {:?} at header {revision} saw mod {seen}; acknowledged before it: key {floor_key}, any {floor_all}",
                                    String::from_utf8_lossy(&target)
                                ));
                            }
                            reads_checked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                let value = format!("value-{client}-{op}").into_bytes();
                let (written, outcome) = if op % 7 == 6 {
                    let pair = vec![key(client, 8), key(client, 9)];
                    let request = TxnRequest {
                        compare: vec![Compare {
                            key: key(client, 0),
                            result: CompareResult::Greater as i32,
                            target: CompareTarget::Version as i32,
                            target_union: Some(TargetUnion::Version(0)),
                            ..Default::default()
                        }],
                        success: pair.iter().map(|key| put_op(key.clone(), value.clone())).collect(),
                        failure: vec![],
                    };
                    let outcome = kv.txn(request).await.map(|response| {
                        let response = response.into_inner();
                        let revision = response.header.map_or(0, |header| header.revision);
                        (response.succeeded, revision)
                    });
                    (pair, outcome)
                } else {
                    let target = key(client, op % 10);
                    let request = PutRequest {
                        key: target.clone(),
                        value,
                        ..Default::default()
                    };
                    let outcome = kv.put(request).await.map(|response| {
                        (true, response.into_inner().header.map_or(0, |header| header.revision))
                    });
                    (vec![target], outcome)
                };
                match outcome {
                    Ok((wrote, revision)) => {
                        if wrote {
                            for key in &written {
                                shared.record(key, revision);
                            }
                        }
                        highest_acked.fetch_max(revision, Ordering::SeqCst);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Mid-run: NATS restarts on its store, and one replica dies and comes back.
    tokio::time::sleep(Duration::from_millis(800)).await;
    nats.kill().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart().await?;
    replicas[1].kill().await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    replicas[1].start()?;

    for task in tasks {
        task.await?;
    }
    let violations = shared
        .violations
        .lock()
        .map(|violations| violations.clone())
        .unwrap_or_default();
    ensure!(
        violations.is_empty(),
        "{} stale reads: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    let reads = reads_checked.load(Ordering::Relaxed);
    ensure!(
        reads >= CLIENTS * OPS_PER_CLIENT / 5 / 2,
        "only {reads} reads succeeded"
    );

    // Both replicas reach the same revision, and hash it the same.
    let current = eventually(
        Duration::from_secs(30),
        "the replicas to converge",
        || async {
            let first = replicas[0].hash_kv(0).await.ok()?;
            let second = replicas[1].hash_kv(0).await.ok()?;
            (first.current_revision == second.current_revision
                && first.current_revision >= highest_acked.load(Ordering::SeqCst))
            .then_some(first.current_revision)
        },
    )
    .await
    .with_context(|| replicas[1].output_tail(20))?;
    let first = replicas[0].hash_kv(current).await?;
    let second = replicas[1].hash_kv(current).await?;
    ensure!(
        first.hash == second.hash,
        "hashes differ at {current}: {first:?} vs {second:?}"
    );

    // Every acknowledged write is in both replicas.
    let acked: BTreeMap<Vec<u8>, i64> = shared
        .acked
        .lock()
        .map(|acked| acked.clone().into_iter().collect())
        .unwrap_or_default();
    for replica in &replicas {
        let mut kv = replica.kv()?;
        for (key, revision) in &acked {
            let response = kv
                .range(RangeRequest {
                    key: key.clone(),
                    serializable: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let seen = response.kvs.first().map_or(0, |kv| kv.mod_revision);
            ensure!(
                seen >= *revision,
                "{}: {key:?} at {seen}, acknowledged at {revision}",
                replica.name
            );
        }
    }

    // The stream holds revisions 1..=current, one message each, equal to history.
    let history = history(&replicas[0], 1).await?;
    let client = async_nats::connect(&nats.url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = eventually(Duration::from_secs(30), "the stream to catch up", || {
        let jetstream = jetstream.clone();
        async move {
            let mut stream = jetstream.get_stream(STREAM).await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.last_sequence as i64 >= current).then_some(stream)
        }
    })
    .await?;
    let info = stream.info().await?;
    ensure!(
        info.state.first_sequence == 1,
        "stream starts at {}",
        info.state.first_sequence
    );
    ensure!(
        info.state.messages == info.state.last_sequence,
        "{} messages for sequences 1..={}",
        info.state.messages,
        info.state.last_sequence
    );
    for sequence in 1..=current as u64 {
        let message = stream.get_raw_message(sequence).await?;
        let published = RevisionEvents::decode(message.payload.as_ref())?;
        ensure!(
            published.revision == sequence as i64,
            "sequence {sequence} holds revision {}",
            published.revision
        );
        let expected = history
            .get(&published.revision)
            .cloned()
            .unwrap_or_default();
        ensure!(
            published.events == expected,
            "revision {sequence}: stream and history differ"
        );
    }
    ensure!(
        failures.load(Ordering::Relaxed) < CLIENTS * OPS_PER_CLIENT / 2,
        "too many failed requests"
    );
    eprintln!(
        "t110: revision {current}, {reads} linearizable reads checked, {} requests failed during restarts, {} keys",
        failures.load(Ordering::Relaxed),
        acked.len()
    );
    Ok(())
}

/// Every revision's events from `from` on, with prev_kv, from a replica's history.
async fn history(
    replica: &MvccReplica,
    from: i64,
) -> Result<HashMap<i64, Vec<cairn_proto::mvccpb::Event>>> {
    let mut stream = replica
        .mvcc()?
        .events(EventsRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: from,
            prev_kv: true,
        })
        .await?
        .into_inner();
    let mut history = HashMap::new();
    while let Some(chunk) = stream.message().await? {
        for revision in chunk.revisions {
            history.insert(revision.revision, revision.events);
        }
    }
    Ok(history)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_lost_everything_is_rebuilt_from_history() -> Result<()> {
    let cluster = LogCluster::start(LogClusterOptions {
        nodes: 1,
        ..Default::default()
    })
    .await?;
    let endpoints = vec![cluster.addr(1)?.to_owned()];
    let mut nats = NatsServer::start(cluster.dir()).await?;
    let mut replica = MvccReplica::configure(cluster.dir(), "mvcc-1", &endpoints, &nats.url)?;
    replica.start()?;
    replica.wait_applied(0, Duration::from_secs(20)).await?;
    let mut kv = replica.kv()?;
    let put = |n: usize| PutRequest {
        key: format!("k{}", n % 7).into_bytes(),
        value: format!("v{n}").into_bytes(),
        ..Default::default()
    };
    for n in 0..40 {
        kv.put(put(n)).await?;
    }
    // Revision 41 now; compaction at 30 removes history the stream cannot be
    // rebuilt from: those revisions come back as placeholders.
    kv.compact(cairn_proto::etcdserverpb::CompactionRequest {
        revision: 30,
        physical: true,
    })
    .await?;
    nats.kill().await?;
    nats.wipe()?;
    nats.restart().await?;
    for n in 40..50 {
        kv.put(put(n)).await?;
    }
    let current = replica.hash_kv(0).await?.current_revision;
    ensure!(current == 51, "revision {current} after 50 puts");

    let history = history(&replica, 30).await?;
    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    let mut stream = eventually(Duration::from_secs(30), "the stream to be rebuilt", || {
        let jetstream = jetstream.clone();
        async move {
            let mut stream = jetstream.get_stream(STREAM).await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.last_sequence as i64 >= current).then_some(stream)
        }
    })
    .await
    .with_context(|| replica.output_tail(20))?;
    let info = stream.info().await?;
    ensure!(
        info.state.first_sequence == 1 && info.state.last_sequence == 51,
        "stream holds {}..={}",
        info.state.first_sequence,
        info.state.last_sequence
    );
    ensure!(
        info.state.messages == 51,
        "{} messages",
        info.state.messages
    );
    for sequence in 1..=51u64 {
        let message = stream.get_raw_message(sequence).await?;
        let published = RevisionEvents::decode(message.payload.as_ref())?;
        ensure!(
            published.revision == sequence as i64,
            "sequence {sequence} holds {}",
            published.revision
        );
        let marked = message
            .headers
            .get(cairn_proto::contract::revision_stream::COMPACTED)
            .map(|value| value.to_string());
        if (2..30).contains(&sequence) {
            ensure!(
                marked.as_deref() == Some("30") && published.events.is_empty(),
                "sequence {sequence} is not a compacted placeholder: {marked:?}, {} events, headers {:?}", published.events.len(), message.headers
            );
            continue;
        }
        ensure!(marked.is_none(), "sequence {sequence} is marked compacted");
        let mut expected = history
            .get(&published.revision)
            .cloned()
            .unwrap_or_default();
        let mut events = published.events;
        if sequence == 30 {
            // History no longer has the values before the compaction point.
            for event in events.iter_mut().chain(expected.iter_mut()) {
                event.prev_kv = None;
            }
        }
        ensure!(
            events == expected,
            "revision {sequence}: stream and history differ"
        );
    }
    Ok(())
}

//! cairn-lease as real processes, two instances behind a real edge, on real
//! replicas, log and NATS: etcd's Lease API, expiry in one revision, and
//! leases that neither expire early nor live on when their instance dies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cairn_integration::stack::{Stack, StackOptions, CHECKPOINT_MS, TAKEOVER_MS};
use cairn_proto::cairn::mvcc::v1::EventsRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use tonic::transport::Channel;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_through_the_edge_grant_keep_revoke_and_expire_in_one_revision() -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let mut lease = stack.lease()?;

    // Grant, attach, time-to-live with keys, list.
    let short = stack.grant(3).await?;
    let long = stack.grant(30).await?;
    let first_revision = stack.put("expiring/a", short).await?;
    stack.put("expiring/b", short).await?;
    stack.put("revoked/c", long).await?;
    let ttl = lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: long,
            keys: true,
        })
        .await?
        .into_inner();
    ensure!(
        (28..=30).contains(&ttl.ttl)
            && ttl.granted_ttl == 30
            && ttl.keys == vec![b"revoked/c".to_vec()],
        "{ttl:?}"
    );
    let listed = lease
        .lease_leases(LeaseLeasesRequest {})
        .await?
        .into_inner();
    let ids: Vec<i64> = listed.leases.iter().map(|status| status.id).collect();
    ensure!(ids.contains(&short) && ids.contains(&long), "{ids:?}");

    // etcd's errors.
    let too_long = lease
        .lease_grant(LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        })
        .await
        .err()
        .context("a TTL above etcd's maximum was granted")?;
    ensure!(
        too_long.code() == Code::OutOfRange
            && too_long.message() == "etcdserver: too large lease TTL"
    );
    let twice = lease
        .lease_grant(LeaseGrantRequest { ttl: 10, id: long })
        .await
        .err()
        .context("an existing lease ID was granted again")?;
    ensure!(
        twice.code() == Code::FailedPrecondition
            && twice.message() == "etcdserver: lease already exists",
        "{twice:?}"
    );
    let unknown = stack
        .edge
        .kv()?
        .put(PutRequest {
            key: b"orphan".to_vec(),
            value: b"v".to_vec(),
            lease: 12345,
            ..Default::default()
        })
        .await
        .err()
        .context("a put with an unknown lease succeeded")?;
    ensure!(
        unknown.code() == Code::NotFound
            && unknown.message() == "etcdserver: requested lease not found"
    );
    ensure!(
        stack.keep_alive(12345).await? == 0,
        "an unknown lease was kept alive"
    );

    // Revoke: the keys go at once; the lease is gone for TimeToLive.
    lease.lease_revoke(LeaseRevokeRequest { id: long }).await?;
    ensure!(!stack.exists("revoked/c").await?);
    let after = lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: long,
            keys: false,
        })
        .await?
        .into_inner();
    ensure!(after.ttl == -1, "{after:?}");

    // A watcher sees the expiry, through the edge and a gateway.
    let (watch_requests, queued) = tokio::sync::mpsc::channel(2);
    watch_requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"expiring/".to_vec(),
                range_end: b"expiring0".to_vec(),
                ..Default::default()
            })),
        })
        .await?;
    let mut watched = WatchClient::new(stack.edge.channel()?)
        .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await?
        .into_inner();

    // Kept alive past its TTL, then left to expire.
    let mut last_sent = Instant::now();
    for _ in 0..4 {
        last_sent = Instant::now();
        ensure!(stack.keep_alive(short).await? == 3);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    ensure!(
        stack.exists("expiring/a").await?,
        "expired while kept alive"
    );
    let gone = stack.gone_at("expiring/a", Duration::from_secs(10)).await?;
    let lived = gone.duration_since(last_sent);
    ensure!(
        lived >= Duration::from_secs(3),
        "expired {lived:?} after the last keep-alive"
    );
    ensure!(
        lived <= Duration::from_secs(4),
        "lived {lived:?} after the last keep-alive"
    );
    println!("a 3 s lease expired {lived:?} after its last keep-alive");

    // The watcher got both deletes in one response, at one revision.
    let deletes = loop {
        let answer = tokio::time::timeout(Duration::from_secs(10), watched.message())
            .await
            .context("no watch event for the expiry")??
            .context("the watch stream ended")?;
        if !answer.events.is_empty() {
            break answer.events;
        }
    };
    let revisions: Vec<i64> = deletes
        .iter()
        .map(|event| event.kv.as_ref().map_or(0, |kv| kv.mod_revision))
        .collect();
    ensure!(
        deletes.len() == 2
            && deletes.iter().all(|event| event.r#type == 1)
            && revisions[0] == revisions[1],
        "the watcher saw {deletes:?}"
    );
    drop(watch_requests);

    // Both keys went in one revision.
    let mut history = stack.replicas[0]
        .mvcc()?
        .events(EventsRequest {
            key: b"expiring/".to_vec(),
            range_end: b"expiring0".to_vec(),
            start_revision: first_revision,
            prev_kv: false,
        })
        .await?
        .into_inner();
    let mut deletes = Vec::new();
    while let Some(chunk) = history.message().await? {
        for revision in chunk.revisions {
            for event in revision.events {
                if event.r#type == 1 {
                    deletes.push(revision.revision);
                }
            }
        }
    }
    ensure!(
        deletes.len() == 2 && deletes[0] == deletes[1],
        "deletes at {deletes:?}"
    );
    drop(stack.cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_outlives_two_takeovers_and_an_abandoned_one_still_expires() -> Result<()> {
    let mut stack = Stack::start(StackOptions::default()).await?;
    let kept = stack.grant(4).await?;
    stack.put("kept", kept).await?;
    let abandoned = stack.grant(4).await?;
    stack.put("abandoned", abandoned).await?;
    ensure!(stack.keep_alive(abandoned).await? == 4);
    let abandoned_at = Instant::now();

    // Keep `kept` alive every TTL/3 through the edge for 60 s, as clients
    // do, while the active instance is killed twice.
    let stop_at = Instant::now() + Duration::from_secs(60);
    let edge = stack.edge.channel()?;
    let keeper = tokio::spawn(async move {
        let mut failures = 0;
        while Instant::now() < stop_at {
            let requests = tokio_stream::iter([LeaseKeepAliveRequest { id: kept }]);
            let answered = async {
                let mut answers = LeaseClient::new(edge.clone())
                    .lease_keep_alive(requests)
                    .await?
                    .into_inner();
                answers.message().await
            };
            match tokio::time::timeout(Duration::from_secs(1), answered).await {
                Ok(Ok(Some(answer))) if answer.ttl == 4 => {
                    tokio::time::sleep(Duration::from_millis(1300)).await
                }
                _ => {
                    // An etcd client retries at once on another stream.
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        failures
    });

    let mut abandoned_gone = None;
    for round in 0..2 {
        let killed = stack.kill_holder().await?;
        let started = Instant::now();
        // Long enough for the abandoned lease to expire under the first
        // successor: its bound covers one takeover, not two.
        while started.elapsed() < Duration::from_secs(7) {
            ensure!(
                stack.exists("kept").await?,
                "the kept lease expired (round {round})"
            );
            if abandoned_gone.is_none() && !stack.exists("abandoned").await? {
                abandoned_gone = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stack.leases[killed].start()?;
        // The next kill comes well inside the 60 s.
        tokio::time::sleep(Duration::from_secs(8)).await;
        ensure!(
            stack.exists("kept").await?,
            "the kept lease expired (round {round})"
        );
    }
    while Instant::now() < stop_at {
        ensure!(
            stack.exists("kept").await?,
            "the kept lease expired after the takeovers"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let failures = keeper.await?;
    ensure!(stack.exists("kept").await?, "the kept lease expired");
    let abandoned_gone = match abandoned_gone {
        Some(at) => at,
        None => stack.gone_at("abandoned", Duration::from_secs(10)).await?,
    };
    let lived = abandoned_gone.duration_since(abandoned_at);
    let bound = Duration::from_millis(4000 + CHECKPOINT_MS + TAKEOVER_MS + 1500);
    ensure!(
        lived >= Duration::from_secs(4),
        "the abandoned lease expired early: {lived:?}"
    );
    ensure!(
        lived <= bound,
        "the abandoned lease lived {lived:?}, over {bound:?}\n{}\n{}",
        stack.leases[0].output_tail(15),
        stack.leases[1].output_tail(15)
    );
    println!("kept alive across two takeovers ({failures} keep-alives retried); abandoned lease lived {lived:?}");

    // Both instances down, one back: nothing expires early.
    let last = stack.grant(6).await?;
    stack.put("survivor", last).await?;
    ensure!(stack.keep_alive(last).await? == 6);
    let renewed = Instant::now();
    for instance in &mut stack.leases {
        if instance.is_running() {
            instance.kill().await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.leases[0].start()?;
    stack.holder(Duration::from_secs(20)).await?;
    while renewed.elapsed() < Duration::from_millis(5800) {
        ensure!(
            stack.exists("survivor").await?,
            "expired {:?} after its keep-alive, TTL 6 s",
            renewed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = stack.gone_at("survivor", Duration::from_secs(15)).await?;
    println!(
        "after both instances died, a 6 s lease expired {:?} after its keep-alive",
        gone.duration_since(renewed)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_leases_kept_alive_by_ten_streams_then_all_expire() -> Result<()> {
    const LEASES: usize = 10_000;
    const STREAMS: usize = 10;
    const GRANTERS_PER_STREAM: usize = 5;
    const TTL: i64 = 10;
    let stack = Stack::start(StackOptions::default()).await?;
    let started = Instant::now();
    // Keep-alives run from the start; this is when the two minutes begin.
    let all_granted = Arc::new(tokio::sync::Barrier::new(STREAMS + 1));
    let stop_at = Arc::new(Mutex::new(None::<Instant>));

    let mut streams = Vec::new();
    for stream in 0..STREAMS {
        let channel = stack.edge.channel()?;
        let all_granted = all_granted.clone();
        let stop_at = stop_at.clone();
        streams.push(tokio::spawn(async move {
            // Grant this stream's share, each lease with a key, a few at a time.
            let granted = Arc::new(Mutex::new(Vec::new()));
            let mut granters = Vec::new();
            for granter in 0..GRANTERS_PER_STREAM {
                let channel = channel.clone();
                let granted = granted.clone();
                granters.push(tokio::spawn(async move {
                    let mut lease = LeaseClient::new(channel.clone());
                    let mut kv = KvClient::new(channel);
                    let per_granter = LEASES / STREAMS / GRANTERS_PER_STREAM;
                    for number in 0..per_granter {
                        let id = lease
                            .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
                            .await?
                            .into_inner()
                            .id;
                        kv.put(PutRequest {
                            key: format!("many/{stream:02}/{granter}/{number:04}").into_bytes(),
                            value: b"v".to_vec(),
                            lease: id,
                            ..Default::default()
                        })
                        .await?;
                        granted
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .push(id);
                    }
                    anyhow::Ok(())
                }));
            }
            let (requests, queued) = tokio::sync::mpsc::channel(LEASES);
            let mut answers = LeaseClient::new(channel)
                .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(queued))
                .await?
                .into_inner();
            let reader = tokio::spawn(async move {
                let (mut answered, mut lost) = (0_u64, 0_u64);
                while let Ok(Some(answer)) = answers.message().await {
                    if answer.ttl > 0 {
                        answered += 1;
                    } else {
                        lost += 1;
                    }
                }
                (answered, lost)
            });
            let mut granting = Some(granters);
            loop {
                let round = Instant::now();
                let share: Vec<i64> = granted
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .clone();
                for id in share {
                    requests.send(LeaseKeepAliveRequest { id }).await?;
                }
                if let Some(granters) = granting.take() {
                    if granters.iter().all(tokio::task::JoinHandle::is_finished) {
                        for granter in granters {
                            granter.await??;
                        }
                        all_granted.wait().await;
                    } else {
                        granting = Some(granters);
                    }
                }
                let stop = *stop_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                if stop.is_some_and(|stop| Instant::now() >= stop) {
                    break;
                }
                // Every TTL/3, as etcd's clients renew.
                tokio::time::sleep_until((round + Duration::from_millis(3300)).into()).await;
            }
            drop(requests);
            let (answered, lost) = reader.await?;
            anyhow::Ok((answered, lost, Instant::now()))
        }));
    }
    all_granted.wait().await;
    println!(
        "{LEASES} leases granted with keys in {:?}",
        started.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(120);
    *stop_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(until);

    let kv = stack.edge.kv()?;
    let count = |mut kv: KvClient<Channel>| async move {
        let counted = kv
            .range(RangeRequest {
                key: b"many/".to_vec(),
                range_end: b"many0".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::Ok(counted.count)
    };
    while Instant::now() < until {
        let alive = count(kv.clone()).await?;
        ensure!(
            alive == LEASES as i64,
            "only {alive} of {LEASES} keys left while kept alive"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let mut answered = 0;
    let mut last_sent = started;
    for stream in streams {
        let (stream_answered, lost, ended) = stream.await??;
        ensure!(lost == 0, "{lost} keep-alives found their lease gone");
        answered += stream_answered;
        last_sent = last_sent.max(ended);
    }
    println!("{answered} keep-alives answered");

    // Left alone, every lease expires within TTL + 2 s of its last keep-alive.
    let bound = Duration::from_secs(TTL as u64 + 2);
    loop {
        let alive = count(kv.clone()).await?;
        if alive == 0 {
            break;
        }
        ensure!(
            last_sent.elapsed() <= bound,
            "{alive} keys still there {:?} after the last keep-alive",
            last_sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "all {LEASES} leases expired {:?} after the last keep-alive",
        last_sent.elapsed()
    );
    Ok(())
}

/// The holder's claim epoch as the replicas know it.
async fn claim_epoch(stack: &Stack) -> Result<u64> {
    let state = stack.replicas[0]
        .mvcc()?
        .leases(cairn_proto::cairn::mvcc::v1::LeasesRequest {})
        .await?
        .into_inner();
    Ok(state.holder.context("a claim is in force")?.epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_holder_keeps_its_claim_and_both_instances_agree() -> Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let epoch = claim_epoch(&stack).await?;

    // With no lease at all, the holder's empty checkpoints still show it
    // lives: the standby must not take over.
    tokio::time::sleep(Duration::from_millis(3 * TAKEOVER_MS)).await;
    let after = claim_epoch(&stack).await?;
    ensure!(
        after == epoch,
        "an idle holder lost its claim: epoch {epoch} -> {after}"
    );

    // Calls spread over both instances see one lease table.
    let id = stack.grant(30).await?;
    for round in 0..10 {
        let ttl = stack.keep_alive(id).await?;
        ensure!(ttl == 30, "keep-alive {round} answered TTL {ttl}");
    }
    Ok(())
}

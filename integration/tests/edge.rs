//! cairn-edge as a real process in front of two real mvcc replicas, a
//! three-node log and NATS: etcd's KV, Cluster and Maintenance through one
//! address, a replica killed under load, then the last one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cairn_integration::edge::{Backends, Edge};
use cairn_integration::log_cluster::{LogCluster, LogClusterOptions};
use cairn_integration::mvcc_cluster::{start_replicas, NatsServer};
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, DefragmentRequest, DeleteRangeRequest,
    HashKvRequest, MemberListRequest, MoveLeaderRequest, PutRequest, RangeRequest, SnapshotRequest,
    StatusRequest,
};
use parking_lot_free::Outcomes;
use sha2::Digest;
use tonic::Code;

const CLIENTS: usize = 8;

mod parking_lot_free {
    //! What the clients record: the last value acknowledged per key, and each
    //! failure with its time.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

    #[derive(Default)]
    pub(crate) struct Outcomes {
        pub acked: Mutex<HashMap<String, String>>,
        pub failures: Mutex<Vec<(Instant, tonic::Code, String)>>,
        pub ops_after: Mutex<usize>,
    }

    impl Outcomes {
        pub(crate) fn ack(&self, key: &str, value: &str) {
            if let Ok(mut acked) = self.acked.lock() {
                acked.insert(key.to_owned(), value.to_owned());
            }
        }

        pub(crate) fn fail(&self, status: &tonic::Status) {
            if let Ok(mut failures) = self.failures.lock() {
                failures.push((Instant::now(), status.code(), status.message().to_owned()));
            }
        }

        pub(crate) fn count_after(&self) {
            if let Ok(mut ops) = self.ops_after.lock() {
                *ops += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_etcd_and_outlives_a_replica_then_fails_fast_without_one() -> Result<()> {
    let cluster = LogCluster::start(LogClusterOptions::default()).await?;
    let outcome = serve_and_outlive_a_replica(&cluster).await;
    cluster.explain(outcome)
}

async fn serve_and_outlive_a_replica(cluster: &LogCluster) -> Result<()> {
    let log_endpoints: Vec<String> = cluster.addrs()?;
    let nats = NatsServer::start(cluster.dir()).await?;
    let mut replicas = start_replicas(
        cluster.dir(),
        &["mvcc-1", "mvcc-2"],
        &log_endpoints,
        &nats.url,
        "",
    )
    .await?;
    let replica_addrs: Vec<String> = replicas
        .iter()
        .map(|replica| replica.addr.clone())
        .collect();
    let mut edge = Edge::configure(
        cluster.dir(),
        &Backends {
            mvcc: replica_addrs.clone(),
            log: log_endpoints.clone(),
            ..Default::default()
        },
        "",
    )?;
    edge.start().await?;
    let edge_url = format!("http://{}", edge.addr);

    // etcd's KV through the edge.
    let mut kv = edge.kv()?;
    let put = kv
        .put(PutRequest {
            key: b"first".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .context("the first put")?
        .into_inner();
    ensure!(
        put.header.map(|header| header.revision) == Some(2),
        "{put:?}"
    );
    let got = kv
        .range(RangeRequest {
            key: b"first".to_vec(),
            ..Default::default()
        })
        .await
        .context("reading the first put")?
        .into_inner();
    ensure!(got.kvs.len() == 1 && got.kvs[0].value == b"v", "{got:?}");

    // Cluster: the log's members, each reachable only through the edge.
    let members = ClusterClient::new(edge.channel()?)
        .member_list(MemberListRequest::default())
        .await
        .context("member list")?
        .into_inner()
        .members;
    ensure!(members.len() == 3, "{members:?}");
    for member in &members {
        ensure!(member.client_ur_ls == vec![edge_url.clone()], "{member:?}");
    }

    // Maintenance: raft facts from the log, sizes and hashes from a replica.
    let mut maintenance = MaintenanceClient::new(edge.channel()?);
    let status = maintenance
        .status(StatusRequest {})
        .await
        .context("status")?
        .into_inner();
    ensure!(
        status.leader != 0 && status.raft_index > 0 && status.db_size > 0,
        "{status:?}"
    );
    ensure!(status.header.map(|header| header.revision) == Some(2));
    let hashed = maintenance
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .context("hash kv")?
        .into_inner();
    let direct = replicas[0].hash_kv(0).await?;
    ensure!(hashed.hash == direct.hash, "{hashed:?} vs {direct:?}");

    // MoveLeader hands the log's leadership to another voter; a stranger is
    // refused as etcd refuses it.
    let leader = status.leader;
    let target = members
        .iter()
        .map(|member| member.id)
        .find(|id| *id != leader)
        .context("another member")?;
    let moving = Instant::now();
    maintenance
        .move_leader(MoveLeaderRequest { target_id: target })
        .await
        .context("move leader")?;
    println!("leadership moved in {:?}", moving.elapsed());
    let moved = maintenance
        .status(StatusRequest {})
        .await
        .context("status after moving the leader")?
        .into_inner();
    ensure!(
        moved.leader == target,
        "leader {} after moving it to {target}",
        moved.leader
    );
    let stranger = maintenance
        .move_leader(MoveLeaderRequest { target_id: 999 })
        .await
        .err()
        .context("leadership moved to a stranger")?;
    ensure!(
        stranger.code() == Code::FailedPrecondition
            && stranger.message() == "etcdserver: bad leader transferee",
        "{stranger:?}"
    );

    // A snapshot streams a replica's store as an etcd bbolt file: whole
    // 4096-byte pages (the first a meta page with bbolt's magic), then
    // their SHA-256, as etcdctl expects.
    let mut chunks = maintenance
        .snapshot(SnapshotRequest {})
        .await
        .context("snapshot")?
        .into_inner();
    let mut snapshot = Vec::new();
    let mut announced = None;
    while let Some(chunk) = chunks.message().await.context("a snapshot chunk")? {
        announced.get_or_insert(chunk.remaining_bytes + chunk.blob.len() as u64);
        snapshot.extend_from_slice(&chunk.blob);
    }
    ensure!(
        announced == Some(snapshot.len() as u64),
        "{announced:?} vs {}",
        snapshot.len()
    );
    ensure!(snapshot.get(16..20) == Some(&0xED0C_DAED_u32.to_le_bytes()[..]));
    ensure!(snapshot.len() % 4096 == 32);
    let (body, digest) = snapshot.split_at(snapshot.len() - 32);
    ensure!(
        sha2::Sha256::digest(body).as_slice() == digest,
        "the snapshot's SHA-256 is wrong"
    );

    // Load through the edge; one replica is killed in the middle.
    let outcomes = Arc::new(Outcomes::default());
    let kill_at = Instant::now() + Duration::from_secs(2);
    let stop_at = kill_at + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let mut kv = edge.kv()?;
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            let mut op = 0_usize;
            while Instant::now() < stop_at {
                let key = format!("load-{client}-{}", op % 16);
                let value = format!("{op}");
                let after_kill = Instant::now() > kill_at;
                let answer = if op % 3 == 2 {
                    kv.range(RangeRequest {
                        key: key.clone().into_bytes(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                } else {
                    kv.put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: value.clone().into_bytes(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| outcomes.ack(&key, &value))
                };
                match answer {
                    Ok(()) if after_kill => outcomes.count_after(),
                    Ok(()) => {}
                    Err(status) => outcomes.fail(&status),
                }
                op += 1;
            }
        }));
    }
    tokio::time::sleep_until(kill_at.into()).await;
    replicas[0].kill().await?;
    let killed = Instant::now();
    for task in tasks {
        task.await?;
    }
    let failures = outcomes
        .failures
        .lock()
        .map(|failures| failures.clone())
        .unwrap_or_default();
    for (at, code, message) in &failures {
        ensure!(
            *code == Code::Unavailable
                && *at
                    >= killed
                        .checked_sub(Duration::from_millis(100))
                        .unwrap_or(killed),
            "a failure that the kill does not explain: {code:?} {message}"
        );
        ensure!(
            at.duration_since(killed) < Duration::from_millis(1500),
            "still failing {:?} after the kill: {message}",
            at.duration_since(killed)
        );
    }
    let served_after = outcomes.ops_after.lock().map(|ops| *ops).unwrap_or(0);
    ensure!(
        served_after > 100,
        "only {served_after} calls served after the kill"
    );
    println!(
        "{served_after} calls served after the kill, {} failed around it",
        failures.len()
    );

    // Every acknowledged put is there, read through the edge.
    let acked: HashMap<String, String> = outcomes
        .acked
        .lock()
        .map(|acked| acked.clone())
        .unwrap_or_default();
    for (key, value) in &acked {
        let got = kv
            .range(RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("reading back {key}"))?
            .into_inner();
        let seen = got
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        ensure!(
            seen.as_deref() == Some(value.as_str()),
            "{key}: acknowledged {value}, read {seen:?}"
        );
    }

    // With no replica left, the edge answers UNAVAILABLE at once.
    replicas[1].kill().await?;
    let asked = Instant::now();
    let mut request = tonic::Request::new(RangeRequest {
        key: b"first".to_vec(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(20));
    let refused = kv
        .range(request)
        .await
        .err()
        .context("a read with no replica succeeded")?;
    let waited = asked.elapsed();
    ensure!(refused.code() == Code::Unavailable, "{refused:?}");
    ensure!(
        waited < Duration::from_secs(2),
        "UNAVAILABLE took {waited:?}"
    );
    println!("no replica: {:?} after {waited:?}", refused.message());
    drop(edge);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_quota_a_replica_raises_nospace_until_space_is_freed_and_disarmed() -> Result<()> {
    const QUOTA: u64 = 512 * 1024;
    let cluster = LogCluster::start(LogClusterOptions::default()).await?;
    let log_endpoints: Vec<String> = cluster.addrs()?;
    let nats = NatsServer::start(cluster.dir()).await?;
    let replicas = start_replicas(
        cluster.dir(),
        &["mvcc-1"],
        &log_endpoints,
        &nats.url,
        &format!("[limits]\nquota_backend_bytes = {QUOTA}\n"),
    )
    .await?;
    let replica = &replicas[0];
    let mut edge = Edge::configure(
        cluster.dir(),
        &Backends {
            mvcc: vec![replica.addr.clone()],
            log: log_endpoints,
            ..Default::default()
        },
        "",
    )?;
    edge.start().await?;
    let mut kv = edge.kv()?;
    let mut maintenance = MaintenanceClient::new(edge.channel()?);

    // Fill past the quota until etcd's NOSPACE error comes back.
    let value = vec![b'x'; 64 * 1024];
    let mut refused = None;
    for number in 0..200 {
        let put = kv
            .put(PutRequest {
                key: format!("big/{number:03}").into_bytes(),
                value: value.clone(),
                ..Default::default()
            })
            .await;
        if let Err(status) = put {
            refused = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.context("200 puts of 64 KiB under a 512 KiB quota all succeeded")?;
    ensure!(
        refused.code() == Code::ResourceExhausted
            && refused.message() == "etcdserver: mvcc: database space exceeded",
        "{refused:?}"
    );
    let alarms = maintenance
        .alarm(AlarmRequest::default())
        .await?
        .into_inner()
        .alarms;
    ensure!(
        alarms.len() == 1 && alarms[0].alarm == AlarmType::Nospace as i32,
        "{alarms:?}"
    );
    let status = maintenance.status(StatusRequest {}).await?.into_inner();
    ensure!(
        status.errors.len() == 1 && status.errors[0].contains("alarm:NOSPACE"),
        "{status:?}"
    );

    // Reads, deletes, compaction and defragmentation still work and free it.
    let deleted = kv
        .delete_range(DeleteRangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let revision = deleted.header.map_or(0, |header| header.revision);
    kv.compact(CompactionRequest {
        revision,
        physical: true,
    })
    .await?;
    let defragmented = maintenance
        .defragment(DefragmentRequest {})
        .await?
        .into_inner();
    ensure!(
        defragmented.header.is_none(),
        "etcd's DefragmentResponse has no header: {defragmented:?}"
    );
    let freed = maintenance.status(StatusRequest {}).await?.into_inner();
    ensure!(
        u64::try_from(freed.db_size).unwrap_or(u64::MAX) < QUOTA,
        "{} bytes after deleting, compacting and defragmenting",
        freed.db_size
    );
    maintenance
        .alarm(AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: alarms[0].member_id,
            alarm: AlarmType::Nospace as i32,
        })
        .await?;
    kv.put(PutRequest {
        key: b"small".to_vec(),
        value: b"fits".to_vec(),
        ..Default::default()
    })
    .await?;
    println!(
        "NOSPACE at {} bytes; {} bytes after freeing",
        status.db_size, freed.db_size
    );
    Ok(())
}

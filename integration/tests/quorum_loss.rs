//! What a client hears from a replica when the log loses its quorum: etcd's
//! "no leader" (UNAVAILABLE) for a write the log never took, and etcd's
//! "request timed out" only for one it took and could not commit, whose
//! outcome is unknown.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use cairn_integration::log_cluster::{LogCluster, LogClusterOptions};
use cairn_integration::mvcc_cluster::{start_replicas, NatsServer};
use cairn_integration::{eventually, with_process_output};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::PutRequest;
use tonic::transport::Channel;
use tonic::{Code, Status};

async fn put(kv: &KvClient<Channel>, key: &str) -> Result<(), Status> {
    let mut kv = kv.clone();
    let mut request = tonic::Request::new(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(20));
    kv.put(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_a_put_hears_no_leader_and_only_one_the_log_took_times_out() -> Result<()>
{
    let cluster = LogCluster::start(LogClusterOptions::default()).await?;
    let dir = cluster.dir().to_owned();
    let outcome = async {
        let nats = NatsServer::start(cluster.dir()).await?;
        let replicas =
            start_replicas(cluster.dir(), &["mvcc-1"], &cluster.addrs()?, &nats.url, "").await?;
        let kv = replicas[0].kv()?;
        put(&kv, "before")
            .await
            .context("a put with every node up")?;

        let ids = cluster.ids();
        let leader = cluster
            .wait_for_leader(&ids, Duration::from_secs(20))
            .await?;
        let followers: Vec<u64> = ids.into_iter().filter(|id| *id != leader).collect();
        for follower in &followers {
            cluster.pause(*follower)?;
        }

        // The leader has just heard from its quorum, so it takes this one,
        // cannot commit it, and the replica cannot say whether it happened.
        let taken = put(&kv, "taken")
            .await
            .err()
            .context("a put without a quorum succeeded")?;
        ensure!(
            taken.code() == Code::Unavailable && taken.message() == "etcdserver: request timed out",
            "a put the leader took: {taken:?}"
        );

        // Two election timeouts later the leader knows its quorum is gone and
        // takes nothing: the replica hears that at once and says no leader.
        let refused = eventually(Duration::from_secs(10), "a put refused at once", || {
            let kv = kv.clone();
            async move {
                let started = Instant::now();
                let status = put(&kv, "refused").await.err()?;
                (started.elapsed() < Duration::from_secs(2)).then_some(status)
            }
        })
        .await?;
        ensure!(
            refused.code() == Code::Unavailable && refused.message() == "etcdserver: no leader",
            "a put the leader refused: {refused:?}"
        );

        for follower in &followers {
            cluster.resume(*follower)?;
        }
        eventually(
            Duration::from_secs(30),
            "a put once the quorum is back",
            || {
                let kv = kv.clone();
                async move { put(&kv, "after").await.ok() }
            },
        )
        .await?;
        Ok(())
    }
    .await;
    with_process_output(&dir, outcome)
}

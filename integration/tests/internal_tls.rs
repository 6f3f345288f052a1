//! TLS among cairn's own services (`internal_tls`): a whole cairn whose every
//! process holds a certificate from one CA serves puts, reads, a watch and a
//! lease through its edge, while a log node and a replica refuse a caller
//! with no certificate or one from another CA. Its own test binary, since
//! the harness's internal certificate is for the whole test process.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn_integration::certs::Authority;
use cairn_integration::stack::{Stack, StackOptions};
use cairn_integration::{channel, use_internal_tls, with_process_output, InternalTlsFiles};
use cairn_proto::cairn::log::v1::log_client::LogClient;
use cairn_proto::cairn::log::v1::StatusRequest;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};
use tonic::transport::{Channel, Endpoint};

/// A channel to `addr` over TLS with `cert` and `key`, trusting `ca`.
fn tls_channel(addr: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Channel> {
    let tls = cairn_kit::tls::client_config(ca, Some((cert, key)))?;
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// Whether a Status call to the log node at `addr` over `channel` is answered.
async fn log_answers(channel: Channel) -> bool {
    let mut request = tonic::Request::new(StatusRequest {});
    request.set_timeout(Duration::from_secs(3));
    LogClient::new(channel).status(request).await.is_ok()
}

/// Whether a Range on the replica over `channel` is answered.
async fn replica_answers(channel: Channel) -> bool {
    let mut request = tonic::Request::new(RangeRequest {
        key: b"inside".to_vec(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(3));
    KvClient::new(channel).range(request).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_speak_tls_among_themselves_and_refuse_strangers() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let ca = Authority::new(certs.path(), "cairn-internal-ca")?;
    let member = ca.peer("cairn-member")?;
    let stranger_ca = Authority::new(certs.path(), "stranger-ca")?;
    let stranger = stranger_ca.peer("stranger")?;
    use_internal_tls(InternalTlsFiles {
        cert: member.cert.clone(),
        key: member.key.clone(),
        ca: ca.cert.clone(),
    })?;
    let stack = Stack::start(StackOptions::default()).await?;
    let dir = stack.cluster.dir().to_owned();
    let outcome = async {
        // Clients reach the edge as before; everything behind it is TLS.
        let edge = stack.edge.channel()?;
        let mut watch = WatchClient::new(edge.clone());
        let (requests, queued) = tokio::sync::mpsc::channel(4);
        requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: b"inside".to_vec(),
                    ..Default::default()
                })),
            })
            .await?;
        let mut events = watch
            .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
            .await?
            .into_inner();
        let created = events.message().await?.context("no created response")?;
        ensure!(created.created, "the watch was not created: {created:?}");

        let lease = stack.grant(30).await?;
        let revision = stack.put("inside", lease).await?;
        let mut kv = KvClient::new(edge);
        let read = kv
            .range(RangeRequest {
                key: b"inside".to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(
            read.kvs.first().map(|kv| kv.mod_revision) == Some(revision),
            "the read missed the put at {revision}: {read:?}"
        );
        kv.put(PutRequest {
            key: b"inside".to_vec(),
            value: b"again".to_vec(),
            ..Default::default()
        })
        .await?;
        let event = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let response = events.message().await?.context("the watch ended")?;
                if !response.events.is_empty() {
                    return anyhow::Ok(response);
                }
            }
        })
        .await
        .context("no watch event within 10 s")??;
        ensure!(
            event.events[0].kv.as_ref().map(|kv| kv.mod_revision) == Some(revision),
            "the watch's first event is not the put at {revision}: {event:?}"
        );

        // A log node and a replica take the internal certificate only.
        let log = stack.cluster.addrs()?[0].clone();
        let replica = stack.replicas[0].addr.clone();
        ensure!(
            log_answers(tls_channel(&log, &ca.cert, &member.cert, &member.key)?).await,
            "the log node refused a member"
        );
        ensure!(
            replica_answers(tls_channel(&replica, &ca.cert, &member.cert, &member.key)?).await,
            "the replica refused a member"
        );
        ensure!(
            !log_answers(channel(&log)?).await,
            "the log node answered plaintext"
        );
        ensure!(
            !replica_answers(channel(&replica)?).await,
            "the replica answered plaintext"
        );
        let strangers = (
            tls_channel(&log, &ca.cert, &stranger.cert, &stranger.key)?,
            tls_channel(&replica, &ca.cert, &stranger.cert, &stranger.key)?,
        );
        ensure!(
            !log_answers(strangers.0).await,
            "the log node answered a stranger"
        );
        ensure!(
            !replica_answers(strangers.1).await,
            "the replica answered a stranger"
        );
        Ok(())
    };
    with_process_output(&dir, outcome.await)
}

//! The rest of etcd's watch surface through the edge and a real gateway:
//! client-chosen and assigned watch IDs, progress_notify, RequestProgress,
//! fragments of a revision too large for one response, cancel, the
//! revisions a watcher catches up on arriving together, and a stream whose
//! client stopped sending.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    PutRequest, RequestOp, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tonic::Streaming;

fn create(
    key: &str,
    range_end: &str,
    watch_id: i64,
    progress_notify: bool,
    fragment: bool,
) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            range_end: range_end.as_bytes().to_vec(),
            watch_id,
            progress_notify,
            fragment,
            ..Default::default()
        })),
    }
}

async fn next(answers: &mut Streaming<WatchResponse>) -> Result<WatchResponse> {
    tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .context("no watch response within 10 s")??
        .context("the watch stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ids_progress_fragments_and_cancel_behave_as_etcd() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(120), watch_features())
        .await
        .context("the watch feature walk took over two minutes")?
}

async fn watch_features() -> Result<()> {
    let stack = Stack::start(StackOptions {
        watch_gateways: 1,
        watch_node: "progress_interval_ms = 300".to_owned(),
        ..Default::default()
    })
    .await?;
    let mut kv = stack.edge.kv()?;
    let revision = kv
        .put(PutRequest {
            key: b"before".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .map_or(0, |header| header.revision);

    let (requests, queued) = mpsc::channel(16);
    requests
        .send(create("quiet/", "quiet0", 0, true, false))
        .await?;
    requests
        .send(create("big/", "big0", 42, false, true))
        .await?;
    requests.send(create("other", "", 0, false, false)).await?;
    let mut answers = WatchClient::new(stack.edge.channel()?)
        .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await?
        .into_inner();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let answer = next(&mut answers).await?;
        ensure!(answer.created, "{answer:?}");
        ensure!(
            answer.header.as_ref().map(|header| header.revision) == Some(revision),
            "created at {answer:?}, store at {revision}"
        );
        ids.push(answer.watch_id);
    }
    ensure!(ids[1] == 42, "the chosen ID was not kept: {ids:?}");
    ensure!(
        ids[0] != ids[2] && !ids[1..].contains(&ids[0]),
        "assigned IDs clash: {ids:?}"
    );
    let quiet = ids[0];

    // A quiet progress_notify watcher hears the revision it is at.
    let notified = next(&mut answers).await?;
    ensure!(
        notified.watch_id == quiet
            && notified.events.is_empty()
            && notified.header.as_ref().map(|header| header.revision) == Some(revision),
        "{notified:?}"
    );

    // One revision above 1 MiB reaches a watcher that allows fragments in
    // pieces, the last one unmarked.
    let value = vec![b'x'; 450 * 1024];
    let success = (0..3)
        .map(|number| RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: format!("big/{number}").into_bytes(),
                value: value.clone(),
                ..Default::default()
            })),
        })
        .collect();
    println!("created {ids:?}, progress notified; writing a 1.35 MB revision");
    let big = kv
        .txn(TxnRequest {
            success,
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .map_or(0, |header| header.revision);
    println!("written at {big}");
    let mut pieces = Vec::new();
    loop {
        let answer = next(&mut answers).await?;
        if answer.watch_id != 42 {
            continue;
        }
        let last = !answer.fragment;
        pieces.push(answer);
        if last {
            break;
        }
    }
    let events: usize = pieces.iter().map(|piece| piece.events.len()).sum();
    ensure!(
        pieces.len() > 1 && events == 3,
        "{} pieces with {events} events",
        pieces.len()
    );
    ensure!(pieces
        .iter()
        .flat_map(|piece| &piece.events)
        .all(|event| event.kv.as_ref().map(|kv| kv.mod_revision) == Some(big)));

    // RequestProgress: never ahead of what was delivered.
    requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        })
        .await?;
    let progress = loop {
        let answer = next(&mut answers).await?;
        if answer.watch_id == -1 {
            break answer;
        }
    };
    ensure!(
        progress.header.as_ref().map(|header| header.revision) == Some(big),
        "{progress:?}"
    );

    // Cancel: acknowledged, then nothing more for that watcher.
    requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: 42,
            })),
        })
        .await?;
    let cancelled = loop {
        let answer = next(&mut answers).await?;
        if answer.canceled {
            break answer;
        }
    };
    ensure!(cancelled.watch_id == 42, "{cancelled:?}");
    kv.put(PutRequest {
        key: b"big/after".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await?;
    kv.put(PutRequest {
        key: b"other".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await?;
    loop {
        let answer = next(&mut answers).await?;
        ensure!(
            answer.watch_id != 42 || answer.events.is_empty(),
            "a cancelled watcher got {answer:?}"
        );
        if answer.watch_id == ids[2] && !answer.events.is_empty() {
            break;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_from_a_past_revision_gets_the_revisions_since_in_one_response() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(120), caught_up_in_one_response())
        .await
        .context("the catch-up took over two minutes")?
}

async fn caught_up_in_one_response() -> Result<()> {
    let stack = Stack::start(StackOptions {
        watch_gateways: 1,
        ..Default::default()
    })
    .await?;
    let mut kv = stack.edge.kv()?;
    let mut revisions = Vec::new();
    for index in 0..5 {
        let put = kv
            .put(PutRequest {
                key: format!("past/{index}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        revisions.push(put.header.map_or(0, |header| header.revision));
    }

    let (requests, queued) = mpsc::channel(4);
    requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"past/".to_vec(),
                range_end: b"past0".to_vec(),
                start_revision: revisions[0],
                ..Default::default()
            })),
        })
        .await?;
    let mut answers = WatchClient::new(stack.edge.channel()?)
        .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await?
        .into_inner();
    let created = next(&mut answers).await?;
    ensure!(created.created, "{created:?}");
    // As etcd (and python-etcd3's test_watch_responses) has it: the five
    // revisions since the start come together.
    let caught_up = next(&mut answers).await?;
    let seen: Vec<i64> = caught_up
        .events
        .iter()
        .filter_map(|event| event.kv.as_ref().map(|kv| kv.mod_revision))
        .collect();
    ensure!(
        seen == revisions,
        "one response held {seen:?}, not {revisions:?}"
    );
    ensure!(
        caught_up.header.as_ref().map(|header| header.revision) == revisions.last().copied(),
        "{caught_up:?}"
    );
    drop(requests);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_keeps_its_watchers_as_with_etcd() -> Result<()> {
    let stack = Stack::start(StackOptions {
        watch_gateways: 1,
        ..Default::default()
    })
    .await?;
    let (requests, queued) = mpsc::channel(1);
    requests.send(create("half", "", 0, false, false)).await?;
    let mut answers = WatchClient::new(stack.edge.channel()?)
        .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await?
        .into_inner();
    ensure!(next(&mut answers).await?.created);
    // The request side ends: etcd keeps serving the stream's watchers.
    drop(requests);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack
        .edge
        .kv()?
        .put(PutRequest {
            key: b"half".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await?;
    let event = next(&mut answers).await?;
    ensure!(
        event
            .events
            .first()
            .and_then(|event| event.kv.as_ref())
            .is_some_and(|kv| kv.key == b"half"),
        "{event:?}"
    );
    Ok(())
}

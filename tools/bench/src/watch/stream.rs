//! Watch streams as every watch measurement opens them: many watchers on one
//! stream, on a connection of its own, handed over only once the server has
//! created every one, so what is measured afterwards never races creation.

use std::ops::Range;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::drive::connect;

/// One watch stream with all its watchers created. Dropping it closes the
/// stream, and with it every watcher on it.
pub(crate) struct OpenStream {
    /// Kept so the stream stays open: the server ends it when requests end.
    _requests: mpsc::Sender<WatchRequest>,
    pub answers: Streaming<WatchResponse>,
}

/// Opens a stream on a connection of its own, asks for every watcher in
/// `creates`, and returns once the server has created them all.
pub(crate) async fn open_stream(
    endpoint: String,
    creates: Vec<WatchCreateRequest>,
) -> anyhow::Result<OpenStream> {
    let watchers = creates.len();
    let (requests, queued) = mpsc::channel(watchers + 1);
    for create in creates {
        requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .await?;
    }
    let mut answers = WatchClient::new(connect(&endpoint).await?)
        .watch(ReceiverStream::new(queued))
        .await?
        .into_inner();
    let mut created = 0;
    while created < watchers {
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("a watch stream ended after {created} watchers"))?;
        anyhow::ensure!(!answer.canceled, "a watcher was refused: {answer:?}");
        created += usize::from(answer.created);
    }
    Ok(OpenStream {
        _requests: requests,
        answers,
    })
}

/// Watchers `0..watchers` spread over `streams` streams as evenly as they
/// go, in order: each stream's watcher numbers.
pub(crate) fn shares(watchers: u64, streams: u64) -> Vec<Range<u64>> {
    let streams = streams.min(watchers);
    let mut first = 0;
    (0..streams)
        .map(|stream| {
            let count = watchers / streams + u64::from(stream < watchers % streams);
            let share = first..first + count;
            first = share.end;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_watcher_once_and_differ_by_one_at_most() {
        let split = shares(10_007, 100);
        assert_eq!(split.len(), 100);
        assert_eq!(split.first().map(|share| share.start), Some(0));
        assert_eq!(split.last().map(|share| share.end), Some(10_007));
        assert!(split.windows(2).all(|pair| pair[0].end == pair[1].start));
        let sizes: Vec<u64> = split.iter().map(|share| share.end - share.start).collect();
        assert!(sizes.iter().all(|size| *size == 100 || *size == 101));
        assert_eq!(shares(3, 100), vec![0..1, 1..2, 2..3]);
        assert!(shares(0, 100).is_empty());
    }
}

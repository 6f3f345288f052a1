//! Watchers each on a key of its own: the put-to-event latency at a fixed
//! put rate, measured as the fan-out measures it, and what holding the
//! watchers costs the puts: closed-loop puts to the watched keys while every
//! watcher is open and reading, then the same puts once they are closed.

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::PutRequest;
use tokio::task::JoinHandle;

use super::fan_out::{FanOut, FanOutPlan, Layout, Watched, Watchers};
use crate::drive::{drive, Load, Measured, Outcome};
use crate::kv::client_key_number;
use crate::report::Summary;

/// What one run on watchers' own keys measured.
pub(crate) struct OwnKeys {
    /// Put-to-event latencies at the plan's rate.
    pub events: FanOut,
    pub puts: PutThroughput,
}

/// Closed-loop put throughput to the watched keys, with and without the
/// watchers: what holding them costs the puts.
pub(crate) struct PutThroughput {
    /// With every watcher open and reading.
    pub with_watchers: Summary,
    /// The same puts once the watchers are closed.
    pub without_watchers: Summary,
}

impl PutThroughput {
    /// Put throughput with the watchers over without: 1 when holding them
    /// costs the puts nothing.
    pub(crate) fn with_over_without(&self) -> Option<f64> {
        let without = self.without_watchers.per_second;
        (without > 0.0).then(|| self.with_watchers.per_second / without)
    }
}

/// Tasks that go on taking events off a run's streams, as live watchers
/// would, so the server is never held back by a client that stopped reading.
struct Reading(Vec<JoinHandle<()>>);

impl Reading {
    /// Starts a reader on every one of the watchers' streams.
    fn start(watchers: Watchers) -> Self {
        let tasks = watchers
            .into_streams()
            .into_iter()
            .map(|mut stream| {
                tokio::spawn(
                    async move { while let Ok(Some(_)) = stream.answers.message().await {} },
                )
            })
            .collect();
        Self(tasks)
    }

    /// Closes every stream, and so every watcher, and returns once they are
    /// dropped.
    async fn close(self) {
        for task in &self.0 {
            task.abort();
        }
        for task in self.0 {
            // Aborted, so it ends cancelled: nothing to report.
            let _cancelled = task.await;
        }
    }
}

/// Puts as `put-100` sends them, each client cycling through keys of its
/// own, but to the watched keys, so every put is an event for one watcher.
async fn puts_to_watched_keys(
    load: &Load,
    layout: &Layout,
    size: usize,
) -> anyhow::Result<Measured> {
    let layout = layout.clone();
    drive(load, move |channel, number, sequence| {
        let put = PutRequest {
            key: layout.put_key(client_key_number(number, sequence)),
            value: vec![b'x'; size],
            ..Default::default()
        };
        async move {
            KvClient::new(channel).put(put).await?;
            Ok(Outcome::Done)
        }
    })
    .await
}

/// Creates the plan's watchers on keys of their own, measures put-to-event
/// latency at the plan's rate, then `load`'s closed-loop puts to the watched
/// keys with the watchers open, closes them, and the same puts again.
pub(crate) async fn own_keys(plan: &FanOutPlan, load: &Load) -> anyhow::Result<OwnKeys> {
    anyhow::ensure!(
        plan.watched == Watched::OwnKeys,
        "the watchers must be on keys of their own"
    );
    let rate = |label: &str, measured: &Measured| {
        Summary::new(
            label.to_owned(),
            &measured.latencies,
            measured.errors,
            load.duration,
        )
    };
    let watchers = Watchers::open(&load.endpoint, plan).await?;
    let (events, watchers) = watchers.measure(&load.endpoint, plan).await?;
    let layout = watchers.layout().clone();
    let reading = Reading::start(watchers);
    let with_watchers = puts_to_watched_keys(load, &layout, plan.size).await;
    reading.close().await;
    let with_watchers = with_watchers?;
    // drive's warm-up lets the server finish cancelling the watchers.
    let without_watchers = puts_to_watched_keys(load, &layout, plan.size).await?;
    Ok(OwnKeys {
        events,
        puts: PutThroughput {
            with_watchers: rate("puts with the watchers", &with_watchers),
            without_watchers: rate("puts without", &without_watchers),
        },
    })
}

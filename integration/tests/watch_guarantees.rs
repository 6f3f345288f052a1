//! etcd's watch guarantees through the edge and three real cairn-watch
//! gateways, checked against the replicas' history: 2,000 watchers on 100
//! streams over overlapping prefixes, ranges and keys, some from old
//! revisions, while 20 writers put, delete and run multi-key txns, one
//! gateway is killed (its clients resume from their last revision + 1),
//! nats-server is restarted and a compaction happens.
//!
//! Checked per watcher: ordered, unique, reliable (exactly the history's
//! events for its range, filters and start), atomic (a revision's events in
//! one response, though a response may hold several), resumable, prev_kv as
//! the history has it, and progress responses never ahead of the events
//! delivered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cairn_integration::stack::{Stack, StackOptions};
use cairn_proto::cairn::mvcc::v1::EventsRequest;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use rand::{Rng, RngExt, SeedableRng};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

const STREAMS: usize = 100;
const WATCHERS_PER_STREAM: usize = 20;
const WRITERS: usize = 20;
const OPS_PER_WRITER: usize = 150;
const PREFIXES: usize = 8;
const KEYS: usize = 16;

fn key(prefix: usize, number: usize) -> Vec<u8> {
    format!("w/{prefix}/{number:02}").into_bytes()
}

/// What one watcher asked for.
#[derive(Clone, Debug)]
struct Spec {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// 0 = from now.
    start: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

impl Spec {
    fn random(rng: &mut impl Rng, old_up_to: i64) -> Self {
        let prefix = rng.random_range(0..PREFIXES);
        let (key, range_end) = match rng.random_range(0..10) {
            0 => (b"w/".to_vec(), b"w0".to_vec()),
            1..=4 => (
                format!("w/{prefix}/").into_bytes(),
                format!("w/{prefix}0").into_bytes(),
            ),
            5..=7 => (key(prefix, 3), key(prefix, 11)),
            _ => (key(prefix, rng.random_range(0..KEYS)), Vec::new()),
        };
        let filter = rng.random_range(0..10);
        Self {
            key,
            range_end,
            start: if rng.random_bool(0.3) {
                rng.random_range(2..=old_up_to)
            } else {
                0
            },
            prev_kv: rng.random_bool(0.5),
            no_put: filter == 0,
            no_delete: filter == 1,
        }
    }

    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = event.kv.as_ref() else {
            return false;
        };
        let in_range = if self.range_end.is_empty() {
            kv.key == self.key
        } else {
            kv.key >= self.key && kv.key < self.range_end
        };
        let is_delete = event.r#type == EventType::Delete as i32;
        let kind_wanted = if is_delete {
            !self.no_delete
        } else {
            !self.no_put
        };
        in_range && kind_wanted
    }
}

/// What one watcher received.
#[derive(Default, Clone)]
struct Seen {
    /// The revision "now" meant when it was first created (start 0).
    created_at: i64,
    events: Vec<(i64, Event)>,
    last: i64,
}

/// A progress response and how many events each watcher of the stream had
/// received when it arrived.
struct Progress {
    revision: i64,
    counts: Vec<(usize, usize)>,
}

#[derive(Default)]
struct Record {
    seen: Vec<Seen>,
    progress: Vec<Progress>,
    violations: Vec<String>,
    resumes: usize,
}

fn lock(record: &Mutex<Record>) -> Result<std::sync::MutexGuard<'_, Record>> {
    record.lock().map_err(|_| anyhow::anyhow!("poisoned"))
}

/// One client stream with its watchers, resumed from each watcher's last
/// revision + 1 whenever the stream breaks, until progress reaches `target`.
async fn client(
    channel: Channel,
    first: usize,
    specs: Vec<Spec>,
    record: Arc<Mutex<Record>>,
    mut target: watch::Receiver<i64>,
    created: Arc<tokio::sync::Barrier>,
) -> Result<()> {
    let mut told_created = false;
    loop {
        let (requests, queued) = mpsc::channel(specs.len() + 16);
        for (offset, spec) in specs.iter().enumerate() {
            let seen = lock(&record)?.seen[first + offset].clone();
            let resume_from = seen.last.max(seen.created_at);
            let start_revision = if resume_from > 0 {
                resume_from + 1
            } else {
                spec.start
            };
            let mut filters = Vec::new();
            if spec.no_put {
                filters.push(FilterType::Noput as i32);
            }
            if spec.no_delete {
                filters.push(FilterType::Nodelete as i32);
            }
            requests
                .send(WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                        key: spec.key.clone(),
                        range_end: spec.range_end.clone(),
                        start_revision,
                        prev_kv: spec.prev_kv,
                        filters,
                        watch_id: offset as i64 + 1,
                        ..Default::default()
                    })),
                })
                .await?;
        }
        let opened = WatchClient::new(channel.clone())
            .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
            .await;
        let mut answers = match opened {
            Ok(answers) => answers.into_inner(),
            Err(_) => {
                lock(&record)?.resumes += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut created_count = 0;
        let mut asked_progress = Instant::now();
        loop {
            let goal = *target.borrow();
            if goal > 0 && asked_progress.elapsed() > Duration::from_millis(300) {
                asked_progress = Instant::now();
                let _ = requests
                    .send(WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    })
                    .await;
            }
            let answer = tokio::select! {
                answer = answers.message() => answer,
                _ = tokio::time::sleep(Duration::from_millis(300)) => continue,
                _ = target.changed() => continue,
            };
            let answer = match answer {
                Ok(Some(answer)) => answer,
                // The gateway went away: resume elsewhere.
                _ => break,
            };
            let revision = answer.header.as_ref().map_or(0, |header| header.revision);
            if answer.created {
                let index = first + usize::try_from(answer.watch_id - 1)?;
                {
                    let mut record = lock(&record)?;
                    if record.seen[index].created_at == 0 && specs[index - first].start == 0 {
                        record.seen[index].created_at = revision;
                    }
                }
                created_count += 1;
                if created_count == specs.len() && !told_created {
                    told_created = true;
                    created.wait().await;
                }
                continue;
            }
            let mut record = lock(&record)?;
            if answer.canceled {
                record.violations.push(format!(
                    "watcher {} cancelled: {} (compact revision {})",
                    first as i64 + answer.watch_id - 1,
                    answer.cancel_reason,
                    answer.compact_revision
                ));
                continue;
            }
            if answer.watch_id == -1 {
                let counts = (0..specs.len())
                    .map(|offset| (first + offset, record.seen[first + offset].events.len()))
                    .collect();
                record.progress.push(Progress { revision, counts });
                if goal > 0 && revision >= goal {
                    return Ok(());
                }
                continue;
            }
            let index = first + usize::try_from(answer.watch_id - 1)?;
            let revisions: Vec<i64> = answer
                .events
                .iter()
                .map(|event| event.kv.as_ref().map_or(0, |kv| kv.mod_revision))
                .collect();
            let (Some(&first_revision), Some(&last_revision)) =
                (revisions.first(), revisions.last())
            else {
                continue;
            };
            if revisions.windows(2).any(|pair| pair[1] < pair[0]) {
                record.violations.push(format!(
                    "watcher {index}: one response held revisions out of order: {revisions:?}"
                ));
            }
            let seen = &mut record.seen[index];
            // A response may hold many revisions, but never part of one
            // another response also holds.
            if first_revision <= seen.last {
                let last = seen.last;
                record.violations.push(format!(
                    "watcher {index}: revision {first_revision} after {last} (out of order, twice, or split)"
                ));
                continue;
            }
            seen.last = last_revision;
            for (event, revision) in answer.events.into_iter().zip(revisions) {
                seen.events.push((revision, event));
            }
        }
        lock(&record)?.resumes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event of the store from `from` on, as the replicas' history has it.
async fn history(stack: &Stack, from: i64) -> Result<BTreeMap<i64, Vec<Event>>> {
    let mut chunks = stack.replicas[1]
        .mvcc()?
        .events(EventsRequest {
            key: b"w/".to_vec(),
            range_end: b"w0".to_vec(),
            start_revision: from,
            prev_kv: true,
        })
        .await?
        .into_inner();
    let mut revisions = BTreeMap::new();
    while let Some(chunk) = chunks.message().await? {
        for revision in chunk.revisions {
            revisions.insert(revision.revision, revision.events);
        }
    }
    Ok(revisions)
}

async fn current_revision(stack: &Stack) -> Result<i64> {
    let answer = stack
        .edge
        .kv()?
        .range(RangeRequest {
            key: b"w/".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(answer.header.map_or(0, |header| header.revision))
}

async fn write(
    mut kv: cairn_proto::etcdserverpb::kv_client::KvClient<Channel>,
    writer: usize,
) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(writer as u64);
    for op in 0..OPS_PER_WRITER {
        let prefix = rng.random_range(0..PREFIXES);
        let value = format!("{writer}-{op}").into_bytes();
        let outcome = match rng.random_range(0..10) {
            0..=5 => kv
                .put(PutRequest {
                    key: key(prefix, rng.random_range(0..KEYS)),
                    value,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            6 | 7 => kv
                .delete_range(DeleteRangeRequest {
                    key: key(prefix, rng.random_range(0..KEYS)),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            _ => {
                // Several keys, one revision.
                let first = rng.random_range(0..KEYS - 3);
                let success = (first..first + 3)
                    .map(|number| RequestOp {
                        request: Some(if number % 2 == 0 {
                            Op::RequestPut(PutRequest {
                                key: key(prefix, number),
                                value: value.clone(),
                                ..Default::default()
                            })
                        } else {
                            Op::RequestDeleteRange(DeleteRangeRequest {
                                key: key(prefix, number),
                                ..Default::default()
                            })
                        }),
                    })
                    .collect();
                kv.txn(TxnRequest {
                    success,
                    ..Default::default()
                })
                .await
                .map(|_| ())
            }
        };
        // A write lost to a replica's trouble is not a watch failure: the
        // history decides what watchers must see.
        drop(outcome);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_every_event_once_in_order_through_a_gateway_kill_a_nats_restart_and_a_compaction(
) -> Result<()> {
    let mut stack = Stack::start(StackOptions {
        watch_gateways: 3,
        ..Default::default()
    })
    .await?;

    // History before any watcher exists, so some can start in the past.
    let kv = stack.edge.kv()?;
    for number in 0..200 {
        let mut kv = kv.clone();
        kv.put(PutRequest {
            key: key(number % PREFIXES, number % KEYS),
            value: format!("prelude-{number}").into_bytes(),
            ..Default::default()
        })
        .await?;
    }
    let old_up_to = current_revision(&stack).await?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let specs: Vec<Spec> = (0..STREAMS * WATCHERS_PER_STREAM)
        .map(|_| Spec::random(&mut rng, old_up_to))
        .collect();
    let record = Arc::new(Mutex::new(Record {
        seen: vec![Seen::default(); specs.len()],
        ..Default::default()
    }));
    let (set_target, target) = watch::channel(0_i64);
    let created = Arc::new(tokio::sync::Barrier::new(STREAMS + 1));
    let mut clients = Vec::new();
    for stream in 0..STREAMS {
        let first = stream * WATCHERS_PER_STREAM;
        clients.push(tokio::spawn(client(
            stack.edge.channel()?,
            first,
            specs[first..first + WATCHERS_PER_STREAM].to_vec(),
            record.clone(),
            target.clone(),
            created.clone(),
        )));
    }
    tokio::time::timeout(Duration::from_secs(60), created.wait())
        .await
        .context("the watchers were not all created")?;

    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| Ok(tokio::spawn(write(stack.edge.kv()?, writer))))
        .collect::<Result<_>>()?;

    tokio::time::sleep(Duration::from_secs(4)).await;
    stack.watches[0].kill().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.nats.kill().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.nats.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What the history holds before the compaction removes its start.
    let before_compaction = history(&stack, 1).await?;
    let compact_at = old_up_to + 10;
    stack
        .edge
        .kv()?
        .compact(CompactionRequest {
            revision: compact_at,
            physical: true,
        })
        .await?;
    for writer in writers {
        writer.await??;
    }
    let last = current_revision(&stack).await?;
    println!(
        "{} writes done in {:?}, revision {last}",
        WRITERS * OPS_PER_WRITER,
        started.elapsed()
    );
    set_target.send_replace(last);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .context("a client never caught up")???;
    }

    // After the compaction, history cannot give prev_kv for a revision whose
    // previous version it removed; what was read before it is the reference.
    let mut expected_history = before_compaction;
    for (revision, events) in history(&stack, compact_at).await? {
        expected_history.entry(revision).or_insert(events);
    }
    let record = lock(&record)?;
    ensure!(
        record.violations.is_empty(),
        "{:?}",
        &record.violations[..record.violations.len().min(10)]
    );
    let mut delivered = 0;
    for (index, spec) in specs.iter().enumerate() {
        let seen = &record.seen[index];
        let from = if spec.start > 0 {
            spec.start
        } else {
            seen.created_at + 1
        };
        let expected: Vec<(i64, Event)> = expected_history
            .range(from..=last)
            .flat_map(|(revision, events)| {
                events
                    .iter()
                    .filter(|event| spec.wants(event))
                    .map(|event| {
                        let mut event = event.clone();
                        if !spec.prev_kv {
                            event.prev_kv = None;
                        }
                        (*revision, event)
                    })
            })
            .collect();
        if seen.events != expected {
            let first_difference = seen
                .events
                .iter()
                .zip(&expected)
                .position(|(got, want)| got != want)
                .unwrap_or(seen.events.len().min(expected.len()));
            bail!(
                "watcher {index} ({spec:?} from {from}): {} events, history has {}; first difference at {first_difference}: got {:?}, want {:?}",
                seen.events.len(),
                expected.len(),
                seen.events.get(first_difference),
                expected.get(first_difference)
            );
        }
        delivered += expected.len();
    }
    // Progress never ran ahead: everything up to it had been delivered.
    let mut progress_checked = 0;
    for progress in &record.progress {
        for (index, count) in &progress.counts {
            let owed = record.seen[*index]
                .events
                .iter()
                .take_while(|(revision, _)| *revision <= progress.revision)
                .count();
            ensure!(
                owed <= *count,
                "progress {} reached watcher {index} with {count} of its {owed} events up to it",
                progress.revision
            );
            progress_checked += 1;
        }
    }
    println!(
        "{} watchers, {delivered} events checked, {} resumes, {progress_checked} progress checks",
        specs.len(),
        record.resumes
    );
    ensure!(record.resumes > 0, "killing a gateway broke no stream");
    Ok(())
}

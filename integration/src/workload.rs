//! A recorded workload for the history checker: clients doing Put,
//! linearizable Range and compare-and-set Txn on a few keys with unique
//! values over etcd's gRPC API, and one watcher from the first revision,
//! against any etcd-compatible endpoints (cairn's edge, or etcd's members).
//! Every call is recorded with when it was invoked and when it completed, so
//! the checker can tell what the store may and may not have done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as OpRequest;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::checker::{Answer, Found, Op, Operation, Outcome, WatchEvent};

/// What varies between runs.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub clients: usize,
    pub keys: usize,
    /// Every key the workload touches starts with this.
    pub prefix: String,
    /// How long a call may take before its outcome counts as unknown.
    pub call_timeout: Duration,
    /// Seeds each client's choices, so a run can be repeated.
    pub seed: u64,
    /// Where the watcher watches, when not the clients' endpoints (e.g. the
    /// edge, while the clients call replicas directly).
    pub watch_endpoints: Vec<String>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            clients: 6,
            keys: 4,
            prefix: "/history/".to_owned(),
            call_timeout: Duration::from_secs(3),
            seed: 1,
            watch_endpoints: Vec::new(),
        }
    }
}

/// What a run recorded.
pub struct Recorded {
    pub operations: Vec<Operation>,
    pub events: Vec<WatchEvent>,
}

impl Recorded {
    /// How many calls ended ok, failed and with an unknown outcome.
    pub fn outcomes(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for operation in &self.operations {
            match operation.outcome {
                Outcome::Ok(_) => counts.0 += 1,
                Outcome::Failed => counts.1 += 1,
                Outcome::Unknown => counts.2 += 1,
            }
        }
        counts
    }

    /// Availability as a client sees it: the share of the run's whole seconds
    /// in which at least one write was acknowledged.
    pub fn write_availability(&self) -> f64 {
        let acknowledged: std::collections::BTreeSet<u64> = self
            .operations
            .iter()
            .filter(|operation| !matches!(operation.op, Op::Get { .. }))
            .filter(|operation| matches!(operation.outcome, Outcome::Ok(_)))
            .filter_map(|operation| operation.completed.map(|at| at.as_secs()))
            .collect();
        let seconds = self
            .operations
            .iter()
            .filter_map(|operation| operation.completed.or(Some(operation.invoked)))
            .max()
            .map_or(0, |last| last.as_secs() + 1);
        if seconds == 0 {
            return 0.0;
        }
        acknowledged.len() as f64 / seconds as f64
    }

    /// Marks every write with an unknown outcome that the watcher never saw
    /// as one that did not happen. The watcher's record is checked to hold
    /// every acknowledged write and nothing else, so this only narrows the
    /// linearizability search (each unknown write is otherwise pending
    /// forever); a read of such a write's value still fails the check.
    pub fn settle_unseen_writes(&mut self) {
        let seen: std::collections::HashSet<(&str, &str)> = self
            .events
            .iter()
            .filter_map(|event| Some((event.key.as_str(), event.value.as_deref()?)))
            .collect();
        let mut unseen = Vec::new();
        for (index, operation) in self.operations.iter().enumerate() {
            let written = match &operation.op {
                Op::Put { key, value } | Op::Cas { key, value, .. } => {
                    (key.as_str(), value.as_str())
                }
                Op::Get { .. } => continue,
            };
            if operation.outcome == Outcome::Unknown && !seen.contains(&written) {
                unseen.push(index);
            }
        }
        for index in unseen {
            self.operations[index].outcome = Outcome::Failed;
        }
    }
}

/// A running workload; [`Workload::finish`] stops it and returns the record.
pub struct Workload {
    options: WorkloadOptions,
    endpoints: Vec<String>,
    started: Instant,
    stop: watch::Sender<bool>,
    clients: Vec<JoinHandle<Vec<Operation>>>,
    watcher: JoinHandle<Result<Vec<WatchEvent>>>,
    /// The revision the watcher must reach before it stops; 0 = not known yet.
    watch_until: Arc<AtomicI64>,
}

impl Workload {
    /// Reads the current revision, starts the watcher just after it, then the
    /// clients. Each client talks to one endpoint and moves to the next when
    /// a call fails.
    pub async fn start(endpoints: &[String], options: WorkloadOptions) -> Result<Self> {
        if endpoints.is_empty() {
            bail!("a workload needs an endpoint");
        }
        let started = Instant::now();
        let first = first_revision(endpoints, &options).await?;
        let (stop, stopped) = watch::channel(false);
        let watch_until = Arc::new(AtomicI64::new(0));
        let watched = if options.watch_endpoints.is_empty() {
            endpoints.to_vec()
        } else {
            options.watch_endpoints.clone()
        };
        let watcher = tokio::spawn(watch_all(
            watched,
            options.prefix.clone(),
            first + 1,
            watch_until.clone(),
        ));
        let clients = (0..options.clients)
            .map(|client| {
                let runner = Client {
                    number: client,
                    endpoints: endpoints.to_vec(),
                    options: options.clone(),
                    started,
                };
                tokio::spawn(runner.run(stopped.clone()))
            })
            .collect();
        Ok(Self {
            options,
            endpoints: endpoints.to_vec(),
            started,
            stop,
            clients,
            watcher,
            watch_until,
        })
    }

    /// Stops the clients, reads every key once more (retrying until the store
    /// answers, within `patience`), waits for the watcher to reach the last
    /// revision, and returns everything recorded.
    pub async fn finish(self, patience: Duration) -> Result<Recorded> {
        let _ = self.stop.send(true);
        let mut operations = Vec::new();
        for client in self.clients {
            operations.extend(client.await.context("a workload client panicked")?);
        }
        let deadline = Instant::now() + patience;
        let finals = Client {
            number: self.options.clients,
            endpoints: self.endpoints.clone(),
            options: self.options.clone(),
            started: self.started,
        };
        let mut kv = finals.kv(0)?;
        for key in 0..self.options.keys {
            let key = finals.key(key);
            loop {
                let invoked = self.started.elapsed();
                match get(&mut kv, &key, self.options.call_timeout).await {
                    Ok(answer) => {
                        operations.push(Operation {
                            client: finals.number,
                            op: Op::Get { key: key.clone() },
                            invoked,
                            completed: Some(self.started.elapsed()),
                            outcome: Outcome::Ok(answer),
                        });
                        break;
                    }
                    Err(error) if Instant::now() > deadline => {
                        return Err(error.context(format!("the final read of {key}")));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        let last = operations
            .iter()
            .filter_map(|operation| match &operation.outcome {
                Outcome::Ok(answer) => Some(revision_in(answer)),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        self.watch_until.store(last.max(1), Ordering::SeqCst);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let events = tokio::time::timeout(remaining, self.watcher)
            .await
            .with_context(|| format!("the watcher did not reach revision {last} in time"))?
            .context("the watcher panicked")??;
        operations.sort_by_key(|operation| operation.invoked);
        Ok(Recorded { operations, events })
    }
}

/// The revision before the workload's first write.
async fn first_revision(endpoints: &[String], options: &WorkloadOptions) -> Result<i64> {
    let mut last_error = None;
    for endpoint in endpoints {
        let mut kv = KvClient::new(crate::channel(endpoint)?);
        match get(&mut kv, &options.prefix, options.call_timeout).await {
            Ok(answer) => return Ok(revision_in(&answer)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no endpoint")))
}

/// One client's loop and what it needs.
struct Client {
    number: usize,
    endpoints: Vec<String>,
    options: WorkloadOptions,
    started: Instant,
}

impl Client {
    fn key(&self, number: usize) -> String {
        format!("{}k{number}", self.options.prefix)
    }

    fn kv(&self, attempt: usize) -> Result<KvClient<Channel>> {
        let endpoint = &self.endpoints[(self.number + attempt) % self.endpoints.len()];
        Ok(KvClient::new(crate::channel(endpoint)?))
    }

    /// Calls until told to stop: 40 % reads, 35 % puts, 25 % compare-and-set
    /// against the value this client last saw.
    async fn run(self, stopped: watch::Receiver<bool>) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(self.options.seed ^ (self.number as u64 + 1) << 32);
        let mut operations = Vec::new();
        let mut attempt = 0;
        let Ok(mut kv) = self.kv(attempt) else {
            return operations;
        };
        let mut seen: HashMap<String, Option<String>> = HashMap::new();
        let mut written = 0u64;
        while !*stopped.borrow() {
            let key = self.key(rng.random_range(0..self.options.keys));
            let roll = rng.random_range(0..100);
            let op = if roll < 40 {
                Op::Get { key: key.clone() }
            } else {
                written += 1;
                let value = format!("c{}-{written}", self.number);
                if roll < 75 {
                    Op::Put {
                        key: key.clone(),
                        value,
                    }
                } else {
                    Op::Cas {
                        key: key.clone(),
                        expect: seen.get(&key).cloned().flatten(),
                        value,
                    }
                }
            };
            let invoked = self.started.elapsed();
            let answer = call(&mut kv, &op, self.options.call_timeout).await;
            let completed = self.started.elapsed();
            let outcome = match answer {
                Ok(answer) => {
                    if let Answer::Get { found, .. } = &answer {
                        seen.insert(key, found.as_ref().map(|found| found.value.clone()));
                    }
                    Outcome::Ok(answer)
                }
                Err(_) => {
                    // Try another endpoint, and do not spin on a dead one.
                    attempt += 1;
                    if let Ok(next) = self.kv(attempt) {
                        kv = next;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Outcome::Unknown
                }
            };
            operations.push(Operation {
                client: self.number,
                op,
                invoked,
                completed: matches!(outcome, Outcome::Ok(_)).then_some(completed),
                outcome,
            });
        }
        operations
    }
}

async fn call(kv: &mut KvClient<Channel>, op: &Op, timeout: Duration) -> Result<Answer> {
    match op {
        Op::Get { key } => get(kv, key, timeout).await,
        Op::Put { key, value } => {
            let mut request = tonic::Request::new(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            });
            request.set_timeout(timeout);
            let answer = tokio::time::timeout(timeout, kv.put(request)).await??;
            Ok(Answer::Put {
                revision: revision_of(answer.into_inner().header),
            })
        }
        Op::Cas { key, expect, value } => {
            let compare = match expect {
                Some(expected) => Compare {
                    key: key.as_bytes().to_vec(),
                    target: CompareTarget::Value as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::Value(expected.as_bytes().to_vec())),
                    ..Default::default()
                },
                None => Compare {
                    key: key.as_bytes().to_vec(),
                    target: CompareTarget::Create as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let put = RequestOp {
                request: Some(OpRequest::RequestPut(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                    ..Default::default()
                })),
            };
            let mut request = tonic::Request::new(TxnRequest {
                compare: vec![compare],
                success: vec![put],
                failure: Vec::new(),
            });
            request.set_timeout(timeout);
            let answer = tokio::time::timeout(timeout, kv.txn(request))
                .await??
                .into_inner();
            Ok(Answer::Cas {
                succeeded: answer.succeeded,
                revision: revision_of(answer.header),
            })
        }
    }
}

async fn get(kv: &mut KvClient<Channel>, key: &str, timeout: Duration) -> Result<Answer> {
    let mut request = tonic::Request::new(RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    });
    request.set_timeout(timeout);
    let answer = tokio::time::timeout(timeout, kv.range(request))
        .await??
        .into_inner();
    let found = match answer.kvs.first() {
        Some(kv) => Some(Found {
            value: String::from_utf8(kv.value.clone()).context("a value that is not UTF-8")?,
            mod_revision: kv.mod_revision,
        }),
        None => None,
    };
    Ok(Answer::Get {
        found,
        revision: revision_of(answer.header),
    })
}

/// The revision an answer's header carries.
fn revision_in(answer: &Answer) -> i64 {
    match answer {
        Answer::Put { revision } | Answer::Get { revision, .. } | Answer::Cas { revision, .. } => {
            *revision
        }
    }
}

fn revision_of(header: Option<cairn_proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.map_or(0, |header| header.revision)
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Watches every workload key from `next`, resuming from the revision after
/// the last one received whenever the stream breaks, until `until` is set
/// and reached.
async fn watch_all(
    endpoints: Vec<String>,
    prefix: String,
    mut next: i64,
    until: Arc<AtomicI64>,
) -> Result<Vec<WatchEvent>> {
    let mut events = Vec::new();
    let reached = |next: i64| {
        let until = until.load(Ordering::SeqCst);
        until > 0 && next > until
    };
    let mut attempt = 0usize;
    loop {
        attempt += 1;
        if reached(next) {
            return Ok(events);
        }
        let endpoint = &endpoints[attempt % endpoints.len()];
        let mut client = WatchClient::new(crate::channel(endpoint)?);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(&prefix),
                start_revision: next,
                ..Default::default()
            })),
        };
        // The request side stays open: closing it is not a cancel, but some
        // servers end the stream soon after.
        let requests = futures::stream::iter([create]).chain(futures::stream::pending());
        let Ok(answers) = client.watch(requests).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut answers = answers.into_inner();
        loop {
            let answer = tokio::select! {
                answer = answers.message() => answer,
                // Nothing more comes once the last revision is in.
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if reached(next) {
                        return Ok(events);
                    }
                    continue;
                }
            };
            let Ok(Some(answer)) = answer else {
                break;
            };
            if answer.compact_revision != 0 {
                bail!(
                    "the watch from {next} was compacted at {}",
                    answer.compact_revision
                );
            }
            for event in answer.events {
                let Some(kv) = event.kv else {
                    bail!("a watch event without its key-value");
                };
                let deleted = event.r#type == cairn_proto::mvccpb::event::EventType::Delete as i32;
                events.push(WatchEvent {
                    revision: kv.mod_revision,
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    value: (!deleted).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
                });
                next = next.max(kv.mod_revision + 1);
            }
            if answer.canceled {
                break;
            }
            if reached(next) {
                return Ok(events);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

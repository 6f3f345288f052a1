//! etcd KV throughput and latency against any etcd v3 endpoint: the cairn
//! edge, one mvcc replica directly, or a real etcd — so each is measured the
//! same way and the figures compare as ratios.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::drive::Conn;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use clap::Args;
use tokio::time::Instant;
use tonic::Status;

use crate::drive::{connect, drive, Load, Measured, Outcome, MAX_CONNECTIONS};
use crate::keys::{key, prefix_end, space, spread};
use crate::log::parse_duration;
use crate::procfs::cpu_seconds;
use crate::report::Summary;

/// Keys each putting client cycles through, so the store stays small.
pub(crate) const KEYS_PER_CLIENT: u64 = 100;
/// The preloaded read set: every read finds a key, and `range-all` returns
/// all of them (10,000, as in etcd's own range benchmark).
pub(crate) const READ_KEYS: u64 = 10_000;
/// Keys the compare-and-swap clients share: few enough that they collide.
pub(crate) const CAS_KEYS: u64 = 100;
/// Writes in flight while preloading.
const PRELOAD_IN_FLIGHT: u64 = 64;
/// A `range-all` answer is about 3 MB; tonic's 4 MiB default is too tight.
const MAX_ANSWER_BYTES: usize = 64 << 20;

#[derive(Args)]
pub(crate) struct KvArgs {
    /// An etcd v3 endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoint: String,
    /// Client counts to run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Connections the clients share.
    #[arg(long, default_value_t = MAX_CONNECTIONS)]
    connections: usize,
    /// Recorded time per client count, e.g. 10s or 500ms (at most 300s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// What each client asks.
    #[arg(long, value_enum, default_value_t = KvOperation::Put)]
    op: KvOperation,
    /// A process whose CPU time during each run is reported per 10k requests
    /// (e.g. the edge's pid).
    #[arg(long)]
    cpu_pid: Option<u32>,
    /// How requests travel: gRPC, or etcd's HTTP/JSON gateway (puts and
    /// ranges only).
    #[arg(long, value_enum, default_value_t = Transport::Grpc)]
    transport: Transport,
    /// Label of the rows, e.g. `edge` or `direct`.
    #[arg(long, default_value = "kv")]
    label: String,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// How a client's requests travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// etcd's gRPC API over HTTP/2.
    Grpc,
    /// etcd's HTTP/JSON gateway: JSON POSTs over HTTP/1.1.
    Http,
}

/// The request a client repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KvOperation {
    /// Put of the client's next key.
    Put,
    /// Put of the one key every client writes.
    PutHotKey,
    /// Read a shared key's mod_revision, then a Txn that puts it only if
    /// the revision is unchanged: an optimistic compare-and-swap.
    TxnCas,
    /// Linearizable Range of one key (etcd's default read).
    Range,
    /// Serializable Range of one key (local state, no read index).
    RangeSerializable,
    /// Linearizable Range of the whole preloaded read set.
    RangeAll,
}

impl KvOperation {
    /// Whether the operation reads what `preload` writes.
    pub(crate) fn needs_preload(self) -> bool {
        !matches!(self, Self::Put | Self::PutHotKey)
    }
}

/// Writes the read set and the compare-and-swap keys, a few writes in
/// flight, so reads find data; returns how long it took.
pub(crate) async fn preload(endpoint: &str, size: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let channel = connect(endpoint).await?;
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..PRELOAD_IN_FLIGHT {
        let mut client = KvClient::new(channel.clone());
        let next = next.clone();
        writers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let key = if index < READ_KEYS {
                    key(space::READ, index)
                } else if index < READ_KEYS + CAS_KEYS {
                    key(space::CAS, index - READ_KEYS)
                } else {
                    break;
                };
                client
                    .put(PutRequest {
                        key,
                        value: vec![b'x'; size],
                        ..Default::default()
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(started.elapsed())
}

/// The key client `number` puts (or reads) its `sequence`th time: each
/// client cycles through [`KEYS_PER_CLIENT`] keys of its own.
pub(crate) fn client_key_number(number: usize, sequence: u64) -> u64 {
    number as u64 * KEYS_PER_CLIENT + sequence % KEYS_PER_CLIENT
}

/// One request of `op` by client `number`, its `sequence`th.
async fn call(
    op: KvOperation,
    mut client: KvClient<Conn>,
    number: usize,
    sequence: u64,
    size: usize,
) -> Result<Outcome, Status> {
    let own = client_key_number(number, sequence);
    let put = |key| PutRequest {
        key,
        value: vec![b'x'; size],
        ..Default::default()
    };
    match op {
        KvOperation::Put => {
            client.put(put(key(space::PUT, own))).await?;
        }
        KvOperation::PutHotKey => {
            client.put(put(key(space::HOT, 0))).await?;
        }
        KvOperation::TxnCas => {
            let key = key(space::CAS, spread(number as u64, sequence) % CAS_KEYS);
            let read = client
                .range(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let revision = read.kvs.first().map_or(0, |kv| kv.mod_revision);
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal.into(),
                    target: CompareTarget::Mod.into(),
                    key: key.clone(),
                    target_union: Some(TargetUnion::ModRevision(revision)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(put(key))),
                }],
                failure: Vec::new(),
            };
            if !client.txn(txn).await?.into_inner().succeeded {
                return Ok(Outcome::Conflict);
            }
        }
        KvOperation::Range | KvOperation::RangeSerializable => {
            client
                .range(RangeRequest {
                    key: key(space::READ, own % READ_KEYS),
                    serializable: op == KvOperation::RangeSerializable,
                    ..Default::default()
                })
                .await?;
        }
        KvOperation::RangeAll => {
            let found = client
                .max_decoding_message_size(MAX_ANSWER_BYTES)
                .range(RangeRequest {
                    key: key(space::READ, 0),
                    range_end: prefix_end(&[space::READ]),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .kvs
                .len();
            if found as u64 != READ_KEYS {
                return Err(Status::internal(format!(
                    "the read set has {found} keys, not {READ_KEYS}"
                )));
            }
        }
    }
    Ok(Outcome::Done)
}

/// Runs the load's clients, each repeating `op`.
pub(crate) async fn measure(load: &Load, op: KvOperation, size: usize) -> anyhow::Result<Measured> {
    drive(load, move |channel, number, sequence| {
        call(op, KvClient::new(channel), number, sequence, size)
    })
    .await
}

pub(crate) async fn run(args: KvArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.size > 0, "--size must be positive");
    anyhow::ensure!(
        args.transport == Transport::Grpc || crate::http::supports(args.op),
        "{:?} has no HTTP form here",
        args.op
    );
    if args.op.needs_preload() {
        let took = preload(&args.endpoint, args.size).await?;
        println!("preloaded {READ_KEYS} keys in {:.1} s", took.as_secs_f64());
    }
    println!(
        "{:?} against {} over {:?} ({} B values)",
        args.op, args.endpoint, args.transport, args.size
    );
    println!(
        "{}{}{}",
        Summary::HEADER,
        if args.cpu_pid.is_some() {
            "  cpu s/10k"
        } else {
            ""
        },
        if args.op == KvOperation::TxnCas {
            "  conflicts"
        } else {
            ""
        }
    );
    let mut summaries = Vec::new();
    for clients in &args.clients {
        anyhow::ensure!(*clients > 0, "client counts must be positive");
        let load = Load {
            endpoint: args.endpoint.clone(),
            clients: *clients,
            connections: args.connections,
            duration: args.duration,
        };
        let cpu_before = args.cpu_pid.and_then(cpu_seconds);
        let measured = match args.transport {
            Transport::Grpc => measure(&load, args.op, args.size).await?,
            Transport::Http => {
                let gateway = crate::http::Gateway::new(&args.endpoint, args.size);
                let op = args.op;
                crate::drive::drive_over(&load, vec![gateway], move |gateway, number, sequence| {
                    crate::http::call(op, gateway, number, sequence)
                })
                .await?
            }
        };
        let cpu_after = args.cpu_pid.and_then(cpu_seconds);
        let summary = Summary::new(
            format!("{} {clients} clients", args.label),
            &measured.latencies,
            measured.errors,
            args.duration,
        );
        let cpu = match (cpu_before, cpu_after) {
            (Some(before), Some(after)) if measured.sent > 0 => {
                // CPU over the whole run, warm-up included, so every request sent.
                format!(
                    "  {:>9.3}",
                    (after - before) * 10_000.0 / measured.sent as f64
                )
            }
            _ => String::new(),
        };
        let conflicts = if args.op == KvOperation::TxnCas {
            format!("  {:>9}", measured.conflicts)
        } else {
            String::new()
        };
        println!("{}{cpu}{conflicts}", summary.row());
        summaries.push(summary);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summaries)?)?;
    }
    Ok(())
}

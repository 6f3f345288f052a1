//! etcd KV throughput and latency against any etcd v3 endpoint: the cairn
//! edge, one mvcc replica directly, or a real etcd — so each is measured the
//! same way and the figures compare as ratios.

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use clap::Args;

use crate::drive::{cpu_seconds, drive};
use crate::log::parse_duration;
use crate::report::Summary;

/// Keys each client cycles through, so reads find data and the store stays small.
const KEYS_PER_CLIENT: u64 = 100;

#[derive(Args)]
pub struct KvArgs {
    /// An etcd v3 endpoint, host:port.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoint: String,
    /// Client counts to run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
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
    /// Label of the rows, e.g. `edge` or `direct`.
    #[arg(long, default_value = "kv")]
    label: String,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// The request a client repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KvOperation {
    /// Put of the client's next key.
    Put,
    /// Linearizable Range of one key (etcd's default read).
    Range,
    /// Serializable Range of one key (local state, no read index).
    RangeSerializable,
}

fn key(client: usize, sequence: u64) -> Vec<u8> {
    format!("bench/{client}/{}", sequence % KEYS_PER_CLIENT).into_bytes()
}

/// Writes the keys every client reads, so reads find data.
pub async fn seed(endpoint: &str, clients: usize, size: usize) -> anyhow::Result<()> {
    let mut client = KvClient::new(crate::drive::connect(endpoint).await?);
    for number in 0..clients {
        for sequence in 0..KEYS_PER_CLIENT {
            client
                .put(PutRequest {
                    key: key(number, sequence),
                    value: vec![b'x'; size],
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

/// Runs `clients` clients repeating `op` against `endpoint` for `duration`.
pub async fn measure(
    endpoint: &str,
    op: KvOperation,
    clients: usize,
    duration: Duration,
    size: usize,
) -> anyhow::Result<crate::drive::Measured> {
    drive(
        endpoint,
        clients,
        duration,
        move |channel, number, sequence| {
            let mut client = KvClient::new(channel);
            async move {
                let key = key(number, sequence);
                match op {
                    KvOperation::Put => client
                        .put(PutRequest {
                            key,
                            value: vec![b'x'; size],
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    KvOperation::Range | KvOperation::RangeSerializable => client
                        .range(RangeRequest {
                            key,
                            serializable: op == KvOperation::RangeSerializable,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                }
            }
        },
    )
    .await
}

pub async fn run(args: KvArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.size > 0, "--size must be positive");
    // Reads need something to find.
    if args.op != KvOperation::Put {
        let clients = args.clients.iter().copied().max().unwrap_or(1);
        seed(&args.endpoint, clients, args.size).await?;
    }
    println!(
        "{:?} against {} ({} B values)",
        args.op, args.endpoint, args.size
    );
    println!(
        "{}{}",
        Summary::HEADER,
        if args.cpu_pid.is_some() {
            "  cpu s/10k"
        } else {
            ""
        }
    );
    let mut summaries = Vec::new();
    for clients in &args.clients {
        anyhow::ensure!(*clients > 0, "client counts must be positive");
        let cpu_before = args.cpu_pid.and_then(cpu_seconds);
        let measured = measure(&args.endpoint, args.op, *clients, args.duration, args.size).await?;
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
        println!("{}{cpu}", summary.row());
        summaries.push(summary);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summaries)?)?;
    }
    Ok(())
}

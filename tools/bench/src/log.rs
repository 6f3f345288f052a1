//! Propose throughput and latency of a cairn-log cluster: N clients over a few
//! shared HTTP/2 connections, each proposing as fast as its answers come back.

use std::time::Duration;

use cairn_proto::cairn::log::v1::log_client::LogClient;
use cairn_proto::cairn::log::v1::{ProposeRequest, ReadIndexRequest, StatusRequest};
use clap::Args;

use crate::drive::{connect, drive, Load, Outcome, MAX_CONNECTIONS};
use crate::report::Summary;

#[derive(Args)]
pub(crate) struct LogArgs {
    /// Log nodes, host:port, comma separated; the leader is found through Status.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7001")]
    endpoints: Vec<String>,
    /// Client counts to run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Recorded time per client count, e.g. 10s or 500ms (at most 300s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Bytes per command.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// What each client asks: `propose` (a write) or `read-index` (a
    /// linearizable read point, what every linearizable read costs).
    #[arg(long, value_enum, default_value_t = Operation::Propose)]
    op: Operation,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// The request a client repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Operation {
    Propose,
    ReadIndex,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |split| text.split_at(split));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value * 60),
        _ => return Err(format!("`{text}`: unit must be ms, s or m")),
    };
    if duration.is_zero() || duration > Duration::from_secs(300) {
        return Err("duration must be between 1ms and 300s".into());
    }
    Ok(duration)
}

async fn leader_endpoint(endpoints: &[String]) -> anyhow::Result<String> {
    for endpoint in endpoints {
        let Ok(channel) = connect(endpoint).await else {
            continue;
        };
        let Ok(status) = LogClient::new(channel).status(StatusRequest {}).await else {
            continue;
        };
        let status = status.into_inner();
        if let Some(leader) = status
            .members
            .iter()
            .find(|member| member.id == status.leader)
        {
            return Ok(leader.addr.clone());
        }
    }
    endpoints
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no endpoints"))
}

pub(crate) async fn run(args: LogArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.size > 0, "--size must be positive");
    let leader = leader_endpoint(&args.endpoints).await?;
    println!(
        "proposing {} B commands to the leader at {leader}",
        args.size
    );
    println!("{}", Summary::HEADER);
    let mut summaries = Vec::new();
    for clients in &args.clients {
        anyhow::ensure!(*clients > 0, "client counts must be positive");
        let summary = run_clients(&leader, *clients, args.duration, args.size, args.op).await?;
        println!("{}", summary.row());
        summaries.push(summary);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summaries)?)?;
    }
    Ok(())
}

async fn run_clients(
    endpoint: &str,
    clients: usize,
    duration: Duration,
    size: usize,
    op: Operation,
) -> anyhow::Result<Summary> {
    let load = Load {
        endpoint: endpoint.to_owned(),
        clients,
        connections: MAX_CONNECTIONS,
        duration,
    };
    let measured = drive(&load, move |channel, number, sequence| {
        let mut client = LogClient::new(channel);
        async move {
            match op {
                Operation::Propose => {
                    let mut command = format!("bench-{number}-{sequence}-").into_bytes();
                    command.resize(size.max(command.len()), b'x');
                    client.propose(ProposeRequest { command }).await?;
                }
                Operation::ReadIndex => {
                    client.read_index(ReadIndexRequest {}).await?;
                }
            }
            Ok(Outcome::Done)
        }
    })
    .await?;
    Ok(Summary::new(
        format!(
            "{} {clients} clients",
            match op {
                Operation::Propose => "propose",
                Operation::ReadIndex => "read-index",
            }
        ),
        &measured.latencies,
        measured.errors,
        duration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bounds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("301s").is_err());
    }
}

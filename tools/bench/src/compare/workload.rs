//! The workloads of the comparison, and one round of one of them against one
//! system, measured by the same code the single-system subcommands use.

use std::time::Duration;

use crate::drive::Conn;
use hdrhistogram::Histogram;

use super::results::Notes;
use crate::drive::{connect, Load, MAX_CONNECTIONS};
use crate::kv::{measure, preload, KvOperation};
use crate::lease::{grant, keep_alive, GrantPlan, KeepAlivePlan};
use crate::procfs::cpu_seconds;
use crate::report::Summary;
use crate::watch::{fan_out, own_keys, FanOut, FanOutPlan, Watched};

/// Preloading or granting that takes longer than this has gone wrong.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Watch streams the watchers are spread over, each on its own connection.
const WATCH_STREAMS: usize = 100;
/// LeaseKeepAlive streams and keep-alives in flight on each.
const LEASE_STREAMS: usize = 10;
const LEASE_IN_FLIGHT: usize = 256;
/// Grants in flight while granting the leases.
const GRANT_CONCURRENCY: usize = 512;

/// What every round of every workload shares.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    /// Recorded time of one round (puts' time for the watch workloads).
    pub duration: Duration,
    pub value_bytes: usize,
    /// Puts per second in the watch workloads.
    pub watch_rate: u64,
    /// How long watchers may go on receiving after the last put.
    pub watch_drain: Duration,
    pub leases: usize,
    pub lease_ttl: i64,
}

/// What a workload does.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Kv {
        op: KvOperation,
        clients: usize,
        connections: usize,
    },
    /// Puts by `clients` while `readers` more clients read the whole
    /// preloaded read set over and over: whether large ranges hold writes back.
    PutsUnderRanges {
        clients: usize,
        connections: usize,
        readers: usize,
    },
    Watch {
        watchers: usize,
    },
    /// Watchers each on a key of their own, puts at the watch rate spread
    /// over those keys; then closed-loop puts by `clients` to the watched
    /// keys with the watchers open and after they are closed, since holding
    /// watchers should not slow the puts.
    WatchOwnKeys {
        watchers: usize,
        clients: usize,
        connections: usize,
    },
    Lease,
}

/// One workload: a short id to select it by, a name to print it by.
#[derive(Clone, Debug)]
pub(super) struct Workload {
    pub id: &'static str,
    pub name: String,
    pub kind: Kind,
}

/// Every workload, in the order they run: KV first, then the watches, then
/// the leases, whose keep-alive timers would otherwise run under the rest.
pub(super) fn workloads(settings: &Settings) -> Vec<Workload> {
    let kv = |id, name: &str, op, clients, connections| Workload {
        id,
        name: name.to_owned(),
        kind: Kind::Kv {
            op,
            clients,
            connections,
        },
    };
    let watch = |id, watchers: usize| Workload {
        id,
        name: format!("watch, {watchers} watchers"),
        kind: Kind::Watch { watchers },
    };
    vec![
        kv("put-1", "put, 1 client", KvOperation::Put, 1, 1),
        kv("put-100", "put, 100 clients", KvOperation::Put, 100, 10),
        kv(
            "put-hot",
            "put one key, 100 clients",
            KvOperation::PutHotKey,
            100,
            10,
        ),
        kv(
            "txn-cas",
            "txn CAS, 100 clients",
            KvOperation::TxnCas,
            100,
            10,
        ),
        kv(
            "range-lin",
            "range linearizable, 100",
            KvOperation::Range,
            100,
            10,
        ),
        kv(
            "range-ser",
            "range serializable, 100",
            KvOperation::RangeSerializable,
            100,
            10,
        ),
        kv(
            "range-10k",
            "range 10,000 keys, 4",
            KvOperation::RangeAll,
            4,
            4,
        ),
        Workload {
            id: "put-under-ranges",
            name: "put, 100, with 4 ranging".to_owned(),
            kind: Kind::PutsUnderRanges {
                clients: 100,
                connections: 10,
                readers: 4,
            },
        },
        watch("watch-1k", 1_000),
        watch("watch-10k", 10_000),
        Workload {
            id: "watch-keys",
            name: "watch, 10000 on own keys".to_owned(),
            kind: Kind::WatchOwnKeys {
                watchers: 10_000,
                clients: 100,
                connections: 10,
            },
        },
        Workload {
            id: "lease",
            name: format!("lease keep-alive, {} leases", settings.leases),
            kind: Kind::Lease,
        },
    ]
}

/// One system under test, and what its setup left for later rounds.
pub(super) struct System {
    pub name: &'static str,
    pub endpoint: String,
    /// Its processes, whose CPU a round's requests are charged.
    pids: Vec<u32>,
    preloaded: bool,
    leases: Option<Leases>,
}

/// Leases granted once per system, renewed by every lease round.
struct Leases {
    ids: Vec<i64>,
    channels: Vec<Conn>,
    grant_seconds: f64,
}

/// What one round measured.
pub(super) struct Round {
    pub summary: Summary,
    pub latencies: Histogram<u64>,
    pub notes: Notes,
}

impl System {
    pub(super) fn new(name: &'static str, endpoint: String, pids: Vec<u32>) -> Self {
        Self {
            name,
            endpoint,
            pids,
            preloaded: false,
            leases: None,
        }
    }

    /// CPU seconds its processes have used so far; `None` without processes
    /// to read, or when one of them is gone.
    fn cpu_seconds(&self) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&pid| cpu_seconds(pid)).sum()
    }

    /// Writes the read set once; returns how long it took, or `None` if it
    /// was there already.
    pub(super) async fn preload(
        &mut self,
        settings: &Settings,
    ) -> anyhow::Result<Option<Duration>> {
        if self.preloaded {
            return Ok(None);
        }
        let took =
            tokio::time::timeout(SETUP_TIMEOUT, preload(&self.endpoint, settings.value_bytes))
                .await
                .map_err(|_| anyhow::anyhow!("preloading took over {SETUP_TIMEOUT:?}"))??;
        self.preloaded = true;
        Ok(Some(took))
    }

    /// Grants the leases once, without keys: keep-alives cost the same
    /// either way, and granting stays cheap.
    async fn leases(&mut self, settings: &Settings) -> anyhow::Result<&Leases> {
        if self.leases.is_none() {
            let mut channels = Vec::new();
            for _ in 0..MAX_CONNECTIONS {
                channels.push(connect(&self.endpoint).await?);
            }
            let plan = GrantPlan {
                leases: settings.leases,
                ttl: settings.lease_ttl,
                concurrency: GRANT_CONCURRENCY,
                attach_keys: false,
            };
            let granted = tokio::time::timeout(SETUP_TIMEOUT, grant(plan, &channels))
                .await
                .map_err(|_| anyhow::anyhow!("granting took over {SETUP_TIMEOUT:?}"))??;
            self.leases = Some(Leases {
                ids: granted.ids,
                channels,
                grant_seconds: granted.elapsed.as_secs_f64(),
            });
        }
        self.leases
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no leases"))
    }

    /// Runs one round of `workload` against this system.
    pub(super) async fn round(
        &mut self,
        workload: &Workload,
        settings: &Settings,
    ) -> anyhow::Result<Round> {
        let label = workload.name.clone();
        match workload.kind {
            Kind::Kv {
                op,
                clients,
                connections,
            } => {
                if op.needs_preload() {
                    self.preload(settings).await?;
                }
                let load = Load {
                    endpoint: self.endpoint.clone(),
                    clients,
                    connections,
                    duration: settings.duration,
                };
                let cpu_before = self.cpu_seconds();
                let measured = measure(&load, op, settings.value_bytes).await?;
                let cpu_us_per_request = cpu_before
                    .zip(self.cpu_seconds())
                    .map(|(before, after)| (after - before) * 1e6 / measured.sent.max(1) as f64);
                Ok(Round {
                    summary: Summary::new(
                        label,
                        &measured.latencies,
                        measured.errors,
                        settings.duration,
                    ),
                    notes: Notes {
                        conflicts: (op == KvOperation::TxnCas).then_some(measured.conflicts),
                        cpu_us_per_request,
                        ..Notes::default()
                    },
                    latencies: measured.latencies,
                })
            }
            Kind::PutsUnderRanges {
                clients,
                connections,
                readers,
            } => {
                self.preload(settings).await?;
                let load = |clients, connections| Load {
                    endpoint: self.endpoint.clone(),
                    clients,
                    connections,
                    duration: settings.duration,
                };
                let puts = load(clients, connections);
                let ranges = load(readers, readers);
                let (measured, ranged) = tokio::join!(
                    measure(&puts, KvOperation::Put, settings.value_bytes),
                    measure(&ranges, KvOperation::RangeAll, settings.value_bytes),
                );
                let (measured, ranged) = (measured?, ranged?);
                Ok(Round {
                    summary: Summary::new(
                        label,
                        &measured.latencies,
                        measured.errors,
                        settings.duration,
                    ),
                    notes: Notes {
                        ranges: Some(ranged.latencies.len()),
                        ..Notes::default()
                    },
                    latencies: measured.latencies,
                })
            }
            Kind::Watch { watchers } => {
                let plan = watch_plan(settings, watchers, Watched::OnePrefix);
                let measured = fan_out(&self.endpoint, &plan).await?;
                Ok(watch_round(label, measured, Notes::default()))
            }
            Kind::WatchOwnKeys {
                watchers,
                clients,
                connections,
            } => {
                let plan = watch_plan(settings, watchers, Watched::OwnKeys);
                let load = Load {
                    endpoint: self.endpoint.clone(),
                    clients,
                    connections,
                    duration: settings.duration,
                };
                let measured = own_keys(&plan, &load).await?;
                let puts = &measured.puts;
                let notes = Notes {
                    puts_with_watchers: Some(puts.with_watchers.per_second),
                    puts_without_watchers: Some(puts.without_watchers.per_second),
                    puts_with_over_without: puts.with_over_without(),
                    ..Notes::default()
                };
                Ok(watch_round(label, measured.events, notes))
            }
            Kind::Lease => {
                let leases = self.leases(settings).await?;
                let plan = KeepAlivePlan {
                    streams: LEASE_STREAMS,
                    in_flight: LEASE_IN_FLIGHT,
                    duration: settings.duration,
                };
                let kept = keep_alive(plan, &leases.channels, &leases.ids, None).await?;
                Ok(Round {
                    summary: Summary::new(label, &kept.latencies, kept.errors, settings.duration),
                    notes: Notes {
                        grant_seconds: Some(leases.grant_seconds),
                        ttl_zero: Some(kept.ttl_zero),
                        ..Notes::default()
                    },
                    latencies: kept.latencies,
                })
            }
        }
    }
}

/// A watch workload's plan: `watchers` over the usual streams, at the
/// settings' rate, for a round's duration.
fn watch_plan(settings: &Settings, watchers: usize, watched: Watched) -> FanOutPlan {
    FanOutPlan {
        watchers,
        streams: WATCH_STREAMS,
        watched,
        rate: settings.watch_rate,
        duration: settings.duration,
        size: settings.value_bytes,
        drain: settings.watch_drain,
    }
}

/// A watch round: events delivered per second and their latencies, with
/// the puts and deliveries added to `notes`.
fn watch_round(label: String, measured: FanOut, notes: Notes) -> Round {
    Round {
        summary: crate::watch::summary(label, &measured),
        notes: Notes {
            puts: Some(measured.puts),
            delivered: Some(measured.delivered()),
            expected: Some(measured.expected),
            ..notes
        },
        latencies: measured.latencies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ids_are_distinct() {
        let settings = Settings {
            duration: Duration::from_secs(1),
            value_bytes: 256,
            watch_rate: 1000,
            watch_drain: Duration::from_secs(1),
            leases: 10_000,
            lease_ttl: 60,
        };
        let all = workloads(&settings);
        let mut ids: Vec<_> = all.iter().map(|workload| workload.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
    }
}

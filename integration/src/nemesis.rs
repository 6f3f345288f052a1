//! Faults on purpose, at random: one at a time, a process is SIGKILLed and
//! restarted or SIGSTOPped and resumed, or the links into a log node are cut
//! or slowed, then healed, while a workload runs. The same loop drives a whole
//! cairn ([`Stack`]) and a real etcd cluster ([`Etcd`]), so the history
//! checker's verdict on one can be compared with the other.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

use crate::etcd::Etcd;
use crate::relay::LinkState;
use crate::stack::Stack;

/// A part of the system under test that a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A cairn-log node, by raft id.
    Log(u64),
    /// A cairn-mvcc replica, by position in the stack.
    Replica(usize),
    Nats,
    /// A cairn-watch gateway, by position.
    Gateway(usize),
    /// A cairn-lease instance, by position.
    Lease(usize),
    Edge,
    /// An etcd member, by position.
    Etcd(usize),
}

/// What was done to the parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL; healed by starting the process again on the same files.
    Kill,
    /// SIGSTOP; healed by SIGCONT.
    Pause,
    /// Every link into the node (from peers and services) refuses
    /// everything; healed by opening it.
    Cut,
    /// Every link into the node holds every chunk this long.
    Delay(Duration),
}

/// A fault in force, to be healed.
#[derive(Clone, Debug)]
pub struct Injected {
    pub fault: Fault,
    pub parts: Vec<Part>,
    /// Which role the parts had, for the run's log (e.g. "the log leader").
    pub role: &'static str,
}

/// A system the nemesis can hurt and heal.
pub trait Faulty {
    /// Picks a fault at random and puts it in force.
    fn inject(&mut self, rng: &mut StdRng) -> impl Future<Output = Result<Injected>>;
    /// Undoes `injected`.
    fn heal(&mut self, injected: &Injected) -> impl Future<Output = Result<()>>;
}

/// The fault loop and what it did.
pub struct Nemesis {
    rng: StdRng,
    started: Instant,
    /// One line per fault, with times since the start: printed when a check fails.
    pub log: Vec<String>,
    /// How many times each kind of fault was put in force, e.g. "Kill the log leader".
    pub counts: std::collections::BTreeMap<String, usize>,
}

impl Nemesis {
    /// A nemesis whose choices follow `seed`, so a failing run can be replayed.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            started: Instant::now(),
            log: Vec::new(),
            counts: std::collections::BTreeMap::new(),
        }
    }

    /// Injects and heals faults one at a time for `duration`: quiet for
    /// 0.3–1.5 s, a fault held for 0.5–2.5 s, healed before the next.
    pub async fn run<S: Faulty>(&mut self, system: &mut S, duration: Duration) -> Result<()> {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            let quiet = Duration::from_millis(self.rng.random_range(300..1500));
            tokio::time::sleep(quiet).await;
            let injected = system.inject(&mut self.rng).await?;
            let kind = match injected.fault {
                Fault::Delay(_) => "Delay",
                Fault::Kill => "Kill",
                Fault::Pause => "Pause",
                Fault::Cut => "Cut",
            };
            *self
                .counts
                .entry(format!("{kind} {}", injected.role))
                .or_default() += 1;
            self.note(format!(
                "{:?} {} {:?}",
                injected.fault, injected.role, injected.parts
            ));
            let hold = Duration::from_millis(self.rng.random_range(500..2500));
            tokio::time::sleep(hold).await;
            system
                .heal(&injected)
                .await
                .with_context(|| format!("healing {injected:?}"))?;
            self.note(format!("healed {:?}", injected.parts));
        }
        Ok(())
    }

    fn note(&mut self, line: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.log.push(format!("{at:7.2}s {line}"));
    }
}

/// The faults a whole cairn can suffer.
#[derive(Clone, Copy, Debug)]
enum CairnFault {
    KillLogLeader,
    PauseLogLeader,
    KillLogFollower,
    PauseLogFollower,
    KillLogMinority,
    CutLogLink,
    DelayLogLink,
    KillReplica,
    PauseReplica,
    KillNats,
    PauseNats,
    KillGateway,
    PauseGateway,
    KillLeaseHolder,
    KillEdge,
    PauseEdge,
}

const CAIRN_FAULTS: &[CairnFault] = &[
    CairnFault::KillLogLeader,
    CairnFault::PauseLogLeader,
    CairnFault::KillLogFollower,
    CairnFault::PauseLogFollower,
    CairnFault::KillLogMinority,
    CairnFault::CutLogLink,
    CairnFault::DelayLogLink,
    CairnFault::KillReplica,
    CairnFault::PauseReplica,
    CairnFault::KillNats,
    CairnFault::PauseNats,
    CairnFault::KillGateway,
    CairnFault::PauseGateway,
    CairnFault::KillLeaseHolder,
    CairnFault::KillEdge,
    CairnFault::PauseEdge,
];

impl Stack {
    /// The log's leader, or any node when none is known right now.
    async fn log_leader_or_any(&self, rng: &mut StdRng) -> Result<u64> {
        let ids = self.cluster.ids();
        match self
            .cluster
            .wait_for_leader(&ids, Duration::from_secs(5))
            .await
        {
            Ok(leader) => Ok(leader),
            Err(_) => ids.choose(rng).copied().context("a log without nodes"),
        }
    }

    /// Nodes other than the leader, shuffled.
    async fn log_followers(&self, rng: &mut StdRng) -> Result<Vec<u64>> {
        let leader = self.log_leader_or_any(rng).await?;
        let mut followers: Vec<u64> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        rand::seq::SliceRandom::shuffle(followers.as_mut_slice(), rng);
        Ok(followers)
    }

    async fn kill(&mut self, part: Part) -> Result<()> {
        match part {
            Part::Log(id) => self.cluster.kill(id).await,
            Part::Replica(index) => self.replicas[index].kill().await,
            Part::Nats => self.nats.kill().await,
            Part::Gateway(index) => self.watches[index].kill().await,
            Part::Lease(index) => self.leases[index].kill().await,
            Part::Edge => self.edge.kill().await,
            Part::Etcd(_) => anyhow::bail!("cairn has no etcd member"),
        }
    }

    async fn restart(&mut self, part: Part) -> Result<()> {
        match part {
            Part::Log(id) => self.cluster.start_node(id),
            Part::Replica(index) => self.replicas[index].start(),
            Part::Nats => self.nats.restart().await,
            Part::Gateway(index) => self.watches[index].start(),
            Part::Lease(index) => self.leases[index].start(),
            Part::Edge => self.edge.start().await,
            Part::Etcd(_) => anyhow::bail!("cairn has no etcd member"),
        }
    }

    fn pause_or_resume(&self, part: Part, pause: bool) -> Result<()> {
        match (part, pause) {
            (Part::Log(id), true) => self.cluster.pause(id),
            (Part::Log(id), false) => self.cluster.resume(id),
            (Part::Replica(index), true) => self.replicas[index].pause(),
            (Part::Replica(index), false) => self.replicas[index].resume(),
            (Part::Nats, true) => self.nats.pause(),
            (Part::Nats, false) => self.nats.resume(),
            (Part::Gateway(index), true) => self.watches[index].pause(),
            (Part::Gateway(index), false) => self.watches[index].resume(),
            (Part::Lease(index), true) => self.leases[index].pause(),
            (Part::Lease(index), false) => self.leases[index].resume(),
            (Part::Edge, true) => self.edge.pause(),
            (Part::Edge, false) => self.edge.resume(),
            (Part::Etcd(_), _) => anyhow::bail!("cairn has no etcd member"),
        }
    }
}

impl Faulty for Stack {
    async fn inject(&mut self, rng: &mut StdRng) -> Result<Injected> {
        let choice = *CAIRN_FAULTS.choose(rng).context("no faults")?;
        let (fault, role, parts) = match choice {
            CairnFault::KillLogLeader | CairnFault::PauseLogLeader => {
                let leader = self.log_leader_or_any(rng).await?;
                let fault = if matches!(choice, CairnFault::KillLogLeader) {
                    Fault::Kill
                } else {
                    Fault::Pause
                };
                (fault, "the log leader", vec![Part::Log(leader)])
            }
            CairnFault::KillLogFollower | CairnFault::PauseLogFollower => {
                let followers = self.log_followers(rng).await?;
                let follower = *followers.first().context("a log of one node")?;
                let fault = if matches!(choice, CairnFault::KillLogFollower) {
                    Fault::Kill
                } else {
                    Fault::Pause
                };
                (fault, "a log follower", vec![Part::Log(follower)])
            }
            CairnFault::KillLogMinority => {
                let ids = self.cluster.ids();
                let minority = (ids.len() - 1) / 2;
                let chosen: Vec<Part> = ids
                    .sample(rng, minority.max(1))
                    .map(|id| Part::Log(*id))
                    .collect();
                (Fault::Kill, "a minority of log nodes", chosen)
            }
            CairnFault::CutLogLink | CairnFault::DelayLogLink => {
                let id = *self.cluster.ids().choose(rng).context("no log nodes")?;
                let fault = if matches!(choice, CairnFault::CutLogLink) {
                    Fault::Cut
                } else {
                    Fault::Delay(Duration::from_millis(rng.random_range(20..200)))
                };
                (fault, "the links into a log node", vec![Part::Log(id)])
            }
            CairnFault::KillReplica | CairnFault::PauseReplica => {
                let index = rng.random_range(0..self.replicas.len());
                let fault = if matches!(choice, CairnFault::KillReplica) {
                    Fault::Kill
                } else {
                    Fault::Pause
                };
                (fault, "an mvcc replica", vec![Part::Replica(index)])
            }
            CairnFault::KillNats => (Fault::Kill, "NATS", vec![Part::Nats]),
            CairnFault::PauseNats => (Fault::Pause, "NATS", vec![Part::Nats]),
            CairnFault::KillGateway | CairnFault::PauseGateway => {
                let index = rng.random_range(0..self.watches.len());
                let fault = if matches!(choice, CairnFault::KillGateway) {
                    Fault::Kill
                } else {
                    Fault::Pause
                };
                (fault, "a watch gateway", vec![Part::Gateway(index)])
            }
            CairnFault::KillLeaseHolder => {
                let holder = self.holder(Duration::from_secs(10)).await?;
                let index = self
                    .leases
                    .iter()
                    .position(|lease| lease.addr == holder)
                    .context("the holder is one of ours")?;
                (
                    Fault::Kill,
                    "the active lease instance",
                    vec![Part::Lease(index)],
                )
            }
            CairnFault::KillEdge => (Fault::Kill, "the edge", vec![Part::Edge]),
            CairnFault::PauseEdge => (Fault::Pause, "the edge", vec![Part::Edge]),
        };
        for part in &parts {
            match (fault, part) {
                (Fault::Kill, part) => self.kill(*part).await?,
                (Fault::Pause, part) => self.pause_or_resume(*part, true)?,
                (Fault::Cut, Part::Log(id)) => self.cluster.relay(*id)?.set(LinkState::Cut),
                (Fault::Delay(delay), Part::Log(id)) => {
                    self.cluster.relay(*id)?.set(LinkState::Delayed(delay))
                }
                (link, part) => anyhow::bail!("{link:?} does not apply to {part:?}"),
            }
        }
        Ok(Injected { fault, parts, role })
    }

    async fn heal(&mut self, injected: &Injected) -> Result<()> {
        for part in &injected.parts {
            match (injected.fault, part) {
                (Fault::Kill, part) => self.restart(*part).await?,
                (Fault::Pause, part) => self.pause_or_resume(*part, false)?,
                (Fault::Cut | Fault::Delay(_), Part::Log(id)) => {
                    self.cluster.relay(*id)?.set(LinkState::Open)
                }
                (link, part) => anyhow::bail!("{link:?} does not apply to {part:?}"),
            }
        }
        Ok(())
    }
}

impl Faulty for Etcd {
    /// etcd's own faults: its leader or a follower killed or paused.
    async fn inject(&mut self, rng: &mut StdRng) -> Result<Injected> {
        let leader = self.leader().await;
        let (role, member) = match (rng.random_bool(0.5), leader) {
            (true, Some(leader)) => ("the etcd leader", leader),
            _ => {
                let others: Vec<usize> = (0..self.size())
                    .filter(|member| Some(*member) != leader)
                    .collect();
                let member = *others.choose(rng).context("an etcd of one member")?;
                ("an etcd follower", member)
            }
        };
        let fault = if rng.random_bool(0.5) {
            self.kill(member).await?;
            Fault::Kill
        } else {
            self.pause(member)?;
            Fault::Pause
        };
        Ok(Injected {
            fault,
            parts: vec![Part::Etcd(member)],
            role,
        })
    }

    async fn heal(&mut self, injected: &Injected) -> Result<()> {
        for part in &injected.parts {
            let Part::Etcd(member) = part else {
                anyhow::bail!("{part:?} is not an etcd member");
            };
            match injected.fault {
                Fault::Kill => self.restart(*member)?,
                Fault::Pause => self.resume(*member)?,
                link => anyhow::bail!("etcd's links are not relayed: {link:?}"),
            }
        }
        Ok(())
    }
}

//! Judges a history that clients recorded against an etcd-compatible store:
//! whether each key behaved as one linearizable register, whether revisions
//! moved forward in real time, and whether a watcher saw exactly the writes
//! that happened. Pure logic over recorded data; the harness that produced
//! the history decides what to do with the [`Report`].
//!
//! Keys start absent: the workload is expected to use keys nobody wrote before.

mod linearizable;
mod revisions;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One request a client sent, on one key: keys are checked independently,
/// so a request never spans keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An unconditional write.
    Put { key: String, value: String },
    /// A linearizable range read of exactly this key.
    Get { key: String },
    /// A transaction: write `value` if the key currently holds `expect`
    /// (`None`: if the key does not exist).
    Cas {
        key: String,
        expect: Option<String>,
        value: String,
    },
}

impl Op {
    /// The key the request is about, which decides which register it belongs to.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } => key,
        }
    }

    /// The value the request would store if it took effect.
    fn written_value(&self) -> Option<&str> {
        match self {
            Op::Put { value, .. } | Op::Cas { value, .. } => Some(value),
            Op::Get { .. } => None,
        }
    }
}

/// A key's value and the revision that wrote it, as a read returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: String,
    pub mod_revision: i64,
}

/// What the store answered to a request that completed; must match the [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `revision` is the write's own revision.
    Put { revision: i64 },
    /// `found` is `None` when the key was absent; `revision` is the header's.
    Get { found: Option<Found>, revision: i64 },
    /// `revision` is the header's: the write's own when it succeeded.
    Cas { succeeded: bool, revision: i64 },
}

/// How a request ended, which decides what the checker may assume about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The store answered.
    Ok(Answer),
    /// Definitely never took effect (e.g. rejected before it was sent).
    Failed,
    /// Timed out or the store was unavailable: it may have taken effect at any
    /// point after its invocation, or never.
    Unknown,
}

/// One request as a client saw it, with its timing for the real-time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub op: Op,
    /// Since the run's start.
    pub invoked: Duration,
    /// Since the run's start; required for [`Outcome::Ok`], ignored otherwise.
    pub completed: Option<Duration>,
    pub outcome: Outcome,
}

impl Operation {
    /// The answer, when the store gave one.
    fn answer(&self) -> Option<&Answer> {
        match &self.outcome {
            Outcome::Ok(answer) => Some(answer),
            Outcome::Failed | Outcome::Unknown => None,
        }
    }

    /// The revision the store answered with, when it answered.
    fn revision(&self) -> Option<i64> {
        self.answer().map(|answer| match answer {
            Answer::Put { revision }
            | Answer::Get { revision, .. }
            | Answer::Cas { revision, .. } => *revision,
        })
    }

    /// Whether the store acknowledged that this request changed the key.
    fn acknowledged_write(&self) -> bool {
        matches!(
            self.answer(),
            Some(
                Answer::Put { .. }
                    | Answer::Cas {
                        succeeded: true,
                        ..
                    }
            )
        )
    }

    /// Whether this request may have changed the key: acknowledged, or unknown.
    fn possible_write(&self) -> bool {
        self.acknowledged_write()
            || (self.outcome == Outcome::Unknown && self.op.written_value().is_some())
    }
}

/// Collects operations from many client tasks at once; the clock starts when
/// it is created so that every client measures from the same instant.
#[derive(Debug)]
pub struct History {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// Starts the run's clock.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
        }
    }

    /// The time since the run started, for `invoked` and `completed`.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Adds a finished (or abandoned) operation.
    pub fn record(&self, operation: Operation) {
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(operation);
    }

    /// A copy of everything recorded so far, in invocation order.
    pub fn operations(&self) -> Vec<Operation> {
        let mut operations = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        operations.sort_by_key(|operation| (operation.invoked, operation.client));
        operations
    }
}

/// One event a watcher received; `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: i64,
    pub key: String,
    pub value: Option<String>,
}

/// What the caller knows about the run that the history cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Steps the linearizability search may take per key before it reports
    /// the key undecided instead of running on.
    pub search_budget: u64,
    /// The workload was the only writer of the store, so the watched
    /// revisions must have no gaps and every watched key must be the workload's.
    pub sole_writer: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            search_budget: 5_000_000,
            sole_writer: false,
        }
    }
}

/// Which property a [`Violation`] breaks, so tests and callers can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationKind {
    /// The record itself is inconsistent (an answer of the wrong kind, an ok
    /// operation without a completion time, a completion before the invocation).
    Malformed,
    /// No order of a key's operations fits a register.
    NotLinearizable,
    /// An operation answered with a lower revision than one that finished before it started.
    RevisionWentBack,
    /// Two acknowledged writes share a revision.
    DuplicateRevision,
    /// A read returned a value written after the revision in its own header.
    ModRevisionAheadOfHeader,
    /// A read returned a value with a different revision than its write was acknowledged at.
    ModRevisionMismatch,
    /// The watcher received the same event (or the same write) more than once.
    WatchDuplicate,
    /// The watcher received a lower revision after a higher one.
    WatchOutOfOrder,
    /// An acknowledged write never reached the watcher.
    WatchMissedWrite,
    /// An acknowledged write reached the watcher at another revision.
    WatchWrongRevision,
    /// The watcher received something no operation could have written.
    WatchUnwritten,
    /// Revisions are missing between the watcher's first and last event.
    WatchGap,
}

/// One broken property, explained well enough to start debugging from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub explanation: String,
}

/// How many operations a key had, for the caller's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySummary {
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Steps the linearizability search took, to see how close it came to the budget.
    pub search_steps: u64,
}

/// The verdict on a whole history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub keys: BTreeMap<String, KeySummary>,
    /// How many watch events were checked, when a watch was given.
    pub watch_events: Option<usize>,
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of budget, each with where it had got to.
    pub undecided: Vec<String>,
}

impl Report {
    /// Whether the history is known to be correct: no violations, nothing undecided.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }

    /// The violations of one kind, for tests and for summaries.
    pub fn of_kind(&self, kind: ViolationKind) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(move |violation| violation.kind == kind)
    }
}

/// Violations of one kind shown in full before the rest are only counted.
const SHOWN_PER_KIND: usize = 10;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = |count: fn(&KeySummary) -> usize| self.keys.values().map(count).sum::<usize>();
        write!(
            f,
            "{} operations on {} keys ({} ok, {} unknown, {} failed)",
            total(|key| key.operations),
            self.keys.len(),
            total(|key| key.ok),
            total(|key| key.unknown),
            total(|key| key.failed),
        )?;
        if let Some(events) = self.watch_events {
            write!(f, ", {events} watch events")?;
        }
        if self.passed() {
            return write!(f, ": ok");
        }
        write!(
            f,
            ": {} violations, {} keys undecided",
            self.violations.len(),
            self.undecided.len()
        )?;
        let mut by_kind: BTreeMap<ViolationKind, Vec<&Violation>> = BTreeMap::new();
        for violation in &self.violations {
            by_kind.entry(violation.kind).or_default().push(violation);
        }
        for (kind, violations) in by_kind {
            for violation in violations.iter().take(SHOWN_PER_KIND) {
                write!(f, "\n\n[{kind:?}] {}", violation.explanation)?;
            }
            if violations.len() > SHOWN_PER_KIND {
                write!(
                    f,
                    "\n\n[{kind:?}] and {} more like these",
                    violations.len() - SHOWN_PER_KIND
                )?;
            }
        }
        for undecided in &self.undecided {
            write!(f, "\n\n[undecided] {undecided}")?;
        }
        Ok(())
    }
}

/// Checks a history (and optionally what a watcher from the first revision
/// received, in the order received) against every property the store promises.
pub fn check(
    history: &[Operation],
    watched: Option<&[WatchEvent]>,
    options: &CheckOptions,
) -> Report {
    let mut report = Report::default();
    let mut usable = Vec::with_capacity(history.len());
    for (index, operation) in history.iter().enumerate() {
        let summary = report
            .keys
            .entry(operation.op.key().to_owned())
            .or_default();
        summary.operations += 1;
        match &operation.outcome {
            Outcome::Ok(_) => summary.ok += 1,
            Outcome::Failed => summary.failed += 1,
            Outcome::Unknown => summary.unknown += 1,
        }
        match malformation(operation) {
            Some(problem) => report.violations.push(Violation {
                kind: ViolationKind::Malformed,
                explanation: format!("{problem}: {}", describe(index, operation)),
            }),
            None => usable.push(index),
        }
    }

    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &index in &usable {
        let operation = &history[index];
        let informative = match (&operation.op, &operation.outcome) {
            (_, Outcome::Failed) | (Op::Get { .. }, Outcome::Unknown) => false,
            (_, Outcome::Ok(_)) | (_, Outcome::Unknown) => true,
        };
        if informative {
            per_key.entry(operation.op.key()).or_default().push(index);
        }
    }
    for (key, indices) in per_key {
        let (verdict, steps) = linearizable::check_key(history, &indices, options.search_budget);
        if let Some(summary) = report.keys.get_mut(key) {
            summary.search_steps = steps;
        }
        match verdict {
            linearizable::Verdict::Linearizable => {}
            linearizable::Verdict::NotLinearizable(explanation) => {
                report.violations.push(Violation {
                    kind: ViolationKind::NotLinearizable,
                    explanation,
                })
            }
            linearizable::Verdict::Undecided(explanation) => report.undecided.push(explanation),
        }
    }

    revisions::check(history, &usable, &mut report.violations);
    if let Some(events) = watched {
        report.watch_events = Some(events.len());
        watch::check(
            history,
            &usable,
            events,
            options.sole_writer,
            &mut report.violations,
        );
    }
    report
}

/// Why an operation's record cannot be taken at its word, if it cannot.
fn malformation(operation: &Operation) -> Option<&'static str> {
    if let (Some(completed), Outcome::Ok(_)) = (operation.completed, &operation.outcome) {
        if completed < operation.invoked {
            return Some("completed before it was invoked");
        }
    }
    let Outcome::Ok(answer) = &operation.outcome else {
        return None;
    };
    if operation.completed.is_none() {
        return Some("answered but has no completion time");
    }
    let fits = matches!(
        (&operation.op, answer),
        (Op::Put { .. }, Answer::Put { .. })
            | (Op::Get { .. }, Answer::Get { .. })
            | (Op::Cas { .. }, Answer::Cas { .. })
    );
    (!fits).then_some("answer does not match the request")
}

/// A time since the run's start, precise enough to compare with neighbours.
fn seconds(time: Duration) -> String {
    format!("{:.6}s", time.as_secs_f64())
}

/// A value as shown in explanations; `None` is the key being absent.
fn shown(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    }
}

/// One line about an operation: its position in the history, client, times,
/// request and result.
fn describe(index: usize, operation: &Operation) -> String {
    let completed = match (&operation.outcome, operation.completed) {
        (Outcome::Unknown, _) | (_, None) => "?".to_owned(),
        (_, Some(completed)) => seconds(completed),
    };
    let request = match &operation.op {
        Op::Put { key, value } => format!("put {key:?} = {value:?}"),
        Op::Get { key } => format!("get {key:?}"),
        Op::Cas { key, expect, value } => {
            format!("cas {key:?} {} → {value:?}", shown(expect.as_deref()))
        }
    };
    let result = match &operation.outcome {
        Outcome::Failed => "failed".to_owned(),
        Outcome::Unknown => "unknown".to_owned(),
        Outcome::Ok(Answer::Put { revision }) => format!("ok at revision {revision}"),
        Outcome::Ok(Answer::Get { found, revision }) => match found {
            Some(found) => format!(
                "{:?} (mod revision {}) at revision {revision}",
                found.value, found.mod_revision
            ),
            None => format!("absent at revision {revision}"),
        },
        Outcome::Ok(Answer::Cas {
            succeeded,
            revision,
        }) => format!(
            "{} at revision {revision}",
            if *succeeded { "succeeded" } else { "refused" }
        ),
    };
    format!(
        "#{index} client {} [{} → {completed}] {request} → {result}",
        operation.client,
        seconds(operation.invoked)
    )
}

//! Revisions as the store's clock: an operation that starts after another
//! finished never sees an older revision, acknowledged writes never share one,
//! and a read never returns a value newer than its own header or with another
//! revision than its write was acknowledged at. With distinct write revisions,
//! the first property also makes real-time-ordered writes strictly increasing.

use std::collections::HashMap;
use std::time::Duration;

use super::{describe, Answer, Operation, Outcome, Violation, ViolationKind};

/// An acknowledged operation with the revision it answered with.
struct Timed {
    index: usize,
    invoked: Duration,
    completed: Duration,
    revision: i64,
}

/// Appends a violation for every revision property `history` breaks.
pub(super) fn check(history: &[Operation], usable: &[usize], violations: &mut Vec<Violation>) {
    let mut timed = Vec::new();
    for &index in usable {
        let operation = &history[index];
        if let (Some(completed), Some(revision)) = (operation.completed, operation.revision()) {
            timed.push(Timed {
                index,
                invoked: operation.invoked,
                completed,
                revision,
            });
        }
    }
    real_time_order(history, &mut timed, violations);
    distinct_write_revisions(history, usable, violations);
    read_revisions(history, usable, violations);
}

/// Sweeps operations by invocation, keeping the highest revision among those
/// that completed strictly before the current one was invoked.
fn real_time_order(history: &[Operation], timed: &mut [Timed], violations: &mut Vec<Violation>) {
    let mut by_completion: Vec<(Duration, i64, usize)> = timed
        .iter()
        .map(|operation| (operation.completed, operation.revision, operation.index))
        .collect();
    by_completion.sort_by_key(|&(completed, _, index)| (completed, index));
    timed.sort_by_key(|operation| (operation.invoked, operation.index));

    let mut finished = by_completion.iter().peekable();
    let mut highest: Option<(i64, usize)> = None;
    for operation in timed.iter() {
        while let Some(&&(completed, revision, index)) = finished.peek() {
            if completed >= operation.invoked {
                break;
            }
            if highest.is_none_or(|(highest, _)| revision > highest) {
                highest = Some((revision, index));
            }
            finished.next();
        }
        if let Some((revision, earlier)) = highest {
            if operation.revision < revision {
                violations.push(Violation {
                    kind: ViolationKind::RevisionWentBack,
                    explanation: format!(
                        "revision {} is lower than the {revision} of an operation that \
                         completed before it was invoked:\n  {}\n  {}",
                        operation.revision,
                        describe(earlier, &history[earlier]),
                        describe(operation.index, &history[operation.index]),
                    ),
                });
            }
        }
    }
}

/// Each acknowledged write is its own transaction, so its own revision.
fn distinct_write_revisions(
    history: &[Operation],
    usable: &[usize],
    violations: &mut Vec<Violation>,
) {
    let mut writers: HashMap<i64, usize> = HashMap::new();
    for &index in usable {
        let operation = &history[index];
        if !operation.acknowledged_write() {
            continue;
        }
        let Some(revision) = operation.revision() else {
            continue;
        };
        if let Some(&first) = writers.get(&revision) {
            violations.push(Violation {
                kind: ViolationKind::DuplicateRevision,
                explanation: format!(
                    "two acknowledged writes at revision {revision}:\n  {}\n  {}",
                    describe(first, &history[first]),
                    describe(index, &history[index]),
                ),
            });
        } else {
            writers.insert(revision, index);
        }
    }
}

/// A read's value was written at or before its header revision, at the
/// revision its write was acknowledged at (when exactly one request wrote it).
fn read_revisions(history: &[Operation], usable: &[usize], violations: &mut Vec<Violation>) {
    let mut writers: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for &index in usable {
        let operation = &history[index];
        if let Some(value) = operation.op.written_value() {
            if operation.possible_write() {
                writers
                    .entry((operation.op.key(), value))
                    .or_default()
                    .push(index);
            }
        }
    }
    for &index in usable {
        let operation = &history[index];
        let Outcome::Ok(Answer::Get {
            found: Some(found),
            revision,
        }) = &operation.outcome
        else {
            continue;
        };
        if found.mod_revision > *revision {
            violations.push(Violation {
                kind: ViolationKind::ModRevisionAheadOfHeader,
                explanation: format!(
                    "read a value written at revision {} in a response at revision {revision}:\n  {}",
                    found.mod_revision,
                    describe(index, operation),
                ),
            });
        }
        let Some([writer]) = writers
            .get(&(operation.op.key(), found.value.as_str()))
            .map(Vec::as_slice)
        else {
            continue;
        };
        let write = &history[*writer];
        if let Some(written_at) = write.revision().filter(|_| write.acknowledged_write()) {
            if written_at != found.mod_revision {
                violations.push(Violation {
                    kind: ViolationKind::ModRevisionMismatch,
                    explanation: format!(
                        "read a value at mod revision {} that was acknowledged at revision \
                         {written_at}:\n  {}\n  {}",
                        found.mod_revision,
                        describe(*writer, write),
                        describe(index, operation),
                    ),
                });
            }
        }
    }
}

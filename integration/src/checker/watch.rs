//! What a watcher from the first revision received against what the clients
//! wrote: each acknowledged write exactly once at its revision, nothing that
//! no request could have written, nothing twice, nothing out of order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{describe, shown, Operation, Violation, ViolationKind, WatchEvent};

/// Appends a violation for every way `events` disagree with `history`.
pub(super) fn check(
    history: &[Operation],
    usable: &[usize],
    events: &[WatchEvent],
    sole_writer: bool,
    violations: &mut Vec<Violation>,
) {
    let keys: HashSet<&str> = usable.iter().map(|&i| history[i].op.key()).collect();
    // Every request that carried a value, whatever became of it, to explain
    // an event that matches only a failed or refused one.
    let mut requests: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for &index in usable {
        let operation = &history[index];
        if let Some(value) = operation.op.written_value() {
            requests
                .entry((operation.op.key(), value))
                .or_default()
                .push(index);
        }
    }

    let mut first_seen: HashMap<(i64, &str), usize> = HashMap::new();
    let mut revisions_of_write: HashMap<(&str, &str), BTreeSet<i64>> = HashMap::new();
    let mut previous: Option<(usize, &WatchEvent)> = None;
    for (position, event) in events.iter().enumerate() {
        if let Some(&first) = first_seen.get(&(event.revision, event.key.as_str())) {
            violations.push(Violation {
                kind: ViolationKind::WatchDuplicate,
                explanation: format!(
                    "the watcher received {} as event {position} and already as event {first}",
                    describe_event(event)
                ),
            });
        } else {
            first_seen.insert((event.revision, &event.key), position);
        }
        if let Some((before, earlier)) = previous {
            if event.revision < earlier.revision {
                violations.push(Violation {
                    kind: ViolationKind::WatchOutOfOrder,
                    explanation: format!(
                        "the watcher received {} as event {position}, after {} as event {before}",
                        describe_event(event),
                        describe_event(earlier)
                    ),
                });
            }
        }
        previous = Some((position, event));

        if !keys.contains(event.key.as_str()) {
            if sole_writer {
                violations.push(Violation {
                    kind: ViolationKind::WatchUnwritten,
                    explanation: format!(
                        "the watcher received {} on a key no operation used, \
                         though the workload was the only writer",
                        describe_event(event)
                    ),
                });
            }
            continue;
        }
        let Some(value) = event.value.as_deref() else {
            violations.push(Violation {
                kind: ViolationKind::WatchUnwritten,
                explanation: format!(
                    "the watcher received {}, but no operation deletes",
                    describe_event(event)
                ),
            });
            continue;
        };
        let requested = requests
            .get(&(event.key.as_str(), value))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if requested
            .iter()
            .any(|&index| history[index].possible_write())
        {
            revisions_of_write
                .entry((&event.key, value))
                .or_default()
                .insert(event.revision);
            continue;
        }
        let mut explanation = format!(
            "the watcher received {}, which no request that may have taken effect wrote",
            describe_event(event)
        );
        for &index in requested {
            explanation.push_str(&format!("\n  {}", describe(index, &history[index])));
        }
        violations.push(Violation {
            kind: ViolationKind::WatchUnwritten,
            explanation,
        });
    }

    for (&(key, value), indices) in &requests {
        let writers: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&index| history[index].possible_write())
            .collect();
        let seen_at = revisions_of_write.get(&(key, value));
        let times_seen = seen_at.map_or(0, BTreeSet::len);
        if times_seen > writers.len() {
            let mut explanation = format!(
                "the watcher received {key:?} = {value:?} at revisions {:?}, \
                 more often than it was written:",
                seen_at.into_iter().flatten().collect::<Vec<_>>()
            );
            for &index in &writers {
                explanation.push_str(&format!("\n  {}", describe(index, &history[index])));
            }
            violations.push(Violation {
                kind: ViolationKind::WatchDuplicate,
                explanation,
            });
        }
        for &index in &writers {
            let write = &history[index];
            if !write.acknowledged_write() {
                continue;
            }
            let Some(revision) = write.revision() else {
                continue;
            };
            if seen_at.is_some_and(|seen| seen.contains(&revision)) {
                continue;
            }
            let (kind, explanation) = match seen_at {
                Some(seen) => (
                    ViolationKind::WatchWrongRevision,
                    format!(
                        "an acknowledged write reached the watcher at revisions {:?} \
                         instead of {revision}:\n  {}",
                        seen.iter().collect::<Vec<_>>(),
                        describe(index, write)
                    ),
                ),
                None => (
                    ViolationKind::WatchMissedWrite,
                    format!(
                        "an acknowledged write never reached the watcher:\n  {}",
                        describe(index, write)
                    ),
                ),
            };
            violations.push(Violation { kind, explanation });
        }
    }

    if sole_writer {
        gaps(events, violations);
    }
}

/// With no other writer, every revision from the first event's to the last's
/// was written by the workload, so the watcher must have seen each.
fn gaps(events: &[WatchEvent], violations: &mut Vec<Violation>) {
    let revisions: BTreeSet<i64> = events.iter().map(|event| event.revision).collect();
    for (earlier, later) in revisions.iter().zip(revisions.iter().skip(1)) {
        let (from, to) = (earlier + 1, later - 1);
        let range = match to - from {
            ..0 => continue,
            0 => format!("revision {from}"),
            _ => format!("revisions {from} to {to}"),
        };
        violations.push(Violation {
            kind: ViolationKind::WatchGap,
            explanation: format!(
                "the watcher received no event for {range}, though the workload was the only writer"
            ),
        });
    }
}

/// One event as shown in explanations.
fn describe_event(event: &WatchEvent) -> String {
    match &event.value {
        Some(_) => format!(
            "put {:?} = {} at revision {}",
            event.key,
            shown(event.value.as_deref()),
            event.revision
        ),
        None => format!("delete {:?} at revision {}", event.key, event.revision),
    }
}

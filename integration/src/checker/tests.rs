use std::time::{Duration, Instant};

use super::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn put(client: usize, key: &str, value: &str, span: (u64, u64), revision: i64) -> Operation {
    Operation {
        client,
        op: Op::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        },
        invoked: ms(span.0),
        completed: Some(ms(span.1)),
        outcome: Outcome::Ok(Answer::Put { revision }),
    }
}

fn unknown_put(client: usize, key: &str, value: &str, invoked: u64) -> Operation {
    Operation {
        client,
        op: Op::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        },
        invoked: ms(invoked),
        completed: None,
        outcome: Outcome::Unknown,
    }
}

/// `found` is the value and its mod revision; `revision` the header's.
fn get(
    client: usize,
    key: &str,
    found: Option<(&str, i64)>,
    span: (u64, u64),
    revision: i64,
) -> Operation {
    Operation {
        client,
        op: Op::Get {
            key: key.to_owned(),
        },
        invoked: ms(span.0),
        completed: Some(ms(span.1)),
        outcome: Outcome::Ok(Answer::Get {
            found: found.map(|(value, mod_revision)| Found {
                value: value.to_owned(),
                mod_revision,
            }),
            revision,
        }),
    }
}

fn cas(
    client: usize,
    key: &str,
    change: (Option<&str>, &str),
    span: (u64, u64),
    succeeded: bool,
    revision: i64,
) -> Operation {
    Operation {
        client,
        op: Op::Cas {
            key: key.to_owned(),
            expect: change.0.map(str::to_owned),
            value: change.1.to_owned(),
        },
        invoked: ms(span.0),
        completed: Some(ms(span.1)),
        outcome: Outcome::Ok(Answer::Cas {
            succeeded,
            revision,
        }),
    }
}

fn event(revision: i64, key: &str, value: &str) -> WatchEvent {
    WatchEvent {
        revision,
        key: key.to_owned(),
        value: Some(value.to_owned()),
    }
}

fn check_alone(history: &[Operation]) -> Report {
    check(history, None, &CheckOptions::default())
}

fn kinds(report: &Report) -> Vec<ViolationKind> {
    report.violations.iter().map(|v| v.kind).collect()
}

/// Passes when the report found nothing, and shows the report otherwise.
fn assert_passes(report: &Report) {
    assert!(report.passed(), "{report}");
}

/// Asserts the report found exactly these kinds of violation, nothing undecided.
fn assert_fails_with(report: &Report, expected: &[ViolationKind]) {
    assert!(report.undecided.is_empty(), "{report}");
    assert_eq!(kinds(report), expected, "{report}");
}

#[test]
fn a_sequential_history_passes() {
    let history = vec![
        get(0, "k", None, (0, 1), 1),
        put(0, "k", "a", (2, 3), 2),
        get(1, "k", Some(("a", 2)), (4, 5), 2),
        cas(1, "k", (Some("a"), "b"), (6, 7), true, 3),
        cas(0, "k", (Some("a"), "c"), (8, 9), false, 3),
        get(0, "k", Some(("b", 3)), (10, 11), 3),
    ];
    let report = check_alone(&history);
    assert_passes(&report);
    assert_eq!(
        report.keys.get("k"),
        Some(&KeySummary {
            operations: 6,
            ok: 6,
            failed: 0,
            unknown: 0,
            search_steps: report.keys.get("k").map_or(0, |k| k.search_steps),
        })
    );
}

#[test]
fn a_get_concurrent_with_a_put_may_see_either_value() {
    for seen in [None, Some(("a", 2))] {
        let history = vec![
            put(0, "k", "a", (10, 20), 2),
            get(1, "k", seen, (12, 18), 2),
        ];
        assert_passes(&check_alone(&history));
    }
}

#[test]
fn a_stale_read_after_a_completed_put_fails() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        put(0, "k", "b", (2, 3), 3),
        get(1, "k", Some(("a", 2)), (4, 5), 3),
    ];
    let report = check_alone(&history);
    assert_fails_with(&report, &[ViolationKind::NotLinearizable]);
    let explanation = &report.violations[0].explanation;
    assert!(explanation.contains("key \"k\""), "{explanation}");
    assert!(explanation.contains("#2 client 1"), "{explanation}");
    assert!(
        explanation.contains("the register held \"b\""),
        "{explanation}"
    );
}

#[test]
fn a_lost_acknowledged_write_fails() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        put(1, "other", "x", (0, 1), 3),
        // The final read of every key once faults stopped.
        get(0, "k", None, (10, 11), 3),
        get(0, "other", Some(("x", 3)), (10, 11), 3),
    ];
    let report = check_alone(&history);
    assert_fails_with(&report, &[ViolationKind::NotLinearizable]);
    assert!(report.violations[0].explanation.contains("key \"k\""));
}

#[test]
fn an_unknown_put_that_took_effect_later_passes() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        unknown_put(1, "k", "b", 2),
        get(0, "k", Some(("a", 2)), (5, 6), 2),
        get(0, "k", Some(("b", 3)), (50, 51), 3),
    ];
    let report = check_alone(&history);
    assert_passes(&report);
    assert_eq!(report.keys.get("k").map(|k| k.unknown), Some(1));
}

#[test]
fn an_unknown_put_that_never_took_effect_passes() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        unknown_put(1, "k", "b", 2),
        get(0, "k", Some(("a", 2)), (50, 51), 2),
    ];
    assert_passes(&check_alone(&history));
}

#[test]
fn a_failed_put_seen_by_a_read_fails() {
    let mut failed = put(1, "k", "b", (2, 3), 0);
    failed.outcome = Outcome::Failed;
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        failed,
        get(0, "k", Some(("b", 3)), (5, 6), 3),
    ];
    let report = check_alone(&history);
    assert_fails_with(&report, &[ViolationKind::NotLinearizable]);
    assert_eq!(report.keys.get("k").map(|k| k.failed), Some(1));
}

#[test]
fn a_cas_that_succeeded_against_the_wrong_state_fails() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        cas(1, "k", (Some("z"), "b"), (2, 3), true, 3),
    ];
    let report = check_alone(&history);
    assert_fails_with(&report, &[ViolationKind::NotLinearizable]);
    let explanation = &report.violations[0].explanation;
    assert!(
        explanation.contains("expected \"z\" but the register held \"a\""),
        "{explanation}"
    );
}

#[test]
fn a_cas_refused_while_the_key_held_the_expected_value_fails() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        cas(1, "k", (Some("a"), "b"), (2, 3), false, 2),
    ];
    assert_fails_with(&check_alone(&history), &[ViolationKind::NotLinearizable]);
}

#[test]
fn a_cas_refused_only_because_an_unknown_put_took_effect_passes() {
    let mut history = vec![
        put(0, "k", "a", (0, 1), 2),
        unknown_put(1, "k", "x", 2),
        cas(0, "k", (Some("a"), "b"), (5, 6), false, 3),
    ];
    assert_passes(&check_alone(&history));
    history[1].outcome = Outcome::Failed;
    assert_fails_with(&check_alone(&history), &[ViolationKind::NotLinearizable]);
}

#[test]
fn two_cas_both_succeeding_from_the_same_expected_value_fail() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        cas(1, "k", (Some("a"), "b"), (2, 5), true, 3),
        cas(2, "k", (Some("a"), "c"), (2, 5), true, 4),
    ];
    assert_fails_with(&check_alone(&history), &[ViolationKind::NotLinearizable]);
}

#[test]
fn a_revision_going_backwards_across_real_time_ordered_operations_fails() {
    let history = vec![put(0, "a", "1", (0, 1), 5), put(1, "b", "2", (2, 3), 4)];
    let report = check_alone(&history);
    assert_fails_with(&report, &[ViolationKind::RevisionWentBack]);
    let explanation = &report.violations[0].explanation;
    assert!(
        explanation.contains("#0 client 0") && explanation.contains("#1 client 1"),
        "{explanation}"
    );
}

#[test]
fn concurrent_operations_may_answer_revisions_in_either_order() {
    let history = vec![
        put(0, "a", "1", (0, 10), 5),
        put(1, "b", "2", (2, 8), 4),
        get(2, "a", Some(("1", 5)), (3, 4), 5),
    ];
    assert_passes(&check_alone(&history));
}

#[test]
fn two_acknowledged_writes_at_one_revision_fail() {
    let history = vec![put(0, "a", "1", (0, 10), 5), put(1, "b", "2", (2, 8), 5)];
    assert_fails_with(&check_alone(&history), &[ViolationKind::DuplicateRevision]);
}

#[test]
fn a_read_newer_than_its_header_or_its_write_fails() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        get(1, "k", Some(("a", 3)), (2, 3), 2),
    ];
    assert_fails_with(
        &check_alone(&history),
        &[
            ViolationKind::ModRevisionAheadOfHeader,
            ViolationKind::ModRevisionMismatch,
        ],
    );
}

#[test]
fn an_answer_of_the_wrong_kind_is_reported_and_left_out() {
    let mut wrong = put(0, "k", "a", (0, 1), 2);
    wrong.outcome = Outcome::Ok(Answer::Cas {
        succeeded: true,
        revision: 2,
    });
    let report = check_alone(&[wrong]);
    assert_fails_with(&report, &[ViolationKind::Malformed]);
}

#[test]
fn a_search_out_of_budget_reports_the_key_undecided() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        put(0, "k", "b", (2, 3), 3),
        get(1, "k", Some(("a", 2)), (4, 5), 3),
    ];
    let options = CheckOptions {
        search_budget: 1,
        ..CheckOptions::default()
    };
    let report = check(&history, None, &options);
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(report.undecided.len(), 1, "{report}");
    assert!(!report.passed());
}

/// Two acknowledged puts, one unknown one, and what a watcher may see of them.
fn watched_history() -> Vec<Operation> {
    vec![
        put(0, "k", "a", (0, 1), 2),
        unknown_put(1, "k", "u", 2),
        put(0, "k", "b", (3, 4), 4),
    ]
}

#[test]
fn a_complete_watch_passes() {
    let events = [event(2, "k", "a"), event(4, "k", "b")];
    let report = check(&watched_history(), Some(&events), &CheckOptions::default());
    assert_passes(&report);
    assert_eq!(report.watch_events, Some(2));
}

#[test]
fn a_duplicate_watch_event_fails() {
    let events = [event(2, "k", "a"), event(2, "k", "a"), event(4, "k", "b")];
    let report = check(&watched_history(), Some(&events), &CheckOptions::default());
    assert_fails_with(&report, &[ViolationKind::WatchDuplicate]);
}

#[test]
fn a_write_watched_at_two_revisions_fails() {
    let events = [event(2, "k", "a"), event(3, "k", "a"), event(4, "k", "b")];
    let report = check(&watched_history(), Some(&events), &CheckOptions::default());
    assert_fails_with(&report, &[ViolationKind::WatchDuplicate]);
}

#[test]
fn watch_events_out_of_order_fail() {
    let events = [event(4, "k", "b"), event(2, "k", "a")];
    let report = check(&watched_history(), Some(&events), &CheckOptions::default());
    assert_fails_with(&report, &[ViolationKind::WatchOutOfOrder]);
}

#[test]
fn a_watch_missing_an_acknowledged_write_fails() {
    let events = [event(4, "k", "b")];
    let report = check(&watched_history(), Some(&events), &CheckOptions::default());
    assert_fails_with(&report, &[ViolationKind::WatchMissedWrite]);
    assert!(report.violations[0]
        .explanation
        .contains("put \"k\" = \"a\""));
}

#[test]
fn a_watch_with_an_acknowledged_write_at_another_revision_fails() {
    let events = [event(3, "k", "a"), event(4, "k", "b")];
    let report = check(&watched_history(), Some(&events), &CheckOptions::default());
    assert_fails_with(&report, &[ViolationKind::WatchWrongRevision]);
}

#[test]
fn a_watch_with_an_unknown_writes_event_passes() {
    let events = [event(2, "k", "a"), event(3, "k", "u"), event(4, "k", "b")];
    let options = CheckOptions {
        sole_writer: true,
        ..CheckOptions::default()
    };
    assert_passes(&check(&watched_history(), Some(&events), &options));
}

#[test]
fn a_watch_event_with_a_value_nobody_wrote_fails() {
    let events = [event(2, "k", "a"), event(3, "k", "x"), event(4, "k", "b")];
    let report = check(&watched_history(), Some(&events), &CheckOptions::default());
    assert_fails_with(&report, &[ViolationKind::WatchUnwritten]);
}

#[test]
fn a_watch_event_from_a_failed_write_fails() {
    let mut history = watched_history();
    let mut failed = put(2, "k", "f", (5, 6), 0);
    failed.outcome = Outcome::Failed;
    history.push(failed);
    let events = [event(2, "k", "a"), event(4, "k", "b"), event(5, "k", "f")];
    let report = check(&history, Some(&events), &CheckOptions::default());
    assert_fails_with(&report, &[ViolationKind::WatchUnwritten]);
    assert!(report.violations[0].explanation.contains("→ failed"));
}

#[test]
fn a_gap_in_watch_revisions_fails_only_when_the_workload_is_the_sole_writer() {
    let events = [event(2, "k", "a"), event(4, "k", "b")];
    let shared = CheckOptions::default();
    assert_passes(&check(&watched_history(), Some(&events), &shared));
    let sole = CheckOptions {
        sole_writer: true,
        ..CheckOptions::default()
    };
    let report = check(&watched_history(), Some(&events), &sole);
    assert_fails_with(&report, &[ViolationKind::WatchGap]);
    assert!(report.violations[0].explanation.contains("revision 3"));
}

#[test]
fn the_report_summarises_counts_and_lists_violations() {
    let history = vec![
        put(0, "k", "a", (0, 1), 2),
        unknown_put(1, "k", "b", 2),
        get(0, "k", None, (10, 11), 2),
    ];
    let text = check_alone(&history).to_string();
    assert!(
        text.starts_with("3 operations on 1 keys (2 ok, 1 unknown, 0 failed): 1 violations"),
        "{text}"
    );
    assert!(text.contains("[NotLinearizable] key \"k\""), "{text}");
}

#[test]
fn a_history_recorded_from_many_threads_comes_back_in_invocation_order() {
    let history = History::new();
    std::thread::scope(|scope| {
        for client in 0..4 {
            let history = &history;
            scope.spawn(move || {
                let invoked = history.elapsed();
                history.record(Operation {
                    client,
                    op: Op::Get { key: "k".into() },
                    invoked,
                    completed: Some(history.elapsed()),
                    outcome: Outcome::Unknown,
                });
            });
        }
    });
    let operations = history.operations();
    assert_eq!(operations.len(), 4);
    assert!(operations.windows(2).all(|w| w[0].invoked <= w[1].invoked));
}

/// A small deterministic generator, so a failing seed can be replayed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A history of `clients` clients doing `per_client` operations each on one
/// register that takes effect at a random instant inside each operation, so it
/// is linearizable by construction; also what a watcher would have received.
fn simulated_history(
    seed: u64,
    clients: usize,
    per_client: usize,
) -> (Vec<Operation>, Vec<WatchEvent>) {
    struct Planned {
        client: usize,
        invoked: Duration,
        takes_effect: Duration,
        completed: Duration,
        kind: u64,
        unknown: bool,
    }
    let mut random = SplitMix(seed);
    let mut planned = Vec::new();
    for client in 0..clients {
        let mut now = Duration::from_micros(random.below(100));
        for _ in 0..per_client {
            let invoked = now + Duration::from_micros(random.below(200));
            let takes_effect = invoked + Duration::from_micros(1 + random.below(500));
            let completed = takes_effect + Duration::from_micros(1 + random.below(500));
            planned.push(Planned {
                client,
                invoked,
                takes_effect,
                completed,
                kind: random.below(10),
                unknown: random.below(100) < 2,
            });
            now = completed;
        }
    }
    planned.sort_by_key(|plan| plan.takes_effect);

    let key = "register".to_owned();
    let mut value: Option<(String, i64)> = None;
    let mut revision = 1;
    let mut written: Vec<String> = Vec::new();
    let mut history = Vec::new();
    let mut events = Vec::new();
    for (serial, plan) in planned.into_iter().enumerate() {
        let fresh = format!("v{serial}");
        let (op, answer) = match plan.kind {
            0..=3 => {
                revision += 1;
                value = Some((fresh.clone(), revision));
                let op = Op::Put {
                    key: key.clone(),
                    value: fresh.clone(),
                };
                (op, Answer::Put { revision })
            }
            4..=7 => (
                Op::Get { key: key.clone() },
                Answer::Get {
                    found: value.as_ref().map(|(value, mod_revision)| Found {
                        value: value.clone(),
                        mod_revision: *mod_revision,
                    }),
                    revision,
                },
            ),
            _ => {
                let current = value.as_ref().map(|(value, _)| value.clone());
                let expect = match random.below(3) {
                    0 if !written.is_empty() => {
                        let back = random.below(written.len().min(5) as u64) as usize;
                        Some(written[written.len() - 1 - back].clone())
                    }
                    _ => current.clone(),
                };
                let succeeded = expect == current;
                if succeeded {
                    revision += 1;
                    value = Some((fresh.clone(), revision));
                }
                let op = Op::Cas {
                    key: key.clone(),
                    expect,
                    value: fresh.clone(),
                };
                (
                    op,
                    Answer::Cas {
                        succeeded,
                        revision,
                    },
                )
            }
        };
        let wrote = matches!(
            answer,
            Answer::Put { .. }
                | Answer::Cas {
                    succeeded: true,
                    ..
                }
        );
        if wrote {
            written.push(fresh.clone());
            events.push(WatchEvent {
                revision,
                key: key.clone(),
                value: Some(fresh.clone()),
            });
        }
        let outcome = if plan.unknown {
            Outcome::Unknown
        } else {
            Outcome::Ok(answer)
        };
        history.push(Operation {
            client: plan.client,
            op,
            invoked: plan.invoked,
            completed: Some(plan.completed),
            outcome,
        });
    }
    // Some unknown writes never took effect: these are extra requests whose
    // values nobody saw.
    for client in 0..clients {
        history.push(Operation {
            client,
            op: Op::Put {
                key: key.clone(),
                value: format!("lost{client}"),
            },
            invoked: Duration::from_micros(random.below(100_000)),
            completed: None,
            outcome: Outcome::Unknown,
        });
    }
    history.sort_by_key(|operation| operation.invoked);
    (history, events)
}

#[test]
fn a_random_linearizable_history_passes_quickly_and_fails_once_a_read_is_corrupted() {
    let (mut history, events) = simulated_history(7, 8, 250);
    assert!(history.len() >= 2000);
    let options = CheckOptions {
        sole_writer: true,
        ..CheckOptions::default()
    };

    let started = Instant::now();
    let report = check(&history, Some(&events), &options);
    let passing = started.elapsed();
    assert_passes(&report);
    eprintln!("{report}; checked in {passing:?}");
    assert!(passing < Duration::from_secs(5), "took {passing:?}");

    let read = corrupt_a_read(&mut history);

    let started = Instant::now();
    let report = check(&history, Some(&events), &options);
    let failing = started.elapsed();
    eprintln!("corrupted read #{read} found in {failing:?}");
    assert_fails_with(&report, &[ViolationKind::NotLinearizable]);
    assert!(failing < Duration::from_secs(5), "took {failing:?}");
}

/// Makes a read in the second half return a value that two real-time-ordered
/// writes had replaced before the read started, with its true mod revision
/// so that only linearizability can object; returns the read's index.
fn corrupt_a_read(history: &mut [Operation]) -> usize {
    let acknowledged_write = |operation: &Operation| {
        operation.acknowledged_write() && operation.op.written_value().is_some()
    };
    let (read, stale, stale_revision) = (history.len() / 2..history.len())
        .filter(|&read| {
            matches!(history[read].op, Op::Get { .. }) && history[read].answer().is_some()
        })
        .find_map(|read| {
            let start = history[read].invoked;
            let before: Vec<&Operation> = history
                .iter()
                .filter(|w| acknowledged_write(w) && w.completed.is_some_and(|c| c < start))
                .collect();
            before
                .iter()
                .find(|older| {
                    older
                        .completed
                        .is_some_and(|done| before.iter().any(|newer| newer.invoked > done))
                })
                .and_then(|older| {
                    Some((
                        read,
                        older.op.written_value()?.to_owned(),
                        older.revision()?,
                    ))
                })
        })
        .expect("the simulated history has a read after two ordered writes");
    if let Outcome::Ok(Answer::Get { found, .. }) = &mut history[read].outcome {
        *found = Some(Found {
            value: stale,
            mod_revision: stale_revision,
        });
    }
    read
}

/// Whether some order of `history` (one key) fits a register, by trying
/// every order that respects real time and every subset of unknown
/// operations: slow, but plainly the definition.
fn linearizable_by_brute_force(history: &[Operation]) -> bool {
    fn search(history: &[Operation], placed: &mut [bool], state: Option<&str>) -> bool {
        let must = |placed: &[bool], i: usize| !placed[i] && history[i].answer().is_some();
        if !(0..history.len()).any(|i| must(placed, i)) {
            return true;
        }
        for i in 0..history.len() {
            if placed[i] {
                continue;
            }
            let blocked = (0..history.len()).any(|j| {
                must(placed, j)
                    && history[j]
                        .completed
                        .is_some_and(|done| done < history[i].invoked)
            });
            if blocked {
                continue;
            }
            let operation = &history[i];
            let after = match (&operation.op, &operation.outcome) {
                (Op::Put { value, .. }, _) => Some(Some(value.as_str())),
                (Op::Get { .. }, Outcome::Ok(Answer::Get { found, .. })) => {
                    let seen = found.as_ref().map(|found| found.value.as_str());
                    (seen == state).then_some(state)
                }
                (
                    Op::Cas { expect, .. },
                    Outcome::Ok(Answer::Cas {
                        succeeded: false, ..
                    }),
                ) => (expect.as_deref() != state).then_some(state),
                (Op::Cas { expect, value, .. }, _) => {
                    (expect.as_deref() == state).then_some(Some(value.as_str()))
                }
                (Op::Get { .. }, _) => None,
            };
            if let Some(after) = after {
                placed[i] = true;
                let found = search(history, placed, after);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(history, &mut vec![false; history.len()], None)
}

/// A small random history on one key that may or may not be linearizable:
/// overlapping times, reads and expectations drawn from the values written.
fn small_random_history(random: &mut SplitMix) -> Vec<Operation> {
    let count = 2 + random.below(7) as usize;
    let mut values: Vec<String> = Vec::new();
    let mut history = Vec::new();
    for serial in 0..count {
        let invoked = random.below(20);
        let completed = invoked + 1 + random.below(8);
        let pick = |random: &mut SplitMix, values: &[String]| {
            let choice = random.below(values.len() as u64 + 1) as usize;
            values.get(choice).cloned()
        };
        let (op, answer) = match random.below(3) {
            0 => {
                let value = format!("v{serial}");
                values.push(value.clone());
                let op = Op::Put {
                    key: "k".into(),
                    value,
                };
                (op, Answer::Put { revision: 0 })
            }
            1 => {
                let found = pick(random, &values).map(|value| Found {
                    value,
                    mod_revision: 0,
                });
                (
                    Op::Get { key: "k".into() },
                    Answer::Get { found, revision: 0 },
                )
            }
            _ => {
                let value = format!("v{serial}");
                let expect = pick(random, &values);
                values.push(value.clone());
                let op = Op::Cas {
                    key: "k".into(),
                    expect,
                    value,
                };
                let succeeded = random.below(2) == 0;
                (
                    op,
                    Answer::Cas {
                        succeeded,
                        revision: 0,
                    },
                )
            }
        };
        let unknown = random.below(3) == 0 && !matches!(op, Op::Get { .. });
        history.push(Operation {
            client: serial,
            op,
            invoked: ms(invoked),
            completed: Some(ms(completed)),
            outcome: if unknown {
                Outcome::Unknown
            } else {
                Outcome::Ok(answer)
            },
        });
    }
    history
}

#[test]
fn the_search_agrees_with_trying_every_order_on_small_random_histories() {
    let mut random = SplitMix(42);
    let (mut linearizable, mut not) = (0, 0);
    for round in 0..5000 {
        let history = small_random_history(&mut random);
        let expected = linearizable_by_brute_force(&history);
        let report = check_alone(&history);
        assert!(report.undecided.is_empty(), "{report}");
        let found = report
            .of_kind(ViolationKind::NotLinearizable)
            .next()
            .is_none();
        assert_eq!(found, expected, "round {round}: {history:#?}\n{report}");
        if expected {
            linearizable += 1;
        } else {
            not += 1;
        }
    }
    // Both verdicts must be common for the comparison to mean anything.
    assert!(linearizable > 1000 && not > 1000, "{linearizable} / {not}");
}

/// The peak resident memory of this process so far, in KiB (Linux only).
fn peak_resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A search's memo size in a line.
fn shown_footprint(footprint: &linearizable::Footprint) -> String {
    format!(
        "{} steps, {} configurations under {} keys, {} sets of unknown operations, \
         memo {} KiB ({} bytes a configuration)",
        footprint.steps,
        footprint.configurations,
        footprint.keys,
        footprint.unknown_sets,
        footprint.bytes / 1024,
        footprint.bytes / footprint.configurations.max(1),
    )
}

/// About what a ten-minute nemesis run records on one key: 8 clients ×
/// 3,200 operations, ~2 % of them unknown. Memory is reported two ways: the
/// memo's own size (exact, the same on every run) and the process's peak
/// resident size (only meaningful with this test run alone, since tests
/// share the process).
#[test]
fn a_long_history_checks_in_seconds_and_a_stale_read_in_it_is_still_found() {
    let (mut history, _) = simulated_history(11, 8, 3200);
    assert!(history.len() > 25_000);
    let budget = CheckOptions::default().search_budget;
    let peak_before = peak_resident_kib();

    let started = Instant::now();
    let report = check_alone(&history);
    let passing = started.elapsed();
    assert_passes(&report);
    let peak_passing = peak_resident_kib();
    let footprint = linearizable::footprint(&history, budget);
    eprintln!(
        "{report}; checked in {passing:?}; {}; peak resident {peak_before:?} → {peak_passing:?} KiB",
        shown_footprint(&footprint)
    );
    assert!(passing < Duration::from_secs(10), "took {passing:?}");

    let read = corrupt_a_read(&mut history);
    let started = Instant::now();
    let report = check_alone(&history);
    let failing = started.elapsed();
    assert_fails_with(&report, &[ViolationKind::NotLinearizable]);
    let footprint = linearizable::footprint(&history, budget);
    eprintln!(
        "corrupted read #{read} found in {failing:?}; {}; peak resident {:?} KiB",
        shown_footprint(&footprint),
        peak_resident_kib()
    );
    assert!(failing < Duration::from_secs(10), "took {failing:?}");
}

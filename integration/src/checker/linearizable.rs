//! Whether one key's operations fit a register, by a depth-first search for
//! a linearization over a time-ordered list of call and return events, with
//! the visited (linearized set, register value) pairs remembered so that no
//! configuration is explored twice.
//!
//! Operations with an unknown outcome have no return event: they may be
//! linearized anywhere after their invocation or not at all, and the search
//! is done once every acknowledged operation is placed. Placing an unknown
//! operation only removes choices, so a configuration that differs from a
//! visited one only by more unknown operations placed is skipped too.
//!
//! Three more shortcuts keep the search small, each safe because any
//! linearization can be rearranged to take it:
//! - an operation that leaves the register as it is (a read, a refused
//!   transaction) and fits now can go first: moving it earlier changes no
//!   value anyone sees, so when one fits nothing else is tried in its place;
//! - an unknown operation followed directly by an unconditional write (or by
//!   nothing) had no visible effect, and leaving it out fits just as well, so
//!   the search never places such a pair; whether the last operation placed
//!   was unknown is therefore part of a configuration, as it decides what may
//!   come next. For the same reason an unknown operation is only placed when
//!   something that may follow it needs the value it leaves;
//! - unknown operations with the same effect are interchangeable, so of
//!   those that could go next only the one invoked last is tried: the
//!   earlier ones can go anywhere it could.

use std::collections::HashMap;
use std::time::Duration;

use super::{describe, seconds, shown, Answer, Op, Operation, Outcome};

/// The result of searching one key.
pub(super) enum Verdict {
    Linearizable,
    NotLinearizable(String),
    Undecided(String),
}

/// A register value as the search sees it: values that no read returns and no
/// transaction compares against behave alike, so they share one id.
type ValueId = u32;
const ABSENT: ValueId = 0;
const UNOBSERVED: ValueId = 1;

/// What an operation does to the register, and when it is allowed to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Effect {
    Write(ValueId),
    Read(ValueId),
    CompareAndWrite { expect: ValueId, value: ValueId },
    CompareRefused { expect: ValueId },
}

impl Effect {
    /// Whether the register afterwards does not depend on before.
    fn overwrites(self) -> bool {
        matches!(self, Effect::Write(_))
    }

    /// Whether the register afterwards is what it was before.
    fn preserves(self) -> bool {
        matches!(self, Effect::Read(_) | Effect::CompareRefused { .. })
    }

    /// The register after the operation, or `None` if it cannot happen now.
    fn apply(self, state: ValueId) -> Option<ValueId> {
        match self {
            Effect::Write(value) => Some(value),
            Effect::Read(seen) => (seen == state).then_some(state),
            Effect::CompareAndWrite { expect, value } => (expect == state).then_some(value),
            Effect::CompareRefused { expect } => (expect != state).then_some(state),
        }
    }
}

/// An operation as the search handles it. Acknowledged ones come first (by
/// invocation), then unknown ones (by invocation), so each kind has its own
/// bit set and event list.
struct Candidate {
    history_index: usize,
    invoked: Duration,
    /// `None` for an unknown outcome: it never has to have happened.
    completed: Option<Duration>,
    effect: Effect,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// Events still to be placed, doubly linked so that placing an operation and
/// taking it back are both constant time. Node 0 is the head.
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    /// Links `nodes` in the given order after the head.
    fn new(size: usize, nodes: impl Iterator<Item = usize>) -> Self {
        let mut links = Links {
            next: vec![NIL; size],
            prev: vec![NIL; size],
        };
        let mut last = HEAD;
        for node in nodes {
            links.next[last] = node;
            links.prev[node] = last;
            last = node;
        }
        links
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Undoes the matching `unlink`; links must be restored in reverse order.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }
}

/// Acknowledged operation `op`'s call node in the acknowledged list.
fn call_node(op: usize) -> usize {
    1 + 2 * op
}

/// Acknowledged operation `op`'s return node in the acknowledged list.
fn return_node(op: usize) -> usize {
    2 + 2 * op
}

/// The acknowledged operation a node belongs to, and whether it is the call.
fn node_op(node: usize) -> (usize, bool) {
    ((node - 1) / 2, node % 2 == 1)
}

/// A set of operations as bits.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    fn contains(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .all(|(mine, theirs)| mine & !theirs == 0)
    }

    /// A compact form of a set that is mostly a full prefix: the number of
    /// leading full words, then the rest without trailing empty words.
    fn prefix_compressed(&self) -> (u32, Box<[u64]>) {
        let full = self.0.iter().take_while(|word| **word == u64::MAX).count();
        let rest = &self.0[full..];
        let used = rest.len() - rest.iter().rev().take_while(|word| **word == 0).count();
        (full as u32, rest[..used].into())
    }
}

/// The part of a configuration that must match exactly for one to stand for another.
#[derive(PartialEq, Eq, Hash)]
struct MemoKey {
    full_words: u32,
    rest: Box<[u64]>,
    state: ValueId,
}

/// The rest of a visited configuration: the unknown operations placed, and
/// whether the last operation placed was unknown.
struct Visited {
    unknown: Bits,
    after_unknown: bool,
}

impl Visited {
    /// Whether every way to go on from `other` is open from here too.
    fn covers(&self, other: &Visited) -> bool {
        self.unknown.is_subset_of(&other.unknown) && (!self.after_unknown || other.after_unknown)
    }
}

/// An operation placed on the current path, with the register before it.
struct Placed {
    op: usize,
    state_before: ValueId,
    /// Placed as the one operation to try here (it leaves the register as it
    /// was), so once it is taken back there is nothing else to try here either.
    only_choice: bool,
}

/// Where the search got furthest, kept to explain a failure.
struct Furthest {
    acknowledged_placed: usize,
    path: Vec<usize>,
    state: ValueId,
}

/// What the search does next.
#[derive(Clone, Copy)]
enum Phase {
    /// Look for an operation that fits and leaves the register as it is.
    Preserving,
    /// Try the acknowledged operation at this node of the acknowledged list.
    Acknowledged(usize),
    /// Try the unknown operation at this node of the unknown list, if it was
    /// invoked by the deadline (the earliest completion still to place).
    Unknown(usize, Duration),
    /// Take back the last operation placed.
    Backtrack,
}

/// The search's whole state for one key.
struct Search<'a> {
    candidates: &'a [Candidate],
    acknowledged: usize,
    acknowledged_events: Links,
    /// Unknown operation `acknowledged + j` is node `1 + j`.
    unknown_events: Links,
    /// For each unknown operation, the next one invoked with the same effect.
    same_effect_later: Vec<Option<usize>>,
    placed_acknowledged: Bits,
    placed_unknown: Bits,
    acknowledged_placed: usize,
    /// Values needed by what may go next; see `note_wanted`.
    wanted: Vec<ValueId>,
    wanted_anything_else: bool,
    memo: HashMap<MemoKey, Vec<Visited>>,
    state: ValueId,
    path: Vec<Placed>,
    furthest: Furthest,
}

/// Searches one key's operations (indices into `history`, all on one key, none
/// failed, no unknown reads) within `budget` steps; also returns the steps taken.
pub(super) fn check_key(history: &[Operation], indices: &[usize], budget: u64) -> (Verdict, u64) {
    let (candidates, acknowledged) = candidates(history, indices);
    let mut search = Search::new(&candidates, acknowledged);
    let (found, steps) = search.run(budget);
    let verdict = match found {
        Some(true) => Verdict::Linearizable,
        Some(false) => Verdict::NotLinearizable(explain(
            history,
            &candidates,
            acknowledged,
            &search.furthest,
            "no order of them fits a register",
        )),
        None => Verdict::Undecided(explain(
            history,
            &candidates,
            acknowledged,
            &search.furthest,
            &format!(
                "after {budget} steps the search had not found whether an order fits a register"
            ),
        )),
    };
    (verdict, steps)
}

impl<'a> Search<'a> {
    fn new(candidates: &'a [Candidate], acknowledged: usize) -> Self {
        let mut order: Vec<(Duration, bool, usize)> = Vec::with_capacity(2 * acknowledged);
        for (op, candidate) in candidates[..acknowledged].iter().enumerate() {
            // At equal times the call sorts first: the two are then concurrent.
            order.push((candidate.invoked, false, call_node(op)));
            order.push((
                candidate.completed.unwrap_or(Duration::MAX),
                true,
                return_node(op),
            ));
        }
        order.sort_unstable();
        let acknowledged_events = Links::new(
            1 + 2 * acknowledged,
            order.into_iter().map(|(_, _, node)| node),
        );
        let unknown = candidates.len() - acknowledged;
        let unknown_events = Links::new(1 + unknown, 1..=unknown);

        let mut same_effect_later = vec![None; unknown];
        let mut latest: HashMap<Effect, usize> = HashMap::new();
        for op in (acknowledged..candidates.len()).rev() {
            same_effect_later[op - acknowledged] = latest.insert(candidates[op].effect, op);
        }

        let placed_acknowledged = Bits::new(acknowledged);
        let placed_unknown = Bits::new(unknown);
        let mut memo = HashMap::new();
        let (full_words, rest) = placed_acknowledged.prefix_compressed();
        memo.insert(
            MemoKey {
                full_words,
                rest,
                state: ABSENT,
            },
            vec![Visited {
                unknown: placed_unknown.clone(),
                after_unknown: false,
            }],
        );
        Search {
            candidates,
            acknowledged,
            acknowledged_events,
            unknown_events,
            same_effect_later,
            placed_acknowledged,
            placed_unknown,
            acknowledged_placed: 0,
            wanted: Vec::new(),
            wanted_anything_else: false,
            memo,
            state: ABSENT,
            path: Vec::new(),
            furthest: Furthest {
                acknowledged_placed: 0,
                path: Vec::new(),
                state: ABSENT,
            },
        }
    }

    /// Whether every acknowledged operation fits (`None`: out of budget), and
    /// the steps taken.
    fn run(&mut self, budget: u64) -> (Option<bool>, u64) {
        let mut phase = Phase::Preserving;
        let mut steps = 0;
        loop {
            if self.acknowledged_placed == self.acknowledged {
                return (Some(true), steps);
            }
            steps += 1;
            if steps > budget {
                return (None, steps);
            }
            phase = match phase {
                Phase::Preserving => match self.preserving_fit() {
                    Some(op) if self.place(op, true) => Phase::Preserving,
                    // What fits here leads only where the search has been.
                    Some(_) => Phase::Backtrack,
                    None => Phase::Acknowledged(self.acknowledged_events.next[HEAD]),
                },
                Phase::Acknowledged(node) => match (node != NIL).then(|| node_op(node)) {
                    Some((op, true)) => {
                        let next = Phase::Acknowledged(self.acknowledged_events.next[node]);
                        if self.may_go_next(op) && self.place(op, false) {
                            Phase::Preserving
                        } else {
                            next
                        }
                    }
                    Some((op, false)) => {
                        let deadline = self.candidates[op].completed.unwrap_or(Duration::MAX);
                        self.note_wanted(deadline);
                        Phase::Unknown(self.unknown_events.next[HEAD], deadline)
                    }
                    None => {
                        self.note_wanted(Duration::MAX);
                        Phase::Unknown(self.unknown_events.next[HEAD], Duration::MAX)
                    }
                },
                Phase::Unknown(mut node, deadline) => {
                    // Skipping what cannot help is cheap, so it is not a step.
                    let mut op = None;
                    while node != NIL {
                        let candidate = self.acknowledged + node - 1;
                        if self.candidates[candidate].invoked > deadline {
                            break;
                        }
                        if self.helps(candidate)
                            && self.may_go_next(candidate)
                            && !self.stands_in(candidate, deadline)
                        {
                            op = Some(candidate);
                            break;
                        }
                        node = self.unknown_events.next[node];
                    }
                    match op {
                        Some(op) if self.place(op, false) => Phase::Preserving,
                        Some(_) => Phase::Unknown(self.unknown_events.next[node], deadline),
                        None => Phase::Backtrack,
                    }
                }
                Phase::Backtrack => {
                    let Some(placed) = self.take_back() else {
                        return (Some(false), steps);
                    };
                    if placed.only_choice {
                        Phase::Backtrack
                    } else if placed.op < self.acknowledged {
                        Phase::Acknowledged(self.acknowledged_events.next[call_node(placed.op)])
                    } else {
                        let node = 1 + placed.op - self.acknowledged;
                        let deadline = self.deadline();
                        self.note_wanted(deadline);
                        Phase::Unknown(self.unknown_events.next[node], deadline)
                    }
                }
            };
        }
    }

    /// The first acknowledged operation that may go next, fits, and leaves
    /// the register as it is.
    fn preserving_fit(&self) -> Option<usize> {
        let mut node = self.acknowledged_events.next[HEAD];
        while node != NIL {
            let (op, is_call) = node_op(node);
            if !is_call {
                return None;
            }
            let effect = self.candidates[op].effect;
            if effect.preserves() && effect.apply(self.state).is_some() {
                return Some(op);
            }
            node = self.acknowledged_events.next[node];
        }
        None
    }

    /// The earliest completion among the acknowledged operations not placed.
    fn deadline(&self) -> Duration {
        let mut node = self.acknowledged_events.next[HEAD];
        while node != NIL {
            let (op, is_call) = node_op(node);
            if !is_call {
                return self.candidates[op].completed.unwrap_or(Duration::MAX);
            }
            node = self.acknowledged_events.next[node];
        }
        Duration::MAX
    }

    /// Whether the last operation placed was unknown.
    fn after_unknown(&self) -> bool {
        self.path
            .last()
            .is_some_and(|last| last.op >= self.acknowledged)
    }

    /// Whether `op` is not ruled out by the last operation placed.
    fn may_go_next(&self, op: usize) -> bool {
        !(self.after_unknown() && self.candidates[op].effect.overwrites())
    }

    /// Notes which register values the operations that may go next need, so
    /// that only unknown operations leaving one of them are tried. Called
    /// only where no read or refused transaction fits.
    fn note_wanted(&mut self, deadline: Duration) {
        self.wanted.clear();
        self.wanted_anything_else = false;
        let mut node = self.acknowledged_events.next[HEAD];
        while node != NIL {
            let (op, is_call) = node_op(node);
            if !is_call {
                break;
            }
            match self.candidates[op].effect {
                Effect::Read(value) | Effect::CompareAndWrite { expect: value, .. } => {
                    self.wanted.push(value)
                }
                // It does not fit, so the register holds what it expects.
                Effect::CompareRefused { .. } => self.wanted_anything_else = true,
                Effect::Write(_) => {}
            }
            node = self.acknowledged_events.next[node];
        }
        let mut node = self.unknown_events.next[HEAD];
        while node != NIL {
            let candidate = &self.candidates[self.acknowledged + node - 1];
            if candidate.invoked > deadline {
                break;
            }
            if let Effect::CompareAndWrite { expect, .. } = candidate.effect {
                self.wanted.push(expect);
            }
            node = self.unknown_events.next[node];
        }
    }

    /// Whether placing unknown `op` now could help: it fits and leaves a
    /// value that some operation that may follow needs.
    fn helps(&self, op: usize) -> bool {
        match self.candidates[op].effect.apply(self.state) {
            Some(value) if value != self.state => {
                self.wanted_anything_else || self.wanted.contains(&value)
            }
            _ => false,
        }
    }

    /// Whether unknown `op` need not be tried because a later one with the
    /// same effect may go next instead.
    fn stands_in(&self, op: usize, deadline: Duration) -> bool {
        self.same_effect_later[op - self.acknowledged].is_some_and(|later| {
            !self.placed_unknown.contains(later - self.acknowledged)
                && self.candidates[later].invoked <= deadline
        })
    }

    /// Places `op` if it fits and leads somewhere not yet covered.
    fn place(&mut self, op: usize, only_choice: bool) -> bool {
        let effect = self.candidates[op].effect;
        let Some(after) = effect.apply(self.state) else {
            return false;
        };
        let is_unknown = op >= self.acknowledged;
        if is_unknown {
            self.placed_unknown.set(op - self.acknowledged);
        } else {
            self.placed_acknowledged.set(op);
        }
        let visiting = Visited {
            unknown: self.placed_unknown.clone(),
            after_unknown: is_unknown,
        };
        let (full_words, rest) = self.placed_acknowledged.prefix_compressed();
        let seen = self
            .memo
            .entry(MemoKey {
                full_words,
                rest,
                state: after,
            })
            .or_default();
        if seen.iter().any(|visited| visited.covers(&visiting)) {
            if is_unknown {
                self.placed_unknown.clear(op - self.acknowledged);
            } else {
                self.placed_acknowledged.clear(op);
            }
            return false;
        }
        seen.retain(|visited| !visiting.covers(visited));
        seen.push(visiting);

        self.path.push(Placed {
            op,
            state_before: self.state,
            only_choice,
        });
        self.state = after;
        if is_unknown {
            self.unknown_events.unlink(1 + op - self.acknowledged);
        } else {
            self.acknowledged_events.unlink(call_node(op));
            self.acknowledged_events.unlink(return_node(op));
            self.acknowledged_placed += 1;
            if self.acknowledged_placed > self.furthest.acknowledged_placed {
                self.furthest = Furthest {
                    acknowledged_placed: self.acknowledged_placed,
                    path: self.path.iter().map(|placed| placed.op).collect(),
                    state: self.state,
                };
            }
        }
        true
    }

    /// Undoes the last `place`.
    fn take_back(&mut self) -> Option<Placed> {
        let placed = self.path.pop()?;
        let op = placed.op;
        if op >= self.acknowledged {
            self.unknown_events.relink(1 + op - self.acknowledged);
            self.placed_unknown.clear(op - self.acknowledged);
        } else {
            self.acknowledged_events.relink(return_node(op));
            self.acknowledged_events.relink(call_node(op));
            self.placed_acknowledged.clear(op);
            self.acknowledged_placed -= 1;
        }
        self.state = placed.state_before;
        Some(placed)
    }
}

/// The operations to search, acknowledged ones first (by invocation), and how
/// many are acknowledged; values are replaced by ids.
fn candidates(history: &[Operation], indices: &[usize]) -> (Vec<Candidate>, usize) {
    let mut observed: HashMap<&str, ValueId> = HashMap::new();
    for &index in indices {
        let operation = &history[index];
        let compared = match &operation.op {
            Op::Cas { expect, .. } => expect.as_deref(),
            Op::Put { .. } | Op::Get { .. } => None,
        };
        let read = match &operation.outcome {
            Outcome::Ok(Answer::Get { found, .. }) => {
                found.as_ref().map(|found| found.value.as_str())
            }
            _ => None,
        };
        for value in [compared, read].into_iter().flatten() {
            let next = observed.len() as ValueId + 2;
            observed.entry(value).or_insert(next);
        }
    }
    let id = |value: Option<&str>| match value {
        None => ABSENT,
        Some(value) => observed.get(value).copied().unwrap_or(UNOBSERVED),
    };

    let mut ordered: Vec<usize> = indices.to_vec();
    ordered.sort_by_key(|&index| {
        let operation = &history[index];
        (
            operation.outcome == Outcome::Unknown,
            operation.invoked,
            index,
        )
    });
    let mut acknowledged = 0;
    let mut candidates = Vec::with_capacity(ordered.len());
    for index in ordered {
        let operation = &history[index];
        let effect = match (&operation.op, &operation.outcome) {
            (Op::Put { value, .. }, _) => Effect::Write(id(Some(value))),
            (Op::Get { .. }, Outcome::Ok(Answer::Get { found, .. })) => {
                Effect::Read(id(found.as_ref().map(|found| found.value.as_str())))
            }
            (
                Op::Cas { expect, .. },
                Outcome::Ok(Answer::Cas {
                    succeeded: false, ..
                }),
            ) => Effect::CompareRefused {
                expect: id(expect.as_deref()),
            },
            (Op::Cas { expect, value, .. }, _) => Effect::CompareAndWrite {
                expect: id(expect.as_deref()),
                value: id(Some(value)),
            },
            // Unknown reads are filtered out by the caller and answers are
            // checked to match their requests; nothing to learn from these.
            (Op::Get { .. }, _) => continue,
        };
        let completed = match operation.outcome {
            Outcome::Ok(_) => operation.completed,
            Outcome::Failed | Outcome::Unknown => None,
        };
        if completed.is_some() {
            acknowledged += 1;
        }
        candidates.push(Candidate {
            history_index: index,
            invoked: operation.invoked,
            completed,
            effect,
        });
    }
    (candidates, acknowledged)
}

/// Operations shown before the point where the search got stuck.
const SHOWN_BEFORE: usize = 8;
/// Operations shown that could have come next.
const SHOWN_NEXT: usize = 12;

/// Describes the furthest point the search reached: the last operations
/// placed, the register then, and the operations that could not follow.
fn explain(
    history: &[Operation],
    candidates: &[Candidate],
    acknowledged: usize,
    furthest: &Furthest,
    verdict: &str,
) -> String {
    let key = candidates
        .first()
        .map(|candidate| history[candidate.history_index].op.key())
        .unwrap_or_default();
    let mut value: Option<&str> = None;
    for &op in &furthest.path {
        let operation = &history[candidates[op].history_index];
        if matches!(
            candidates[op].effect,
            Effect::Write(_) | Effect::CompareAndWrite { .. }
        ) {
            value = operation.op.written_value();
        }
    }
    let mut text = format!(
        "key {key:?}, {} operations ({acknowledged} acknowledged, {} unknown): {verdict}. \
         At best {} acknowledged operations fit, leaving the register {}",
        candidates.len(),
        candidates.len() - acknowledged,
        furthest.acknowledged_placed,
        shown(value),
    );
    let shown_from = furthest.path.len().saturating_sub(SHOWN_BEFORE);
    if furthest.path.is_empty() {
        text.push_str(" (nothing fits first).");
    } else {
        text.push_str(". The last operations in that order:");
        for &op in &furthest.path[shown_from..] {
            let index = candidates[op].history_index;
            text.push_str(&format!("\n  {}", describe(index, &history[index])));
        }
    }

    let mut placed = vec![false; candidates.len()];
    for &op in &furthest.path {
        placed[op] = true;
    }
    let deadline = (0..acknowledged)
        .filter(|&op| !placed[op])
        .min_by_key(|&op| candidates[op].completed);
    let deadline_time = deadline.and_then(|op| candidates[op].completed);
    let next: Vec<usize> = (0..candidates.len())
        .filter(|&op| !placed[op])
        .filter(|&op| deadline_time.is_none_or(|deadline| candidates[op].invoked <= deadline))
        .collect();
    text.push_str("\nThen none of these can come next:");
    for &op in next.iter().take(SHOWN_NEXT) {
        let index = candidates[op].history_index;
        let why = match (
            candidates[op].effect.apply(furthest.state),
            &history[index].op,
        ) {
            (Some(_), _) => "fits here, but nothing fits after it".to_owned(),
            (None, Op::Cas { .. })
                if matches!(candidates[op].effect, Effect::CompareRefused { .. }) =>
            {
                format!("refused, yet the register held {}", shown(value))
            }
            (None, Op::Cas { expect, .. }) => format!(
                "expected {} but the register held {}",
                shown(expect.as_deref()),
                shown(value)
            ),
            (None, _) => format!("the register held {}", shown(value)),
        };
        text.push_str(&format!("\n  {}: {why}", describe(index, &history[index])));
    }
    if next.len() > SHOWN_NEXT {
        text.push_str(&format!("\n  and {} more", next.len() - SHOWN_NEXT));
    }
    if let (Some(op), Some(time)) = (deadline, deadline_time) {
        let index = candidates[op].history_index;
        text.push_str(&format!(
            "\n{} must have taken effect by {}, when it completed.",
            describe(index, &history[index]),
            seconds(time)
        ));
    }
    text
}

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
//!
//! Remembered configurations are kept small so that long histories fit in
//! memory; see [`MemoKey`] and [`UnknownSets`]. Each is an exact encoding of
//! the configuration (nothing is hashed away), so the search visits exactly
//! the configurations, in exactly the order, it would with plain bit sets.
//! Entries are never dropped, not even those below the watermark: a
//! depth-first search backtracks below any watermark it has passed (all the
//! way to the start when no order fits), and it is the entries there that
//! keep a failing search from exploring the same configurations again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
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

    /// The `len` (at most 64) bits from `start` on, as the low bits of a word;
    /// bits past the end read as empty.
    fn word_at(&self, start: usize, len: usize) -> u64 {
        let (index, shift) = (start / 64, start % 64);
        let word = |index: usize| self.0.get(index).copied().unwrap_or(0);
        let mut bits = word(index) >> shift;
        if shift > 0 {
            bits |= word(index + 1) << (64 - shift);
        }
        if len < 64 {
            bits &= (1 << len) - 1;
        }
        bits
    }
}

/// The acknowledged operations placed above the watermark, one bit each from
/// the operation just after it. Its highest bit is always set (it is the
/// highest operation placed), so the length is a function of the set and the
/// inline form is used exactly when it fits: equal sets have equal forms.
#[derive(PartialEq, Eq, Hash)]
enum Window {
    Inline([u64; 2]),
    Spilled(Box<[u64]>),
}

/// The part of a configuration that must match exactly for one to stand for
/// another: the register and which acknowledged operations are placed.
///
/// Acknowledged operations are numbered by invocation, and every one below
/// `watermark` (the first one not placed) is placed, so the set is the
/// watermark plus the window above it. The window stays short: an operation
/// is only placed while it was invoked before every completion still to
/// place, the watermark's included, so everything placed above the watermark
/// was invoked while the watermark's operation was in flight. Only an
/// operation in flight across more than 128 others spills to the heap.
#[derive(PartialEq, Eq, Hash)]
struct MemoKey {
    watermark: u32,
    state: ValueId,
    window: Window,
}

impl MemoKey {
    /// The key for `placed` (the acknowledged operations placed), where
    /// `watermark` is the first not placed and `highest` one past the last placed.
    fn new(placed: &Bits, watermark: usize, highest: usize, state: ValueId) -> Self {
        let start = watermark + 1;
        let len = highest.saturating_sub(start);
        let window = if len <= 128 {
            Window::Inline([
                placed.word_at(start, len.min(64)),
                placed.word_at(start + 64, len.saturating_sub(64)),
            ])
        } else {
            let words = (0..len.div_ceil(64))
                .map(|word| placed.word_at(start + 64 * word, (len - 64 * word).min(64)))
                .collect();
            Window::Spilled(words)
        };
        MemoKey {
            watermark: watermark as u32,
            state,
            window,
        }
    }
}

/// Which set of unknown operations is placed, as an index into [`UnknownSets`].
type SetId = u32;

/// Every set of placed unknown operations the search has had, each stored
/// once and named by a number, so that a remembered configuration costs four
/// bytes for it instead of a bit per unknown operation. Sets are looked up by
/// their full contents, so two ids are equal exactly when the sets are.
struct UnknownSets {
    sets: Vec<Rc<[u64]>>,
    ids: HashMap<Rc<[u64]>, SetId, FastHash>,
}

impl UnknownSets {
    /// Starts with the empty set of `len` operations as id 0.
    fn new(len: usize) -> Self {
        let mut sets = UnknownSets {
            sets: Vec::new(),
            ids: HashMap::default(),
        };
        sets.intern(&Bits::new(len));
        sets
    }

    /// The id of `set`, new if it was never seen.
    fn intern(&mut self, set: &Bits) -> SetId {
        if let Some(&id) = self.ids.get(&set.0[..]) {
            return id;
        }
        let id = self.sets.len() as SetId;
        let stored: Rc<[u64]> = set.0.as_slice().into();
        self.sets.push(Rc::clone(&stored));
        self.ids.insert(stored, id);
        id
    }

    /// Whether set `mine` is a subset of set `theirs`.
    fn is_subset(&self, mine: SetId, theirs: SetId) -> bool {
        mine == theirs
            || self.sets[mine as usize]
                .iter()
                .zip(self.sets[theirs as usize].iter())
                .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// The rest of a visited configuration: the unknown operations placed, and
/// whether the last operation placed was unknown.
#[derive(Clone, Copy)]
struct Visited {
    unknown: SetId,
    after_unknown: bool,
}

impl Visited {
    /// Whether every way to go on from `other` is open from here too.
    fn covers(&self, other: &Visited, sets: &UnknownSets) -> bool {
        sets.is_subset(self.unknown, other.unknown) && (!self.after_unknown || other.after_unknown)
    }
}

/// The visited configurations under one [`MemoKey`], none covering another.
/// Almost always there is one, so it is kept inline and the rest (an empty
/// slice allocates nothing) costs a pointer and a length.
struct Visits {
    first: Visited,
    more: Box<[Visited]>,
}

impl Visits {
    fn iter(&self) -> impl Iterator<Item = &Visited> {
        std::iter::once(&self.first).chain(&self.more)
    }

    /// Adds `visiting` (covered by none of these), dropping what it covers.
    fn add(&mut self, visiting: Visited, sets: &UnknownSets) {
        let mut kept: Vec<Visited> = self
            .iter()
            .filter(|visited| !visiting.covers(visited, sets))
            .copied()
            .collect();
        kept.push(visiting);
        self.first = kept.swap_remove(0);
        self.more = kept.into();
    }
}

/// A multiply-and-rotate hash for the memo's small integer keys: much faster
/// than the default, and as the maps compare keys in full a poor spread could
/// only cost time, never a wrong answer.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, word: u8) {
        self.write_u64(word.into());
    }

    fn write_u32(&mut self, word: u32) {
        self.write_u64(word.into());
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn write_u128(&mut self, word: u128) {
        self.write_u64(word as u64);
        self.write_u64((word >> 64) as u64);
    }
}

type FastHash = BuildHasherDefault<FastHasher>;

/// An operation placed on the current path, with the register before it.
struct Placed {
    op: usize,
    state_before: ValueId,
    /// Placed as the one operation to try here (it leaves the register as it
    /// was), so once it is taken back there is nothing else to try here either.
    only_choice: bool,
    /// What `place` changed besides the register, to restore on `take_back`.
    unknown_before: SetId,
    watermark_before: usize,
    highest_before: usize,
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
    /// The first acknowledged operation not placed.
    watermark: usize,
    /// One past the highest acknowledged operation placed.
    highest: usize,
    placed_unknown: Bits,
    /// `placed_unknown`'s id in `unknown_sets`.
    unknown_set: SetId,
    unknown_sets: UnknownSets,
    acknowledged_placed: usize,
    /// Values needed by what may go next; see `note_wanted`. As a set over
    /// value ids, since every unknown operation scanned asks it.
    wanted: Bits,
    /// The values in `wanted`, to empty it without going over every bit.
    wanted_list: Vec<ValueId>,
    wanted_anything_else: bool,
    memo: HashMap<MemoKey, Visits, FastHash>,
    state: ValueId,
    path: Vec<Placed>,
    furthest: Furthest,
    /// How many operations `furthest.path` starts with that are `path`'s too.
    furthest_shared: usize,
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

/// What remembering the visited configurations cost, for tests to report.
#[cfg(test)]
#[derive(Debug)]
pub(super) struct Footprint {
    pub steps: u64,
    /// Remembered configurations, and the keys they are filed under.
    pub configurations: usize,
    pub keys: usize,
    /// Distinct sets of placed unknown operations.
    pub unknown_sets: usize,
    /// Bytes held by the memo and the sets, tables' spare room included.
    pub bytes: usize,
}

/// Searches a one-key history as [`super::check`] would and measures the
/// memo once done; it only grows, so that is its peak.
#[cfg(test)]
pub(super) fn footprint(history: &[Operation], budget: u64) -> Footprint {
    use std::mem::size_of;
    let indices: Vec<usize> = (0..history.len())
        .filter(
            |&index| match (&history[index].op, &history[index].outcome) {
                (_, Outcome::Failed) | (Op::Get { .. }, Outcome::Unknown) => false,
                (_, Outcome::Ok(_)) | (_, Outcome::Unknown) => true,
            },
        )
        .collect();
    let (candidates, acknowledged) = candidates(history, &indices);
    let mut search = Search::new(&candidates, acknowledged);
    let (_, steps) = search.run(budget);
    let memo = &search.memo;
    let sets = &search.unknown_sets;
    let heap: usize = memo
        .iter()
        .map(|(key, visits)| {
            let spilled = match &key.window {
                Window::Inline(_) => 0,
                Window::Spilled(words) => words.len() * size_of::<u64>(),
            };
            spilled + visits.more.len() * size_of::<Visited>()
        })
        .sum();
    let set_words = sets.sets.first().map_or(0, |set| set.len());
    Footprint {
        steps,
        configurations: memo.values().map(|visits| visits.iter().count()).sum(),
        keys: memo.len(),
        unknown_sets: sets.sets.len(),
        bytes: memo.capacity() * (size_of::<(MemoKey, Visits)>() + 1)
            + heap
            // Each set: its words and the two counts of its `Rc`, one
            // pointer in `sets`, one slot in `ids`.
            + sets.sets.len() * (set_words * 8 + 16 + size_of::<Rc<[u64]>>())
            + sets.ids.capacity() * (size_of::<(Rc<[u64]>, SetId)>() + 1),
    }
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
        let unknown_sets = UnknownSets::new(unknown);
        let values = candidates
            .iter()
            .map(|candidate| match candidate.effect {
                Effect::Write(value) | Effect::Read(value) => value,
                Effect::CompareAndWrite { expect, value } => expect.max(value),
                Effect::CompareRefused { expect } => expect,
            })
            .max()
            .map_or(0, |value| value as usize + 1);
        let mut memo = HashMap::default();
        memo.insert(
            MemoKey::new(&placed_acknowledged, 0, 0, ABSENT),
            Visits {
                first: Visited {
                    unknown: 0,
                    after_unknown: false,
                },
                more: Box::default(),
            },
        );
        Search {
            candidates,
            acknowledged,
            acknowledged_events,
            unknown_events,
            same_effect_later,
            placed_acknowledged,
            watermark: 0,
            highest: 0,
            placed_unknown,
            unknown_set: 0,
            unknown_sets,
            acknowledged_placed: 0,
            wanted: Bits::new(values),
            wanted_list: Vec::new(),
            wanted_anything_else: false,
            memo,
            state: ABSENT,
            path: Vec::new(),
            furthest: Furthest {
                acknowledged_placed: 0,
                path: Vec::new(),
                state: ABSENT,
            },
            furthest_shared: 0,
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
        for &value in &self.wanted_list {
            self.wanted.clear(value as usize);
        }
        self.wanted_list.clear();
        self.wanted_anything_else = false;
        let mut node = self.acknowledged_events.next[HEAD];
        while node != NIL {
            let (op, is_call) = node_op(node);
            if !is_call {
                break;
            }
            match self.candidates[op].effect {
                Effect::Read(value) | Effect::CompareAndWrite { expect: value, .. } => {
                    self.want(value)
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
                self.want(expect);
            }
            node = self.unknown_events.next[node];
        }
    }

    /// Adds `value` to `wanted`.
    fn want(&mut self, value: ValueId) {
        if !self.wanted.contains(value as usize) {
            self.wanted.set(value as usize);
            self.wanted_list.push(value);
        }
    }

    /// Whether placing unknown `op` now could help: it fits and leaves a
    /// value that some operation that may follow needs.
    fn helps(&self, op: usize) -> bool {
        match self.candidates[op].effect.apply(self.state) {
            Some(value) if value != self.state => {
                self.wanted_anything_else || self.wanted.contains(value as usize)
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
        let placed = Placed {
            op,
            state_before: self.state,
            only_choice,
            unknown_before: self.unknown_set,
            watermark_before: self.watermark,
            highest_before: self.highest,
        };
        if is_unknown {
            self.placed_unknown.set(op - self.acknowledged);
            self.unknown_set = self.unknown_sets.intern(&self.placed_unknown);
        } else {
            self.placed_acknowledged.set(op);
            self.highest = self.highest.max(op + 1);
            while self.watermark < self.acknowledged
                && self.placed_acknowledged.contains(self.watermark)
            {
                self.watermark += 1;
            }
        }
        let visiting = Visited {
            unknown: self.unknown_set,
            after_unknown: is_unknown,
        };
        let key = MemoKey::new(
            &self.placed_acknowledged,
            self.watermark,
            self.highest,
            after,
        );
        let sets = &self.unknown_sets;
        let fresh = match self.memo.entry(key) {
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(Visits {
                    first: visiting,
                    more: Box::default(),
                });
                true
            }
            std::collections::hash_map::Entry::Occupied(mut seen) => {
                let covered = seen
                    .get()
                    .iter()
                    .any(|visited| visited.covers(&visiting, sets));
                if !covered {
                    seen.get_mut().add(visiting, sets);
                }
                !covered
            }
        };
        if !fresh {
            self.unplace(&placed);
            return false;
        }

        self.path.push(placed);
        self.state = after;
        if is_unknown {
            self.unknown_events.unlink(1 + op - self.acknowledged);
        } else {
            self.acknowledged_events.unlink(call_node(op));
            self.acknowledged_events.unlink(return_node(op));
            self.acknowledged_placed += 1;
            if self.acknowledged_placed > self.furthest.acknowledged_placed {
                // Copy only what changed since, not the whole path each time.
                let furthest = &mut self.furthest;
                furthest.acknowledged_placed = self.acknowledged_placed;
                furthest.path.truncate(self.furthest_shared);
                furthest.path.extend(
                    self.path[self.furthest_shared..]
                        .iter()
                        .map(|placed| placed.op),
                );
                furthest.state = self.state;
                self.furthest_shared = self.path.len();
            }
        }
        true
    }

    /// Restores the placed sets to before `placed` was placed.
    fn unplace(&mut self, placed: &Placed) {
        if placed.op >= self.acknowledged {
            self.placed_unknown.clear(placed.op - self.acknowledged);
        } else {
            self.placed_acknowledged.clear(placed.op);
        }
        self.unknown_set = placed.unknown_before;
        self.watermark = placed.watermark_before;
        self.highest = placed.highest_before;
    }

    /// Undoes the last `place`.
    fn take_back(&mut self) -> Option<Placed> {
        let placed = self.path.pop()?;
        let op = placed.op;
        if op >= self.acknowledged {
            self.unknown_events.relink(1 + op - self.acknowledged);
        } else {
            self.acknowledged_events.relink(return_node(op));
            self.acknowledged_events.relink(call_node(op));
            self.acknowledged_placed -= 1;
        }
        self.unplace(&placed);
        self.state = placed.state_before;
        self.furthest_shared = self.furthest_shared.min(self.path.len());
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

//! The store against a plain model of etcd's KV semantics.
//!
//! The model keeps the whole key space at every revision (one map per
//! revision) and implements Put, DeleteRange, Txn, Compact, the lease commands
//! and Range in the most direct way it can. Random command sequences go through
//! both; every outcome, every revision's events, and every read at every
//! readable revision must agree. Each case restarts the store once, at a
//! random step, from the same directory.

mod etcd;
mod plans;

use cairn_mvcc::store::{LogEntry, Store};
use cairn_mvcc::tree_index::KeyRange;
use cairn_mvcc::validate::{self, Limits};
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::Command;
use cairn_proto::etcd_error::EtcdError;
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;

use etcd::{Model, Refusal, Reply};
use plans::{scenario, CommandPlan, Step};

fn fatal(context: &str, error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{context}: {error}"))
}

struct Run {
    dir: tempfile::TempDir,
    store: Store,
    model: Model,
    /// The last log index given to the store.
    index: u64,
}

/// The ranges read at every revision after every step.
/// The log term every entry of a run is applied in; the revisions' events
/// carry it.
const LOG_TERM: u64 = 1;

const READS: [(&[u8], &[u8]); 7] = [
    (b"a", b""),
    (b"ab", b""),
    (b"d", b""),
    (b"a", b"b"),
    (b"b", b"\0"),
    (b"\0", b"\0"),
    (b"c", b"a"),
];

impl Run {
    fn new() -> Result<Self, TestCaseError> {
        let dir = tempfile::tempdir().map_err(|error| fatal("tempdir", error))?;
        let store = Store::open(dir.path()).map_err(|error| fatal("open", error))?;
        Ok(Self {
            dir,
            store,
            model: Model::new(),
            index: 0,
        })
    }

    fn restart(self) -> Result<Self, TestCaseError> {
        let Self {
            dir,
            store,
            model,
            index,
        } = self;
        drop(store);
        let store = Store::open(dir.path()).map_err(|error| fatal("reopen", error))?;
        Ok(Self {
            dir,
            store,
            model,
            index,
        })
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Apply(entries) => self.apply(entries),
            Step::Read(plan) => {
                let request = self.model.range_request(plan);
                prop_assert_eq!(
                    self.read(&request)?,
                    self.model.range(&request),
                    "{:?}",
                    request
                );
                Ok(())
            }
            Step::Replay(plan) => {
                if self.index == 0 {
                    return Ok(());
                }
                let before = self.store.status();
                let command = Command {
                    origin: 1,
                    sequence: 0,
                    op: Some(Op::Put(Model::put_request(plan))),
                    ..Default::default()
                };
                let entry = LogEntry {
                    index: self.index,
                    term: LOG_TERM,
                    commands: vec![command.encode_to_vec().into()],
                };
                let applied = self
                    .store
                    .apply(&[entry])
                    .map_err(|error| fatal("apply", error))?;
                prop_assert!(applied.outcomes.is_empty(), "a replayed entry ran");
                prop_assert!(applied.revisions.is_empty(), "a replayed entry wrote");
                prop_assert_eq!(self.store.status(), before);
                Ok(())
            }
        }
    }

    fn apply(&mut self, entries: &[Vec<CommandPlan>]) -> Result<(), TestCaseError> {
        let mut log = Vec::new();
        let mut ops = Vec::new();
        let mut expected = Vec::new();
        let mut revisions = Vec::new();
        let mut tags = Vec::new();
        for commands in entries {
            self.index += 1;
            let mut encoded = Vec::new();
            for (sequence, plan) in commands.iter().enumerate() {
                let op = self.model.command(plan);
                if self.model.writes_a_key_twice(&op) {
                    // See `writes_a_key_twice`: a known difference, left out.
                    continue;
                }
                if let Op::Txn(txn) = &op {
                    prop_assert_eq!(validate::check_txn(txn, &Limits::default()), Ok(()));
                }
                let (outcome, revision) = self.model.apply(&op);
                expected.push(outcome);
                tags.push(sequence as u64);
                revisions.extend(revision);
                let command = Command {
                    origin: 7,
                    sequence: sequence as u64,
                    op: Some(op.clone()),
                    ..Default::default()
                };
                encoded.push(command.encode_to_vec().into());
                ops.push(op);
            }
            log.push(LogEntry {
                index: self.index,
                term: LOG_TERM,
                commands: encoded,
            });
        }
        let applied = self
            .store
            .apply(&log)
            .map_err(|error| fatal("apply", error))?;
        prop_assert_eq!(applied.outcomes.len(), expected.len());
        for (((outcome, expected), op), sequence) in applied
            .outcomes
            .into_iter()
            .zip(expected)
            .zip(&ops)
            .zip(tags)
        {
            prop_assert_eq!((outcome.origin, outcome.sequence), (7, sequence));
            let got = match outcome.result {
                Ok(response) => Ok(Reply::from_store(response)),
                Err(error) => Err(Refusal::of(&error).ok_or_else(|| fatal("apply", &error))?),
            };
            prop_assert_eq!(got, expected, "{:?}", op);
        }
        prop_assert_eq!(applied.revisions, revisions, "{:?}", ops);
        prop_assert_eq!(applied.position.index, self.index);
        Ok(())
    }

    fn read(
        &self,
        request: &RangeRequest,
    ) -> Result<Result<RangeResponse, Refusal>, TestCaseError> {
        match self.store.range_now(request) {
            Ok(response) => Ok(Ok(response)),
            Err(error) => match Refusal::of(&error) {
                Some(refusal) => Ok(Err(refusal)),
                None => Err(fatal("range", error)),
            },
        }
    }

    /// Status, every read of `READS` at every readable revision, the edges
    /// of readable history, and the events since the compact revision.
    fn check(&self) -> Result<(), TestCaseError> {
        let model = &self.model;
        let status = self.store.status();
        prop_assert_eq!(status.current, model.current());
        prop_assert_eq!(status.compacted, model.compacted);
        prop_assert_eq!(status.applied.index, self.index);
        let first = model.compacted.max(1);
        for revision in first..=model.current() {
            for (key, range_end) in READS {
                let request = RangeRequest {
                    key: key.to_vec(),
                    range_end: range_end.to_vec(),
                    revision,
                    ..Default::default()
                };
                prop_assert_eq!(self.read(&request)?, model.range(&request), "{:?}", request);
            }
        }
        // Every sort at the latest revision, with and without a limit.
        for sort_target in 0..=4 {
            for sort_order in 0..=2 {
                for limit in [0, 2] {
                    let request = RangeRequest {
                        key: vec![0],
                        range_end: vec![0],
                        limit,
                        sort_order,
                        sort_target,
                        ..Default::default()
                    };
                    prop_assert_eq!(self.read(&request)?, model.range(&request), "{:?}", request);
                }
            }
        }
        let all = |revision: i64| RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        };
        if model.compacted > 1 {
            prop_assert_eq!(
                self.read(&all(model.compacted - 1))?,
                Err(Refusal::Compacted(model.compacted))
            );
        }
        prop_assert_eq!(
            self.read(&all(model.current() + 1))?,
            Err(Refusal::Etcd(EtcdError::FutureRevision))
        );

        let everything = KeyRange::new(&[0], &[0]);
        let events = self
            .store
            .events(&everything, first, true, usize::MAX)
            .map_err(|error| fatal("events", error))?;
        prop_assert_eq!(events, model.events_since(first));
        if model.compacted > 1 {
            let below = self
                .store
                .events(&everything, model.compacted - 1, true, usize::MAX);
            prop_assert_eq!(
                below.map_err(|error| Refusal::of(&error)).err(),
                Some(Some(Refusal::Compacted(model.compacted)))
            );
        }
        Ok(())
    }
}

fn run(steps: &[Step], restart: usize) -> Result<(), TestCaseError> {
    let mut run = Run::new()?;
    run.check()?;
    for (number, step) in steps.iter().enumerate() {
        if number == restart {
            run = run.restart()?;
            run.check()?;
        }
        run.step(step)?;
        run.check()?;
    }
    if restart == steps.len() {
        run = run.restart()?;
        run.check()?;
    }
    Ok(())
}

/// 64 cases unless `PROPTEST_CASES` asks for another number.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases())
    })]

    #[test]
    fn the_store_agrees_with_a_model_of_etcd((steps, restart) in scenario()) {
        run(&steps, restart)?;
    }
}

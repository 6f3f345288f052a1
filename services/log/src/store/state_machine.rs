//! The log's state machine: not the users' data (the log keeps commands opaque)
//! but its own bookkeeping — what was applied, the membership, and how far each
//! registered consumer has durably applied, which bounds purging.
//!
//! It lives in memory; a snapshot of it is persisted, and on restart openraft
//! re-applies the committed entries after that snapshot.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use parking_lot::RwLock;
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use super::tail::{to_wire, Tail};
use super::{cf, decode, encode, read_meta, sync_write, CF_META};
use crate::error::LogError;
use crate::types::{
    Entry, LogCommand, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// The state every node derives from the committed log.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Bookkeeping {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Consumer name → the highest index it acknowledged as durably applied.
    pub consumers: BTreeMap<String, u64>,
}

impl Bookkeeping {
    /// Applies one committed entry. Deterministic: no clock, no randomness.
    pub(crate) fn apply(&mut self, entry: &Entry) {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank | EntryPayload::Normal(LogCommand::Commands(_)) => {}
            EntryPayload::Normal(LogCommand::ConsumerAck {
                consumer,
                applied_index,
            }) => {
                let position = self.consumers.entry(consumer.clone()).or_insert(0);
                *position = (*position).max(*applied_index);
            }
            EntryPayload::Normal(LogCommand::ConsumerRemove { consumer }) => {
                self.consumers.remove(consumer);
            }
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine and its snapshots. Cloning shares both.
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    db: Arc<DB>,
    state: Arc<RwLock<Bookkeeping>>,
    /// The newest applied entries, for subscribers.
    tail: Arc<Tail>,
}

impl StateMachineStore {
    pub(super) fn new(db: Arc<DB>) -> Result<Self, LogError> {
        let state = match read_meta::<StoredSnapshot>(&db, KEY_SNAPSHOT)? {
            Some(stored) => decode::<Bookkeeping>(&stored.data)?,
            None => Bookkeeping::default(),
        };
        Ok(Self {
            db,
            state: Arc::new(RwLock::new(state)),
            tail: Arc::new(Tail::default()),
        })
    }

    /// The newest applied entries, which subscribers are fed from.
    pub(crate) fn tail(&self) -> Arc<Tail> {
        self.tail.clone()
    }

    /// A shared view of the bookkeeping, for Status and the purge policy.
    pub(crate) fn state(&self) -> Arc<RwLock<Bookkeeping>> {
        self.state.clone()
    }

    fn save_snapshot(&self, stored: &StoredSnapshot) -> Result<(), LogError> {
        self.db.put_cf_opt(
            cf(&self.db, CF_META)?,
            KEY_SNAPSHOT,
            encode(stored)?,
            &sync_write(),
        )?;
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, LogError> {
        read_meta(&self.db, KEY_SNAPSHOT)
    }
}

fn snapshot_error(error: LogError, write: bool) -> StorageError {
    let source = AnyError::error(error.to_string());
    let io = if write {
        StorageIOError::write_snapshot(None, source)
    } else {
        StorageIOError::read_snapshot(None, source)
    };
    io.into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let state = self.state.read().clone();
        let data = encode(&state).map_err(|error| snapshot_error(error, true))?;
        let snapshot_id = match state.last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored)
            .map_err(|error| snapshot_error(error, true))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.state.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut applied = Vec::new();
        {
            let mut state = self.state.write();
            for entry in entries {
                state.apply(&entry);
                responses.push(());
                applied.push(to_wire(entry));
            }
        }
        self.tail.push(applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: Bookkeeping = decode(&data).map_err(|error| snapshot_error(error, false))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored)
            .map_err(|error| snapshot_error(error, true))?;
        let applied = state.last_applied.map_or(0, |id| id.index);
        *self.state.write() = state;
        self.tail.reset(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self
            .load_snapshot()
            .map_err(|error| snapshot_error(error, false))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64, command: LogCommand) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    #[test]
    fn consumer_positions_only_move_forward_and_can_be_removed() {
        let mut state = Bookkeeping::default();
        let ack = |index| LogCommand::ConsumerAck {
            consumer: "mvcc-1".into(),
            applied_index: index,
        };
        state.apply(&entry(1, ack(10)));
        state.apply(&entry(2, ack(5)));
        assert_eq!(state.consumers.get("mvcc-1"), Some(&10));
        state.apply(&entry(
            3,
            LogCommand::ConsumerRemove {
                consumer: "mvcc-1".into(),
            },
        ));
        assert!(state.consumers.is_empty());
        assert_eq!(state.last_applied.map(|id| id.index), Some(3));
    }

    #[test]
    fn client_commands_change_nothing_but_the_applied_index() {
        let mut state = Bookkeeping::default();
        state.apply(&entry(7, LogCommand::Commands(vec![b"x".to_vec()])));
        assert!(state.consumers.is_empty());
        assert_eq!(state.last_applied.map(|id| id.index), Some(7));
    }
}

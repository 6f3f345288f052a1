//! The raft type configuration and the entries the log carries.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A log node's id.
pub type NodeId = u64;

/// What one log entry carries besides openraft's own blank and membership entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCommand {
    /// Clients' commands, opaque to the log, packed by the leader into one
    /// entry when they arrive together; consumers apply them in order.
    Commands(Vec<Vec<u8>>),
    /// A consumer's durable applied index; it registers the consumer on first use.
    ConsumerAck {
        consumer: String,
        applied_index: u64,
    },
    /// Forget a consumer.
    ConsumerRemove { consumer: String },
}

openraft::declare_raft_types!(
    /// The log's raft types: opaque commands, u64 ids, host:port nodes.
    pub TypeConfig:
        D = LogCommand,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft's types with the log's parameters filled in.
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

//! The raft type configuration and the entries the log carries.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A log node's id.
pub(crate) type NodeId = u64;

/// What one log entry carries besides openraft's own blank and membership entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LogCommand {
    /// Clients' commands, opaque to the log, packed by the leader into one
    /// entry when they arrive together; consumers apply them in order.
    Commands(#[serde(with = "commands_as_bytes")] Vec<Vec<u8>>),
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
    pub(crate) TypeConfig:
        D = LogCommand,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft's types with the log's parameters filled in.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Vote = openraft::Vote<NodeId>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub(crate) type Snapshot = openraft::Snapshot<TypeConfig>;

/// Commands serialised as byte strings rather than sequences of numbers: a
/// memcpy instead of a call per byte, which decides whether an AppendEntries
/// of large commands fits in openraft's heartbeat-long RPC timeout.
mod commands_as_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct AsBytes<'a>(&'a [u8]);

    impl Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(self.0)
        }
    }

    struct Bytes(Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_byte_buf(BytesVisitor).map(Bytes)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a command's bytes")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }

    pub(super) fn serialize<S: Serializer>(
        commands: &[Vec<u8>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(commands.len()))?;
        for command in commands {
            seq.serialize_element(&AsBytes(command))?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        let commands: Vec<Bytes> = Vec::deserialize(deserializer)?;
        Ok(commands.into_iter().map(|Bytes(bytes)| bytes).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_bincode_as_byte_strings() {
        let command = LogCommand::Commands(vec![vec![1, 2, 3], Vec::new(), vec![7; 1000]]);
        let encoded = bincode::serialize(&command).expect("serialises");
        // Tag, count, and per command a length and its bytes: no per-byte overhead.
        assert!(
            encoded.len() < 4 + 8 + 3 * 8 + 1003 + 8,
            "{} bytes",
            encoded.len()
        );
        let decoded: LogCommand = bincode::deserialize(&encoded).expect("deserialises");
        assert_eq!(decoded, command);
    }
}

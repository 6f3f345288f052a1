//! cairn-mvcc: etcd's KV semantics, applied deterministically from the log.
//!
//! This crate is being assembled in steps (see `docs/architecture.md`); what is
//! here is complete in itself and tested:
//! - `revision`: etcd's (main, sub) revision.
//! - `key_index`: one key's history as generations of revisions, with etcd's
//!   rules for reading at a revision and for compaction.

pub mod key_index;
pub mod revision;

//! cairn-mvcc: etcd's KV semantics, applied deterministically from the log.
//!
//! This crate is being assembled in steps; what is here is complete in itself
//! and tested:
//! - `revision`: etcd's (main, sub) revision.
//! - `key_index`: one key's history as generations of revisions, with etcd's
//!   rules for reading at a revision and for compaction.
//! - `tree_index`: every key's history in key order, with etcd's range convention.
//! - `validate`: etcd's checks on a request before it is proposed, with its errors.

pub mod key_index;
pub mod revision;
pub mod tree_index;
pub mod validate;

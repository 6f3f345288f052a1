//! etcd's KV rules, one named test each, checked against the real apply code
//! and RocksDB through the store's public API: log entries in, responses,
//! revision events and Range out.

mod harness;

mod alarms;
mod compaction;
mod lease_fencing;
mod leases;
mod range;
mod restart;
mod revisions;
mod sibling_txns;
mod txn;

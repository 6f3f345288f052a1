//! A large range in flight does not hold the applier back: its keys are found
//! a piece at a time under the index lock, and its values are read through a
//! RocksDB snapshot without the lock.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_mvcc::store::{LogEntry, Store};
use cairn_proto::cairn::mvcc::v1::command::Op;
use cairn_proto::cairn::mvcc::v1::Command;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use prost::Message;

const KEYS: usize = 100_000;
const READERS: usize = 1;

fn put(key: String) -> bytes::Bytes {
    Command {
        origin: 1,
        sequence: 1,
        op: Some(Op::Put(PutRequest {
            key: key.into_bytes(),
            value: vec![7; 64],
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// The longest of `count` single-put applies, from index `first` on.
fn slowest_apply(store: &Store, first: u64, count: u64) -> Duration {
    let mut slowest = Duration::ZERO;
    for index in first..first + count {
        let started = Instant::now();
        let applied = store.apply(&[LogEntry {
            index,
            term: 1,
            commands: vec![put(format!("w/{index}"))],
        }]);
        slowest = slowest.max(started.elapsed());
        assert!(applied.is_ok(), "{applied:?}");
    }
    slowest
}

#[test]
fn a_range_of_a_hundred_thousand_keys_delays_a_concurrent_put_by_a_few_milliseconds_at_most() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(Store::open(dir.path()).expect("a store"));
    let per_entry = 1000;
    for entry in 0..KEYS / per_entry {
        let commands = (0..per_entry)
            .map(|key| put(format!("k/{:06}", entry * per_entry + key)))
            .collect();
        let applied = store.apply(&[LogEntry {
            index: entry as u64 + 1,
            term: 1,
            commands,
        }]);
        assert!(applied.is_ok(), "{applied:?}");
    }
    let mut next = (KEYS / per_entry) as u64 + 1;
    let quiet = slowest_apply(&store, next, 50);
    next += 50;

    let stop = Arc::new(AtomicBool::new(false));
    let ranges_done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (store, stop, done) = (store.clone(), stop.clone(), ranges_done.clone());
            std::thread::spawn(move || {
                let request = RangeRequest {
                    key: b"k/".to_vec(),
                    range_end: b"k0".to_vec(),
                    ..Default::default()
                };
                while !stop.load(Ordering::Relaxed) {
                    let answer = store.range_now(&request).expect("the range answers");
                    assert_eq!(answer.kvs.len(), KEYS);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Writes go on until both readers have each finished two whole ranges,
    // so every write met ranges in flight.
    let mut busy = Duration::ZERO;
    let started = Instant::now();
    while ranges_done.load(Ordering::Relaxed) < 2 * READERS
        && started.elapsed() < Duration::from_secs(120)
    {
        busy = busy.max(slowest_apply(&store, next, 10));
        next += 10;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().is_ok(), "a reader panicked");
    }
    assert!(ranges_done.load(Ordering::Relaxed) >= 2 * READERS);
    println!(
        "slowest put apply: {quiet:?} alone, {busy:?} with {READERS} ranges of {KEYS} keys in flight ({} ranges done)",
        ranges_done.load(Ordering::Relaxed)
    );
    assert!(
        busy <= quiet + Duration::from_millis(10),
        "a put waited {busy:?} behind ranges (alone: {quiet:?})"
    );
}

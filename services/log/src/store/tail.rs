//! The newest applied entries, in the form Subscribe sends them, kept in
//! memory as the state machine applies them. A subscriber that is caught up
//! is handed each entry the moment it is applied, without reading it back
//! from RocksDB or decoding it again; one that is further behind reads the
//! log on disk.

use std::collections::VecDeque;

use cairn_proto::cairn::log::v1 as pb;
use openraft::EntryPayload;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::types::{Entry, LogCommand};

/// Bytes of commands the tail holds at most; older entries are read from
/// disk. A caught-up subscriber is at most a few entries behind.
const TAIL_BYTES: usize = 4 * 1024 * 1024;
/// Entries the tail holds at most.
const TAIL_ENTRIES: usize = 4096;

/// An applied entry as Subscribe sends it. Its commands are shared, so
/// handing it to every subscriber copies no command.
pub(crate) fn to_wire(entry: Entry) -> pb::Entry {
    let (kind, commands) = match entry.payload {
        EntryPayload::Blank => (pb::EntryKind::Blank, Vec::new()),
        EntryPayload::Membership(_) => (pb::EntryKind::Membership, Vec::new()),
        EntryPayload::Normal(LogCommand::Commands(commands)) => (
            pb::EntryKind::Command,
            commands.into_iter().map(bytes::Bytes::from).collect(),
        ),
        EntryPayload::Normal(
            LogCommand::ConsumerAck { .. } | LogCommand::ConsumerRemove { .. },
        ) => (pb::EntryKind::Consumer, Vec::new()),
    };
    pb::Entry {
        index: entry.log_id.index,
        term: entry.log_id.leader_id.term,
        kind: kind as i32,
        commands,
    }
}

fn command_bytes(entry: &pb::Entry) -> usize {
    entry.commands.iter().map(bytes::Bytes::len).sum()
}

/// Recent applied entries, contiguous, oldest first.
struct Window {
    entries: VecDeque<pb::Entry>,
    bytes: usize,
}

/// The tail of the applied log, and the applied index subscribers wait on.
pub(crate) struct Tail {
    window: Mutex<Window>,
    applied: watch::Sender<u64>,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                entries: VecDeque::new(),
                bytes: 0,
            }),
            applied: watch::Sender::new(0),
        }
    }
}

impl Tail {
    /// Adds entries just applied, in order, and wakes the subscribers.
    pub(crate) fn push(&self, entries: Vec<pb::Entry>) {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return;
        };
        {
            let mut window = self.window.lock();
            for entry in entries {
                // Keep it contiguous: what does not follow starts it again.
                if window
                    .entries
                    .back()
                    .is_some_and(|newest| newest.index + 1 != entry.index)
                {
                    window.entries.clear();
                    window.bytes = 0;
                }
                window.bytes += command_bytes(&entry);
                window.entries.push_back(entry);
            }
            while window.entries.len() > TAIL_ENTRIES
                || (window.bytes > TAIL_BYTES && window.entries.len() > 1)
            {
                if let Some(oldest) = window.entries.pop_front() {
                    window.bytes -= command_bytes(&oldest);
                }
            }
        }
        self.applied.send_replace(last);
    }

    /// Forgets every entry: a snapshot replaced the state they led to.
    pub(crate) fn reset(&self, applied: u64) {
        let mut window = self.window.lock();
        window.entries.clear();
        window.bytes = 0;
        drop(window);
        self.applied.send_replace(applied);
    }

    /// Changes whenever entries are applied.
    pub(crate) fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Up to `limit` entries from `from` on, if the tail still holds `from`.
    pub(crate) fn read(&self, from: u64, limit: usize) -> Option<Vec<pb::Entry>> {
        let window = self.window.lock();
        let oldest = window.entries.front()?.index;
        if from < oldest {
            return None;
        }
        let skip = usize::try_from(from - oldest).ok()?;
        if skip >= window.entries.len() {
            return None;
        }
        Some(
            window
                .entries
                .iter()
                .skip(skip)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> pb::Entry {
        pb::Entry {
            index,
            term: 1,
            kind: pb::EntryKind::Command as i32,
            commands: vec![bytes::Bytes::from(vec![0; 10])],
        }
    }

    #[test]
    fn a_caught_up_reader_finds_what_was_applied_and_a_late_one_does_not() {
        let tail = Tail::default();
        let mut applied = tail.applied();
        tail.push((1..=5).map(entry).collect());
        assert!(applied.has_changed().unwrap_or(false));
        assert_eq!(*applied.borrow_and_update(), 5);
        let read = tail
            .read(3, 10)
            .map(|entries| entries.iter().map(|e| e.index).collect::<Vec<_>>());
        assert_eq!(read, Some(vec![3, 4, 5]));
        assert_eq!(tail.read(6, 10), None);
        tail.push(vec![entry(9)]);
        assert_eq!(tail.read(5, 10), None, "a gap starts the tail again");
        assert_eq!(tail.read(9, 10).map(|entries| entries.len()), Some(1));
        tail.reset(20);
        assert_eq!(tail.read(9, 10), None);
        assert_eq!(*tail.applied().borrow(), 20);
    }
}

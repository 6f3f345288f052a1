//! Events encoded once, sent to many. A revision's events are turned into
//! the bytes of `WatchResponse.events` fields when they reach the gateway, and
//! a response to any number of watchers is copies of those bytes: no event is
//! cloned or encoded per watcher.
//!
//! Protobuf lets a message's fields come in any order, so a response is its
//! other fields (header, watch ID, fragment) encoded by prost, followed by the
//! shared event fields.

use std::ops::Range;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use cairn_proto::cairn::mvcc::v1::RevisionEvents;
use cairn_proto::etcdserverpb::WatchResponse;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use prost::encoding::{self, WireType};
use prost::Message;

/// `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;
/// `Event.type`, `Event.kv`, `Event.prev_kv`.
const TYPE_FIELD: u32 = 1;
const KV_FIELD: u32 = 2;
const PREV_KV_FIELD: u32 = 3;
/// `KeyValue.key`.
const KEY_FIELD: u32 = 1;

/// One event, encoded as an `mvccpb.Event` message: type and kv first, then
/// prev_kv, so the same bytes without their tail are the event without it.
#[derive(Debug)]
pub(crate) struct EncodedEvent {
    body: Bytes,
    /// The length of `body` without prev_kv.
    bare: usize,
    /// Where the key sits in `body`.
    key: Range<usize>,
    delete: bool,
}

impl EncodedEvent {
    /// Encodes `event`; `None` for an event with no key-value (which no
    /// watcher is sent).
    pub(crate) fn new(event: &Event) -> Option<Self> {
        let kv = event.kv.as_ref()?;
        let mut body = BytesMut::with_capacity(event.encoded_len());
        if event.r#type != 0 {
            encoding::int32::encode(TYPE_FIELD, &event.r#type, &mut body);
        }
        let kv_start = body.len()
            + encoding::key_len(KV_FIELD)
            + encoding::encoded_len_varint(kv.encoded_len() as u64);
        encoding::message::encode(KV_FIELD, kv, &mut body);
        // prost writes fields in number order, the key (field 1) first, and
        // leaves out an empty one.
        let key = if kv.key.is_empty() {
            kv_start..kv_start
        } else {
            let start = kv_start
                + encoding::key_len(KEY_FIELD)
                + encoding::encoded_len_varint(kv.key.len() as u64);
            start..start + kv.key.len()
        };
        let bare = body.len();
        if let Some(prev) = event.prev_kv.as_ref() {
            encoding::message::encode(PREV_KV_FIELD, prev, &mut body);
        }
        Some(Self {
            body: body.freeze(),
            bare,
            key,
            delete: event.r#type == EventType::Delete as i32,
        })
    }

    /// The event's key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.body[self.key.clone()]
    }

    /// Whether the event is a delete (otherwise a put).
    pub(crate) fn is_delete(&self) -> bool {
        self.delete
    }

    fn message(&self, prev_kv: bool) -> &[u8] {
        if prev_kv {
            &self.body
        } else {
            &self.body[..self.bare]
        }
    }

    /// The bytes this event adds to a response as an `events` field.
    #[cfg(test)]
    pub(crate) fn field_len(&self, prev_kv: bool) -> usize {
        let message = self.message(prev_kv).len();
        encoding::key_len(EVENTS_FIELD) + encoding::encoded_len_varint(message as u64) + message
    }

    /// Appends the event as an `events` field, with or without prev_kv.
    pub(crate) fn write_field(&self, prev_kv: bool, out: &mut BytesMut) {
        let message = self.message(prev_kv);
        encoding::encode_key(EVENTS_FIELD, WireType::LengthDelimited, out);
        encoding::encode_varint(message.len() as u64, out);
        out.put_slice(message);
    }
}

/// A revision as the gateway keeps it: its events, encoded the first time
/// a watcher reads them (a gateway no one watches through encodes nothing).
#[derive(Debug)]
pub(crate) struct Revision {
    pub revision: i64,
    pub raft_term: u64,
    decoded: Vec<Event>,
    encoded: OnceLock<Vec<EncodedEvent>>,
}

impl Revision {
    pub(crate) fn new(revision: RevisionEvents) -> Self {
        Self {
            revision: revision.revision,
            raft_term: revision.raft_term,
            decoded: revision.events,
            encoded: OnceLock::new(),
        }
    }

    /// A revision with no events: a compacted placeholder, or one whose
    /// events are not carried.
    pub(crate) fn empty(revision: i64) -> Self {
        Self {
            revision,
            raft_term: 0,
            decoded: Vec::new(),
            encoded: OnceLock::new(),
        }
    }

    /// The events, encoded once for every reader.
    pub(crate) fn events(&self) -> &[EncodedEvent] {
        self.encoded
            .get_or_init(|| self.decoded.iter().filter_map(EncodedEvent::new).collect())
    }
}

/// A response ready to send: prost's encoding of everything but the events,
/// then the events' fields.
#[derive(Debug, Default)]
pub(crate) struct EncodedResponse {
    head: Vec<u8>,
    events: Bytes,
}

impl EncodedResponse {
    /// A response without events (created, cancelled, progress).
    pub(crate) fn plain(response: &WatchResponse) -> Self {
        Self {
            head: response.encode_to_vec(),
            events: Bytes::new(),
        }
    }

    /// `head` (whose own `events` are left empty) with `events`, the
    /// already encoded `events` fields.
    pub(crate) fn with_events(head: &WatchResponse, events: Bytes) -> Self {
        Self {
            head: head.encode_to_vec(),
            events,
        }
    }

    /// The encoded size.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.events.len()
    }

    /// Writes the whole message.
    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_slice(&self.head);
        out.put_slice(&self.events);
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::mvccpb::KeyValue;

    use super::*;

    fn kv(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: 3,
            mod_revision: 300,
            version: 2,
            value: value.to_vec(),
            lease: 7,
        }
    }

    fn decode(head: &WatchResponse, events: &[(&EncodedEvent, bool)]) -> WatchResponse {
        let mut fields = BytesMut::new();
        for (event, prev_kv) in events {
            event.write_field(*prev_kv, &mut fields);
        }
        let expected: usize = events
            .iter()
            .map(|(event, prev_kv)| event.field_len(*prev_kv))
            .sum();
        assert_eq!(fields.len(), expected);
        let response = EncodedResponse::with_events(head, fields.freeze());
        let mut bytes = Vec::new();
        response.write(&mut bytes);
        assert_eq!(bytes.len(), response.len());
        WatchResponse::decode(bytes.as_slice()).expect("a WatchResponse")
    }

    #[test]
    fn a_response_of_shared_fields_decodes_as_the_one_prost_would_build() {
        let put = Event {
            r#type: EventType::Put as i32,
            kv: Some(kv(b"key/one", &[b'v'; 300])),
            prev_kv: Some(kv(b"key/one", b"before")),
        };
        let delete = Event {
            r#type: EventType::Delete as i32,
            kv: Some(kv(&[b'k'; 200], b"")),
            prev_kv: None,
        };
        let encoded_put = EncodedEvent::new(&put).expect("has a kv");
        let encoded_delete = EncodedEvent::new(&delete).expect("has a kv");
        assert_eq!(encoded_put.key(), b"key/one");
        assert_eq!(encoded_delete.key(), &[b'k'; 200][..]);
        assert!(!encoded_put.is_delete());
        assert!(encoded_delete.is_delete());

        let head = WatchResponse {
            header: Some(cairn_proto::etcdserverpb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 300,
                raft_term: 4,
            }),
            watch_id: 9,
            fragment: true,
            ..Default::default()
        };
        let without_prev = decode(&head, &[(&encoded_put, false), (&encoded_delete, false)]);
        let mut bare_put = put.clone();
        bare_put.prev_kv = None;
        assert_eq!(
            without_prev,
            WatchResponse {
                events: vec![bare_put, delete.clone()],
                ..head.clone()
            }
        );
        let with_prev = decode(&head, &[(&encoded_put, true), (&encoded_delete, true)]);
        assert_eq!(
            with_prev,
            WatchResponse {
                events: vec![put, delete],
                ..head
            }
        );
    }

    #[test]
    fn an_event_without_a_key_value_is_not_kept() {
        assert!(EncodedEvent::new(&Event::default()).is_none());
    }
}

//! The spans received, kept in arrival order up to a bound, and read back in
//! the shape of Jaeger's query API so the same checks work against either.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// One received span, flattened with the service that sent it.
#[derive(Clone, Debug)]
struct StoredSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    service: String,
    start_micros: u64,
    duration_micros: u64,
    tags: Vec<(String, Value)>,
}

/// Every span received, oldest first, at most `capacity` of them.
pub(crate) struct SpanStore {
    spans: Mutex<VecDeque<StoredSpan>>,
    capacity: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn tag_value(value: Option<&AnyValue>) -> Value {
    match value {
        Some(AnyValue::StringValue(text)) => json!(text),
        Some(AnyValue::BoolValue(flag)) => json!(flag),
        Some(AnyValue::IntValue(number)) => json!(number),
        Some(AnyValue::DoubleValue(number)) => json!(number),
        Some(other) => json!(format!("{other:?}")),
        None => Value::Null,
    }
}

fn tags(attributes: &[KeyValue]) -> Vec<(String, Value)> {
    attributes
        .iter()
        .map(|attribute| {
            let value = attribute
                .value
                .as_ref()
                .and_then(|value| value.value.as_ref());
            (attribute.key.clone(), tag_value(value))
        })
        .collect()
}

impl SpanStore {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            spans: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// Keeps every span of one OTLP export.
    pub(crate) fn add(&self, request: ExportTraceServiceRequest) {
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| {
                    tags(&resource.attributes)
                        .into_iter()
                        .find(|(key, _)| key == "service.name")
                })
                .and_then(|(_, value)| value.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown_service".to_owned());
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    let mut span_tags = tags(&span.attributes);
                    span_tags.push(("span.kind".to_owned(), json!(span.kind().as_str_name())));
                    received.push(StoredSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        service: service.clone(),
                        start_micros: span.start_time_unix_nano / 1_000,
                        duration_micros: span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano)
                            / 1_000,
                        tags: span_tags,
                    });
                }
            }
        }
        let mut spans = self.spans.lock();
        spans.extend(received);
        while spans.len() > self.capacity {
            spans.pop_front();
        }
    }

    /// Every service that sent a span.
    pub(crate) fn services(&self) -> Value {
        let names: BTreeSet<String> = self
            .spans
            .lock()
            .iter()
            .map(|span| span.service.clone())
            .collect();
        json!({ "data": names })
    }

    /// Jaeger's trace search: the newest `limit` traces with a span from
    /// `service` (and named `operation`, when given), each whole.
    pub(crate) fn search(&self, service: &str, operation: Option<&str>, limit: usize) -> Value {
        let spans = self.spans.lock();
        let mut matching: Vec<(u64, String)> = Vec::new();
        let mut seen = BTreeSet::new();
        for span in spans.iter().rev() {
            let wanted =
                span.service == service && operation.is_none_or(|operation| span.name == operation);
            if wanted && seen.insert(span.trace_id.clone()) {
                matching.push((span.start_micros, span.trace_id.clone()));
            }
        }
        matching.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        matching.truncate(limit);
        let traces: Vec<Value> = matching
            .iter()
            .map(|(_, trace_id)| trace_json(trace_id, spans.iter()))
            .collect();
        json!({ "data": traces })
    }

    /// One trace by id, as Jaeger's `/api/traces/{id}` gives it.
    pub(crate) fn trace(&self, trace_id: &str) -> Option<Value> {
        let spans = self.spans.lock();
        let trace_id = trace_id.to_ascii_lowercase();
        spans
            .iter()
            .any(|span| span.trace_id == trace_id)
            .then(|| json!({ "data": [trace_json(&trace_id, spans.iter())] }))
    }
}

/// One trace in Jaeger's JSON: spans with references to their parents, and
/// the services as processes.
fn trace_json<'a>(trace_id: &str, spans: impl Iterator<Item = &'a StoredSpan>) -> Value {
    let mut processes: BTreeMap<String, String> = BTreeMap::new();
    let mut span_values = Vec::new();
    for span in spans.filter(|span| span.trace_id == trace_id) {
        let next = format!("p{}", processes.len() + 1);
        let process_id = processes
            .entry(span.service.clone())
            .or_insert(next)
            .clone();
        let references = if span.parent_span_id.is_empty() {
            json!([])
        } else {
            json!([{ "refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id }])
        };
        let tags: Vec<Value> = span
            .tags
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect();
        span_values.push(json!({
            "traceID": trace_id,
            "spanID": span.span_id,
            "operationName": span.name,
            "references": references,
            "startTime": span.start_micros,
            "duration": span.duration_micros,
            "tags": tags,
            "processID": process_id,
        }));
    }
    let processes: serde_json::Map<String, Value> = processes
        .into_iter()
        .map(|(service, id)| (id, json!({ "serviceName": service, "tags": [] })))
        .collect();
    json!({ "traceID": trace_id, "spans": span_values, "processes": processes })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue as Any;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn export(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(Any {
                            value: Some(AnyValue::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start: u64) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|parent| vec![parent; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: start * 1_000,
            end_time_unix_nano: start * 1_000 + 5_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_trace_collects_the_spans_of_every_service() {
        let store = SpanStore::new(100);
        store.add(export("edge", vec![span(1, 1, None, "KV/Put", 10)]));
        store.add(export("mvcc", vec![span(1, 2, Some(1), "apply", 11)]));
        store.add(export("edge", vec![span(2, 3, None, "KV/Range", 20)]));

        let found = store.search("edge", Some("KV/Put"), 10);
        let traces = found["data"].as_array().expect("data");
        assert_eq!(traces.len(), 1);
        let spans = traces[0]["spans"].as_array().expect("spans");
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1]["references"][0]["spanID"], json!(hex(&[1; 8])));
        assert_eq!(spans[1]["duration"], json!(5));
        let processes = traces[0]["processes"].as_object().expect("processes");
        let services: BTreeSet<&str> = processes
            .values()
            .filter_map(|process| process["serviceName"].as_str())
            .collect();
        assert_eq!(services, BTreeSet::from(["edge", "mvcc"]));

        assert_eq!(store.services()["data"], json!(["edge", "mvcc"]));
        assert!(store.trace(&hex(&[2; 16])).is_some());
        assert!(store.trace(&hex(&[9; 16])).is_none());
    }

    #[test]
    fn the_oldest_spans_leave_first() {
        let store = SpanStore::new(2);
        for id in 1..=3 {
            store.add(export(
                "edge",
                vec![span(id, id, None, "KV/Put", u64::from(id))],
            ));
        }
        assert!(store.trace(&hex(&[1; 16])).is_none());
        assert_eq!(
            store.search("edge", None, 10)["data"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }
}

//! Per-span limits, the OpenTelemetry SDK's span limits enforced at the door: one span with ten
//! thousand attributes or a 50 MB attribute value must not cost every exporter, the enrichment
//! buffer and the store its size. As the SDKs do, extra attributes, events and links are
//! dropped (the first ones kept) and counted in the span's OTLP `dropped_*_count` fields, and
//! long string and bytes values are cut; a span still larger than `max_span_bytes` is taken out
//! of the request and reported through `partial_success`, like an invalid span.
//!
//! One pass over the spans; nothing is allocated unless a span exceeds a limit.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::shared::{ByteSize, Issues};

/// `receivers.<id>.span_limits`. The counts are the OpenTelemetry SDKs' own defaults, so a span
/// an SDK produced is never cut by them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanLimitsConfig {
    pub max_attributes_per_span: usize,
    /// Attributes of each event, and of each link.
    pub max_attributes_per_event: usize,
    pub max_attributes_per_link: usize,
    /// Longer strings are cut at a UTF-8 character boundary, longer bytes values at this many
    /// bytes; inside arrays and key-value lists too. 64 KiB keeps a deep Java stack trace
    /// (`exception.stacktrace`) whole.
    pub max_attribute_value_bytes: ByteSize,
    pub max_events_per_span: usize,
    pub max_links_per_span: usize,
    /// A span whose encoding is larger after the cuts above is rejected.
    pub max_span_bytes: ByteSize,
}

impl Default for SpanLimitsConfig {
    fn default() -> Self {
        SpanLimitsConfig {
            max_attributes_per_span: 128,
            max_attributes_per_event: 128,
            max_attributes_per_link: 128,
            max_attribute_value_bytes: ByteSize(64 << 10),
            max_events_per_span: 128,
            max_links_per_span: 128,
            max_span_bytes: ByteSize::mib(1),
        }
    }
}

impl SpanLimitsConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        let counts = [
            ("max_attributes_per_span", self.max_attributes_per_span),
            ("max_attributes_per_event", self.max_attributes_per_event),
            ("max_attributes_per_link", self.max_attributes_per_link),
            ("max_events_per_span", self.max_events_per_span),
            ("max_links_per_span", self.max_links_per_span),
        ];
        for (key, n) in counts {
            if n > u32::MAX as usize {
                issues.push(format!("{path}.{key}"), "must fit the OTLP dropped count (at most 4294967295)");
            }
        }
        if self.max_attribute_value_bytes.0 == 0 {
            issues.push(format!("{path}.max_attribute_value_bytes"), "must be at least 1 byte");
        }
        // Room for the ids, times and name of any span.
        if self.max_span_bytes.0 < 1024 {
            issues.push(format!("{path}.max_span_bytes"), "must be at least 1KiB");
        }
    }
}

/// What the limits changed in one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitedSpans {
    /// Attributes dropped (of spans, events and links).
    pub attributes: usize,
    /// String and bytes values cut.
    pub values: usize,
    pub events: usize,
    pub links: usize,
    /// Spans taken out of the request as too large, with their (trace id, span id).
    pub rejected: Vec<(Vec<u8>, Vec<u8>)>,
}

impl LimitedSpans {
    /// Every count with its label for `tracegate_receiver_span_limited_total{what}`.
    pub fn counts(&self) -> [(&'static str, usize); 4] {
        [("attributes", self.attributes), ("attribute_values", self.values), ("events", self.events), ("links", self.links)]
    }

    pub fn changed(&self) -> bool {
        self.attributes + self.values + self.events + self.links + self.rejected.len() > 0
    }

    /// The `partial_success` message for the rejected spans.
    pub fn rejection_message(&self, config: &SpanLimitsConfig) -> String {
        format!(
            "{} spans rejected: larger than max_span_bytes ({}) after attributes, events and links were limited",
            self.rejected.len(),
            config.max_span_bytes
        )
    }
}

impl SpanLimitsConfig {
    /// Applies the limits to every span of `batch`. `size_bound`, when known, is an upper bound
    /// of any one span's encoded size (the protobuf body's length): at or under `max_span_bytes`
    /// no span's size needs computing. Resources left without spans are removed.
    pub fn apply(&self, batch: &mut Vec<ResourceSpans>, size_bound: Option<usize>) -> LimitedSpans {
        let mut limited = LimitedSpans::default();
        let max_span = self.max_span_bytes.as_usize();
        let check_size = size_bound.is_none_or(|bound| bound > max_span);
        for rs in batch.iter_mut() {
            for ss in &mut rs.scope_spans {
                ss.spans.retain_mut(|span| {
                    self.limit(span, &mut limited);
                    if check_size && span.encoded_len() > max_span {
                        limited.rejected.push((std::mem::take(&mut span.trace_id), std::mem::take(&mut span.span_id)));
                        return false;
                    }
                    true
                });
            }
            if !limited.rejected.is_empty() {
                rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            }
        }
        if !limited.rejected.is_empty() {
            batch.retain(|rs| !rs.scope_spans.is_empty());
        }
        limited
    }

    fn limit(&self, span: &mut Span, limited: &mut LimitedSpans) {
        let max_value = self.max_attribute_value_bytes.as_usize();
        let dropped = limit_attributes(&mut span.attributes, self.max_attributes_per_span, max_value, &mut limited.values);
        span.dropped_attributes_count = span.dropped_attributes_count.saturating_add(dropped);
        limited.attributes += dropped as usize;
        limited.events += truncate_counted(&mut span.events, self.max_events_per_span, &mut span.dropped_events_count);
        for event in &mut span.events {
            let dropped = limit_attributes(&mut event.attributes, self.max_attributes_per_event, max_value, &mut limited.values);
            event.dropped_attributes_count = event.dropped_attributes_count.saturating_add(dropped);
            limited.attributes += dropped as usize;
        }
        limited.links += truncate_counted(&mut span.links, self.max_links_per_span, &mut span.dropped_links_count);
        for link in &mut span.links {
            let dropped = limit_attributes(&mut link.attributes, self.max_attributes_per_link, max_value, &mut limited.values);
            link.dropped_attributes_count = link.dropped_attributes_count.saturating_add(dropped);
            limited.attributes += dropped as usize;
        }
    }
}

/// Keeps the first `max` items (events or links, as the SDKs do) and adds what was cut to the
/// span's OTLP `dropped_*_count`; returns how many were cut.
fn truncate_counted<T>(items: &mut Vec<T>, max: usize, dropped_count: &mut u32) -> usize {
    let dropped = items.len().saturating_sub(max);
    if dropped > 0 {
        items.truncate(max);
        *dropped_count = dropped_count.saturating_add(u32::try_from(dropped).unwrap_or(u32::MAX));
    }
    dropped
}

/// Keeps the first `max` attributes and cuts long values; returns how many attributes it dropped.
fn limit_attributes(attributes: &mut Vec<KeyValue>, max: usize, max_value: usize, values: &mut usize) -> u32 {
    let dropped = attributes.len().saturating_sub(max);
    attributes.truncate(max);
    for kv in attributes.iter_mut() {
        if let Some(value) = kv.value.as_mut() {
            *values += cut_value(value, max_value);
        }
    }
    dropped.min(u32::MAX as usize) as u32
}

/// Cuts strings and bytes longer than `max` (recursing into arrays and key-value lists);
/// returns how many it cut.
fn cut_value(value: &mut AnyValue, max: usize) -> usize {
    match value.value.as_mut() {
        Some(Value::StringValue(s)) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            1
        }
        Some(Value::BytesValue(b)) if b.len() > max => {
            b.truncate(max);
            1
        }
        Some(Value::ArrayValue(array)) => array.values.iter_mut().map(|v| cut_value(v, max)).sum(),
        Some(Value::KvlistValue(list)) => list.values.iter_mut().filter_map(|kv| kv.value.as_mut()).map(|v| cut_value(v, max)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn batch(spans: Vec<Span>) -> Vec<ResourceSpans> {
        vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }]
    }

    fn small() -> SpanLimitsConfig {
        SpanLimitsConfig {
            max_attributes_per_span: 3,
            max_attributes_per_event: 1,
            max_attributes_per_link: 1,
            max_attribute_value_bytes: ByteSize(5),
            max_events_per_span: 2,
            max_links_per_span: 1,
            max_span_bytes: ByteSize(1024),
        }
    }

    #[test]
    fn extra_attributes_events_and_links_are_dropped_and_counted_in_the_span() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            attributes: (0..5).map(|i| kv(&format!("k{i}"), Value::IntValue(i))).collect(),
            dropped_attributes_count: 2,
            events: (0..4)
                .map(|i| Event { name: format!("e{i}"), attributes: vec![kv("a", Value::BoolValue(true)); 2], ..Default::default() })
                .collect(),
            links: vec![Link { trace_id: vec![2; 16], span_id: vec![2; 8], ..Default::default() }; 3],
            ..Default::default()
        };
        let mut batch = batch(vec![span]);
        let limited = small().apply(&mut batch, None);
        let span = &batch[0].scope_spans[0].spans[0];
        assert_eq!(span.attributes.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["k0", "k1", "k2"], "the first ones are kept");
        assert_eq!(span.dropped_attributes_count, 4, "added to what the SDK already dropped");
        assert_eq!((span.events.len(), span.dropped_events_count), (2, 2));
        assert_eq!((span.events[0].attributes.len(), span.events[0].dropped_attributes_count), (1, 1));
        assert_eq!((span.links.len(), span.dropped_links_count), (1, 2));
        assert_eq!(limited, LimitedSpans { attributes: 2 + 2, values: 0, events: 2, links: 2, rejected: vec![] });
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary_inside_arrays_too() {
        let array = Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::StringValue("abcdefgh".into())) }] });
        let span = Span {
            attributes: vec![
                kv("s", Value::StringValue("ab\u{e9}\u{e9}".into())), // 6 bytes: the second é straddles byte 5
                kv("b", Value::BytesValue(vec![7; 9])),
                kv("a", array),
            ],
            ..Default::default()
        };
        let mut batch = batch(vec![span]);
        let limited = small().apply(&mut batch, Some(100));
        let attrs = &batch[0].scope_spans[0].spans[0].attributes;
        assert_eq!(attrs[0].value.as_ref().unwrap().value, Some(Value::StringValue("ab\u{e9}".into())));
        assert_eq!(attrs[1].value.as_ref().unwrap().value, Some(Value::BytesValue(vec![7; 5])));
        let Some(Value::ArrayValue(a)) = &attrs[2].value.as_ref().unwrap().value else { panic!("array kept") };
        assert_eq!(a.values[0].value, Some(Value::StringValue("abcde".into())));
        assert_eq!(limited.values, 3);
        assert_eq!(batch[0].scope_spans[0].spans[0].dropped_attributes_count, 0, "cut values are not dropped attributes");
    }

    #[test]
    fn a_span_too_large_after_the_cuts_is_taken_out_and_the_rest_kept() {
        let big = Span { trace_id: vec![1; 16], span_id: vec![9; 8], name: "x".repeat(2000), ..Default::default() };
        let fine = Span { trace_id: vec![1; 16], span_id: vec![1; 8], name: "ok".into(), ..Default::default() };
        let mut request = vec![batch(vec![big]).remove(0), batch(vec![fine.clone()]).remove(0)];
        let limited = small().apply(&mut request, None);
        assert_eq!(limited.rejected, vec![(vec![1; 16], vec![9; 8])]);
        assert_eq!(request.len(), 1, "a resource left without spans is removed");
        assert_eq!(request[0].scope_spans[0].spans, vec![fine]);
        assert!(limited.rejection_message(&small()).contains("1 spans rejected"), "{}", limited.rejection_message(&small()));
    }

    #[test]
    fn a_normal_span_is_untouched_and_its_size_unread_under_a_small_bound() {
        let span = Span { name: "x".repeat(2000), attributes: vec![kv("k", Value::StringValue("abc".into()))], ..Default::default() };
        let mut request = batch(vec![span.clone()]);
        let limited = small().apply(&mut request, Some(1000));
        assert!(!limited.changed());
        assert_eq!(request[0].scope_spans[0].spans[0], span);
    }
}

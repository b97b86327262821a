//! What OTLP requires of every span: a 16-byte trace id and an 8-byte span id, neither all
//! zero. A span that breaks it is taken out of the request and reported through
//! `partial_success`; the rest of the request goes on, so one bad span cannot make a downstream
//! refuse a whole merged batch later.

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// Spans taken out of a request, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpans {
    pub spans: usize,
    pub message: String,
}

/// Removes the spans OTLP forbids; `None` when every span is valid.
pub fn drop_invalid_spans(batch: &mut Vec<ResourceSpans>) -> Option<InvalidSpans> {
    let valid_id = |id: &[u8], len: usize| id.len() == len && id.iter().any(|b| *b != 0);
    let (mut bad_trace, mut bad_span) = (0usize, 0usize);
    for rs in batch.iter_mut() {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| {
                if !valid_id(&span.trace_id, 16) {
                    bad_trace += 1;
                    false
                } else if !valid_id(&span.span_id, 8) {
                    bad_span += 1;
                    false
                } else {
                    true
                }
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    if bad_trace + bad_span == 0 {
        return None;
    }
    batch.retain(|rs| !rs.scope_spans.is_empty());
    let mut reasons = Vec::new();
    if bad_trace > 0 {
        reasons.push(format!("{bad_trace} with a trace_id that is not 16 bytes or is all zero"));
    }
    if bad_span > 0 {
        reasons.push(format!("{bad_span} with a span_id that is not 8 bytes or is all zero"));
    }
    Some(InvalidSpans { spans: bad_trace + bad_span, message: format!("invalid spans rejected: {}", reasons.join("; ")) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    #[test]
    fn spans_with_bad_ids_are_taken_out_and_counted() {
        let span = |trace: Vec<u8>, id: Vec<u8>| Span { trace_id: trace, span_id: id, ..Default::default() };
        let mut batch = vec![
            ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(vec![1; 16], vec![1; 8]), span(vec![1; 3], vec![2; 8]), span(vec![0; 16], vec![3; 8])],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span(vec![2; 16], vec![0; 8])], ..Default::default() }],
                ..Default::default()
            },
        ];
        let invalid = drop_invalid_spans(&mut batch).unwrap();
        assert_eq!(invalid.spans, 3);
        assert!(invalid.message.contains("2 with a trace_id") && invalid.message.contains("1 with a span_id"), "{}", invalid.message);
        assert_eq!(batch.len(), 1, "a resource left without spans is removed");
        assert_eq!(batch[0].scope_spans[0].spans.len(), 1);
        assert!(drop_invalid_spans(&mut batch).is_none());
    }
}

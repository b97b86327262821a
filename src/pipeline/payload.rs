//! A batch of spans as it travels from a receiver to the exporters.

use std::sync::OnceLock;

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// The spans of one accepted request, after the pipeline's processors. Shared read-only by every
/// exporter queue it was admitted to.
#[derive(Debug)]
pub struct Payload {
    pub resource_spans: Vec<ResourceSpans>,
    span_count: usize,
    encoded: OnceLock<Bytes>,
}

impl Payload {
    pub fn new(resource_spans: Vec<ResourceSpans>) -> Payload {
        let span_count = count_spans(&resource_spans);
        Payload {
            resource_spans,
            span_count,
            encoded: OnceLock::new(),
        }
    }

    pub fn span_count(&self) -> usize {
        self.span_count
    }

    /// The spans as the body of an `ExportTraceServiceRequest` (its field 1, repeated). Bodies of
    /// several payloads concatenate into one valid request. Encoded once, whoever asks first.
    pub fn encoded_request(&self) -> &Bytes {
        self.encoded.get_or_init(|| {
            let len: usize = self
                .resource_spans
                .iter()
                .map(|rs| prost::encoding::message::encoded_len(1, rs))
                .sum();
            let mut buf = Vec::with_capacity(len);
            for rs in &self.resource_spans {
                prost::encoding::message::encode(1, rs, &mut buf);
            }
            Bytes::from(buf)
        })
    }
}

pub fn count_spans(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// Checks that the concatenation trick stays valid.
#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
    use prost::Message;

    fn rs(name: &str) -> ResourceSpans {
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: name.into(),
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn concatenated_bodies_decode_as_one_request() {
        let a = Payload::new(vec![rs("a")]);
        let b = Payload::new(vec![rs("b"), rs("c")]);
        assert_eq!(b.span_count(), 2);
        let mut body = a.encoded_request().to_vec();
        body.extend_from_slice(b.encoded_request());
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let names: Vec<_> = decoded
            .resource_spans
            .iter()
            .map(|r| r.scope_spans[0].spans[0].name.clone())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            ExportTraceServiceRequest {
                resource_spans: vec![rs("a")]
            }
            .encode_to_vec(),
            a.encoded_request().to_vec()
        );
    }
}

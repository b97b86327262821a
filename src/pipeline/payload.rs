//! `Payload`: a batch of spans as it travels from a receiver to the exporters.
//!
//! A payload bound only for OTLP exporters is kept encoded: its decoded form (about four times
//! larger) is dropped at admission, so a queue full of spans waiting for a dead peer costs the
//! wire size. Exporters that read spans (embedded, debug) get them decoded.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;

/// The spans of one accepted request, after the pipeline's processors. Shared read-only by every
/// exporter queue it was admitted to.
#[derive(Debug)]
pub struct Payload {
    decoded: Option<Vec<ResourceSpans>>,
    span_count: usize,
    /// Field 1 of an `ExportTraceServiceRequest`, one part per `ResourceSpans`: any parts,
    /// concatenated, are a valid request body.
    parts: OnceLock<Vec<Bytes>>,
}

impl Payload {
    /// A payload that keeps its spans decoded (encoded on first use).
    pub fn new(resource_spans: Vec<ResourceSpans>) -> Payload {
        let span_count = count_spans(&resource_spans);
        Payload { decoded: Some(resource_spans), span_count, parts: OnceLock::new() }
    }

    /// A payload kept only encoded.
    pub fn encoded_only(resource_spans: Vec<ResourceSpans>) -> Payload {
        let span_count = count_spans(&resource_spans);
        let parts = OnceLock::new();
        let _ = parts.set(encode_parts(&resource_spans));
        Payload { decoded: None, span_count, parts }
    }

    pub fn span_count(&self) -> usize {
        self.span_count
    }

    /// The spans, decoded from the parts if the payload was kept encoded.
    pub fn resource_spans(&self) -> Cow<'_, [ResourceSpans]> {
        match &self.decoded {
            Some(rs) => Cow::Borrowed(rs.as_slice()),
            None => Cow::Owned(
                self.parts()
                    .iter()
                    .filter_map(|part| {
                        // A part is `tag, length, message`; decode it as a one-field request.
                        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(part.as_ref()).ok()
                    })
                    .flat_map(|r| r.resource_spans)
                    .collect(),
            ),
        }
    }

    /// The encoded parts, encoded once, whoever asks first.
    pub fn parts(&self) -> &[Bytes] {
        self.parts.get_or_init(|| encode_parts(self.decoded.as_deref().unwrap_or_default()))
    }

    /// The payload as one `ExportTraceServiceRequest` body (a disk-queue record).
    pub fn request_bytes(&self) -> Bytes {
        let parts = self.parts();
        if parts.len() == 1 {
            return parts[0].clone();
        }
        let mut body = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
        for part in parts {
            body.extend_from_slice(part);
        }
        Bytes::from(body)
    }

    /// A payload read back from `request_bytes` (a disk-queue record).
    pub fn from_request_bytes(body: &[u8], keep_decoded: bool) -> Result<Payload, prost::DecodeError> {
        let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)?;
        Ok(if keep_decoded { Payload::new(request.resource_spans) } else { Payload::encoded_only(request.resource_spans) })
    }

    /// The size of the payload as a request body.
    pub fn encoded_len(&self) -> usize {
        self.parts().iter().map(Bytes::len).sum()
    }

    /// The payload cut in two halves by span count, kept decoded or encoded as it was.
    pub fn halves(&self) -> (Payload, Payload) {
        let (a, b) = split_spans(self.resource_spans().into_owned(), self.span_count / 2);
        match self.decoded {
            Some(_) => (Payload::new(a), Payload::new(b)),
            None => (Payload::encoded_only(a), Payload::encoded_only(b)),
        }
    }

    /// Splits a payload into pieces of at most `max_bytes` each (a single span larger than that
    /// stays alone in its piece).
    pub fn split(&self, max_bytes: usize) -> Vec<Payload> {
        let mut pieces = Vec::new();
        let mut current: Vec<ResourceSpans> = Vec::new();
        let mut size = 0usize;
        for rs in self.resource_spans().iter() {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let cost = span.encoded_len() + 16;
                    if size + cost > max_bytes && size > 0 {
                        pieces.push(Payload::encoded_only(std::mem::take(&mut current)));
                        size = 0;
                    }
                    let same_scope = current.last().is_some_and(|last| last.resource == rs.resource && last.schema_url == rs.schema_url)
                        && current
                            .last()
                            .and_then(|l| l.scope_spans.last())
                            .is_some_and(|l| l.scope == ss.scope && l.schema_url == ss.schema_url);
                    if !same_scope {
                        let overhead =
                            rs.resource.as_ref().map_or(0, |r| r.encoded_len()) + ss.scope.as_ref().map_or(0, |s| s.encoded_len()) + 32;
                        size += overhead;
                        current.push(ResourceSpans {
                            resource: rs.resource.clone(),
                            schema_url: rs.schema_url.clone(),
                            scope_spans: vec![ScopeSpans { scope: ss.scope.clone(), schema_url: ss.schema_url.clone(), spans: Vec::new() }],
                        });
                    }
                    // Just pushed or matched above, so both exist.
                    if let Some(scope) = current.last_mut().and_then(|r| r.scope_spans.last_mut()) {
                        scope.spans.push(span.clone());
                    }
                    size += cost;
                }
            }
        }
        if !current.is_empty() {
            pieces.push(Payload::encoded_only(current));
        }
        pieces
    }
}

fn encode_parts(resource_spans: &[ResourceSpans]) -> Vec<Bytes> {
    resource_spans
        .iter()
        .map(|rs| {
            let mut buf = Vec::with_capacity(prost::encoding::message::encoded_len(1, rs));
            prost::encoding::message::encode(1, rs, &mut buf);
            Bytes::from(buf)
        })
        .collect()
}

pub fn count_spans(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

/// Splits a batch after its first `n` spans; resources and scopes cut in two keep their
/// descriptions on both sides.
pub fn split_spans(batch: Vec<ResourceSpans>, n: usize) -> (Vec<ResourceSpans>, Vec<ResourceSpans>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut left = n;
    for mut rs in batch {
        if left == 0 {
            tail.push(rs);
            continue;
        }
        let mut rest = ResourceSpans { resource: rs.resource.clone(), scope_spans: Vec::new(), schema_url: rs.schema_url.clone() };
        let mut kept = Vec::new();
        for mut ss in std::mem::take(&mut rs.scope_spans) {
            if left >= ss.spans.len() {
                left -= ss.spans.len();
                kept.push(ss);
            } else if left == 0 {
                rest.scope_spans.push(ss);
            } else {
                let later = ss.spans.split_off(left);
                left = 0;
                rest.scope_spans.push(ScopeSpans { scope: ss.scope.clone(), spans: later, schema_url: ss.schema_url.clone() });
                kept.push(ss);
            }
        }
        rs.scope_spans = kept;
        if !rs.scope_spans.is_empty() {
            head.push(rs);
        }
        if !rest.scope_spans.is_empty() {
            tail.push(rest);
        }
    }
    (head, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_after_n_spans_keeping_resources_and_scopes() {
        use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let rs = |name: &str, scopes: &[usize]| ResourceSpans {
            resource: Some(Resource { dropped_attributes_count: name.len() as u32, ..Default::default() }),
            scope_spans: scopes
                .iter()
                .map(|&n| ScopeSpans {
                    scope: Some(InstrumentationScope { name: format!("{name}-{n}"), ..Default::default() }),
                    spans: (0..n)
                        .map(|i| opentelemetry_proto::tonic::trace::v1::Span { name: format!("{name}{i}"), ..Default::default() })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let batch = vec![rs("a", &[2, 3]), rs("bb", &[4])];
        for n in 0..=9 {
            let (head, tail) = split_spans(batch.clone(), n);
            assert_eq!((count_spans(&head), count_spans(&tail)), (n, 9 - n), "n = {n}");
            let names = |b: &[ResourceSpans]| -> Vec<String> {
                b.iter().flat_map(|r| &r.scope_spans).flat_map(|s| s.spans.iter().map(|x| x.name.clone())).collect()
            };
            let mut all = names(&head);
            all.extend(names(&tail));
            assert_eq!(all, names(&batch), "n = {n}: every span once, in order");
            for part in head.iter().chain(&tail) {
                assert!(part.resource.is_some() && part.scope_spans.iter().all(|s| s.scope.is_some() && !s.spans.is_empty()));
            }
        }
    }
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn rs(name: &str, spans: usize) -> ResourceSpans {
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span { name: format!("{name}{i}"), trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn body(payloads: &[&Payload]) -> Vec<u8> {
        payloads.iter().flat_map(|p| p.parts()).flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn concatenated_parts_decode_as_one_request() {
        let a = Payload::new(vec![rs("a", 1)]);
        let b = Payload::encoded_only(vec![rs("b", 1), rs("c", 1)]);
        assert_eq!(b.span_count(), 2);
        let decoded = ExportTraceServiceRequest::decode(body(&[&a, &b]).as_slice()).unwrap();
        let names: Vec<_> = decoded.resource_spans.iter().map(|r| r.scope_spans[0].spans[0].name.clone()).collect();
        assert_eq!(names, ["a0", "b0", "c0"]);
        assert_eq!(ExportTraceServiceRequest { resource_spans: vec![rs("a", 1)] }.encode_to_vec(), body(&[&a]));
        assert_eq!(b.resource_spans().len(), 2, "an encoded-only payload decodes on demand");
        assert_eq!(b.resource_spans()[1].scope_spans[0].spans[0].name, "c0");
    }

    #[test]
    fn split_respects_the_byte_limit_and_keeps_every_span() {
        let p = Payload::new(vec![rs("x", 500), rs("y", 300)]);
        let total = p.encoded_len();
        let pieces = p.split(total / 5);
        assert!(pieces.len() >= 5, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|piece| piece.encoded_len() <= total / 5), "every piece fits");
        assert_eq!(pieces.iter().map(Payload::span_count).sum::<usize>(), 800);
        let names: Vec<String> = pieces
            .iter()
            .flat_map(|piece| piece.resource_spans().into_owned())
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .map(|s| s.name)
            .collect();
        assert_eq!(names.len(), 800);
        assert_eq!(names[0], "x0");
        assert_eq!(names[799], "y299");
    }
}

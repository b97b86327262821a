//! Generators that byte mutation rarely reaches on its own: nesting far past every recursion
//! limit (stack overflow is a crash class of its own), raw protobuf wire data with huge length
//! prefixes and unknown groups, random but well-formed OTLP requests, and compression framing.

use std::io::Write;

use fastrand::Rng;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Kind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::mutate::{varint, INTERESTING};

/// Nesting depths around the limits of serde_json (128), prost (100), serde_yaml_ng (128), and
/// far beyond them (a quarter of the time: those inputs are large and slow).
pub fn depth(rng: &mut Rng) -> usize {
    const NEAR: [usize; 12] = [1, 2, 31, 32, 33, 50, 99, 100, 101, 127, 128, 129];
    const FAR: [usize; 4] = [500, 5_000, 30_000, 100_000];
    if rng.u8(..4) == 0 {
        FAR[rng.usize(..FAR.len())]
    } else {
        NEAR[rng.usize(..NEAR.len())]
    }
}

/// `prefix open^n leaf close^n suffix`; with `closed == false` the closings stop early.
pub fn nested(prefix: &str, open: &str, leaf: &str, close: &str, suffix: &str, n: usize, closed: bool) -> Vec<u8> {
    let closes = if closed { n } else { n / 2 };
    let mut out = Vec::with_capacity(prefix.len() + n * (open.len() + close.len()) + leaf.len() + suffix.len());
    out.extend_from_slice(prefix.as_bytes());
    (0..n).for_each(|_| out.extend_from_slice(open.as_bytes()));
    out.extend_from_slice(leaf.as_bytes());
    (0..closes).for_each(|_| out.extend_from_slice(close.as_bytes()));
    if closed {
        out.extend_from_slice(suffix.as_bytes());
    }
    out
}

/// Protobuf built inside out in reverse, so wrapping `n` levels costs O(n), not O(n^2).
pub struct Inside(Vec<u8>);

impl Inside {
    pub fn new(innermost: &[u8]) -> Inside {
        Inside(innermost.iter().rev().copied().collect())
    }
    /// Makes everything so far the payload of length-delimited field `field`.
    pub fn wrap(&mut self, field: u32) -> &mut Self {
        let len = varint(self.0.len() as u64);
        self.0.extend(len.iter().rev());
        self.0.extend(varint(u64::from(field) << 3 | 2).iter().rev());
        self
    }
    /// Puts complete encoded fields in front.
    pub fn before(&mut self, fields: &[u8]) -> &mut Self {
        self.0.extend(fields.iter().rev());
        self
    }
    pub fn finish(&self) -> Vec<u8> {
        self.0.iter().rev().copied().collect()
    }
}

/// A length-delimited field.
pub fn ld(field: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = varint(u64::from(field) << 3 | 2);
    out.extend(varint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

/// An export request whose one span carries an attribute nested `n` AnyValues deep (kvlist or
/// array levels, or a mix).
pub fn deep_protobuf_attribute(rng: &mut Rng, n: usize) -> Vec<u8> {
    let style = rng.u8(..3);
    let mut b = Inside::new(&[0x18, 0x01]); // AnyValue { int_value: 1 }
    for i in 0..n {
        let kvlist = match style {
            0 => true,
            1 => false,
            _ => i % 2 == 0,
        };
        if kvlist {
            b.wrap(2).before(&ld(1, b"k")).wrap(1).wrap(6); // KeyValue.value, KeyValueList.values, AnyValue.kvlist_value
        } else {
            b.wrap(1).wrap(5); // ArrayValue.values, AnyValue.array_value
        }
    }
    b.wrap(2).before(&ld(1, b"deep")).wrap(9); // KeyValue.value, Span.attributes
    b.before(&[ld(1, &[1; 16]), ld(2, &[2; 8]), ld(5, b"op")].concat());
    b.wrap(2).wrap(2).wrap(1); // ScopeSpans.spans, ResourceSpans.scope_spans, request.resource_spans
    b.finish()
}

/// Protobuf that nests unknown groups (wire types 3/4) or unknown messages `n` deep.
pub fn deep_protobuf_unknown(rng: &mut Rng, n: usize) -> Vec<u8> {
    if rng.bool() {
        // Field 15, start group / end group.
        let mut out = vec![0x7b; n];
        out.extend(std::iter::repeat_n(0x7c, if rng.bool() { n } else { n / 2 }));
        out
    } else {
        let mut b = Inside::new(b"");
        for _ in 0..n {
            b.wrap(1000 + rng.u32(..8));
        }
        b.finish()
    }
}

/// Raw wire data: random fields of random wire types, with lengths that lie.
pub fn random_wire(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.usize(1..24) {
        let field = if rng.u8(..3) == 0 { rng.u64(1..(1 << 29)) } else { rng.u64(1..16) };
        let wire = rng.u64(..8); // 6 and 7 do not exist.
        out.extend(varint(field << 3 | wire));
        match wire {
            0 => out.extend(varint(INTERESTING[rng.usize(..INTERESTING.len())])),
            1 => out.extend(rng.u64(..).to_le_bytes()),
            2 => {
                let len = rng.usize(..64);
                let claimed = if rng.u8(..4) == 0 { INTERESTING[rng.usize(..INTERESTING.len())] } else { len as u64 };
                out.extend(varint(claimed));
                out.extend((0..len).map(|_| rng.u8(..)));
            }
            5 => out.extend(rng.u32(..).to_le_bytes()),
            _ => {}
        }
    }
    out
}

fn random_string(rng: &mut Rng) -> String {
    match rng.u8(..6) {
        0 => String::new(),
        1 => "x".repeat(rng.usize(..5000)),
        2 => ["order.id", "http.request.header.authorization", "service.name", "url.path", "A-1001"][rng.usize(..5)].into(),
        3 => {
            let n = rng.usize(..16);
            std::iter::repeat_with(|| rng.char(..)).take(n).collect()
        }
        _ => {
            let n = rng.usize(..24);
            std::iter::repeat_with(|| rng.alphanumeric()).take(n).collect()
        }
    }
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = [0, 1, 8, 15, 16, 17, 32][rng.usize(..7)];
    (0..len).map(|_| rng.u8(..)).collect()
}

fn random_any(rng: &mut Rng, depth: u32) -> AnyValue {
    let value = match rng.u8(..if depth == 0 { 5 } else { 8 }) {
        0 => Some(Kind::StringValue(random_string(rng))),
        1 => Some(Kind::BoolValue(rng.bool())),
        2 => Some(Kind::IntValue(rng.i64(..))),
        3 => Some(Kind::DoubleValue(f64::from_bits(rng.u64(..)))),
        4 => None,
        5 => Some(Kind::BytesValue(random_bytes(rng))),
        6 => Some(Kind::ArrayValue(ArrayValue { values: (0..rng.usize(..4)).map(|_| random_any(rng, depth - 1)).collect() })),
        _ => Some(Kind::KvlistValue(KeyValueList { values: random_attributes(rng, depth - 1) })),
    };
    AnyValue { value }
}

fn random_attributes(rng: &mut Rng, depth: u32) -> Vec<KeyValue> {
    (0..rng.usize(..5))
        .map(|_| KeyValue {
            key: random_string(rng),
            value: if rng.u8(..8) == 0 { None } else { Some(random_any(rng, depth)) },
            ..Default::default()
        })
        .collect()
}

/// A well-typed request with random content: ids of every length, invalid enum values, NaN
/// doubles, nested attributes, events and links.
pub fn random_request(rng: &mut Rng) -> ExportTraceServiceRequest {
    let span = |rng: &mut Rng| Span {
        trace_id: random_bytes(rng),
        span_id: random_bytes(rng),
        parent_span_id: random_bytes(rng),
        trace_state: random_string(rng),
        flags: rng.u32(..),
        name: random_string(rng),
        kind: [0, 1, 2, 5, 6, -1, i32::MAX][rng.usize(..7)],
        start_time_unix_nano: INTERESTING[rng.usize(..INTERESTING.len())],
        end_time_unix_nano: rng.u64(..),
        attributes: random_attributes(rng, 3),
        dropped_attributes_count: rng.u32(..),
        events: (0..rng.usize(..3))
            .map(|_| Event {
                time_unix_nano: rng.u64(..),
                name: random_string(rng),
                attributes: random_attributes(rng, 2),
                ..Default::default()
            })
            .collect(),
        links: (0..rng.usize(..3))
            .map(|_| Link {
                trace_id: random_bytes(rng),
                span_id: random_bytes(rng),
                attributes: random_attributes(rng, 2),
                flags: rng.u32(..),
                ..Default::default()
            })
            .collect(),
        status: rng.bool().then(|| Status { message: random_string(rng), code: [0, 1, 2, 3, -7][rng.usize(..5)] }),
        ..Default::default()
    };
    let resource_spans = (0..rng.usize(..3))
        .map(|_| ResourceSpans {
            resource: rng.bool().then(|| Resource { attributes: random_attributes(rng, 2), ..Default::default() }),
            scope_spans: (0..rng.usize(..3))
                .map(|_| ScopeSpans {
                    scope: rng.bool().then(|| InstrumentationScope {
                        name: random_string(rng),
                        version: random_string(rng),
                        ..Default::default()
                    }),
                    spans: (0..rng.usize(..4)).map(|_| span(rng)).collect(),
                    schema_url: random_string(rng),
                })
                .collect(),
            schema_url: random_string(rng),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// `Content-Encoding` values an OTLP/HTTP body may name; an input's first byte picks one.
pub const ENCODINGS: [Option<&str>; 8] =
    [None, Some("gzip"), Some("zstd"), Some("deflate"), Some("x-gzip"), Some("identity"), Some(" GZIP "), Some("br")];

/// A body framed as a target input: the first byte picks the `Content-Encoding`, the rest is the
/// body, compressed to match (or not, or corrupted after compressing).
pub fn framed(rng: &mut Rng, payload: &[u8], bombs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    if !bombs.is_empty() && rng.u8(..=255) == 0 {
        let (selector, bomb) = &bombs[rng.usize(..bombs.len())];
        return [&[*selector][..], bomb].concat();
    }
    let selector = if rng.u8(..3) == 0 { rng.u8(..ENCODINGS.len() as u8) } else { 0 };
    let mut body = match ENCODINGS[selector as usize].map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        Some("gzip" | "x-gzip") if rng.u8(..8) != 0 => gzip(payload, rng.u8(..3) == 0),
        Some("zstd") if rng.u8(..8) != 0 => zstd::encode_all(payload, 1).expect("zstd into memory"),
        Some("deflate") if rng.u8(..8) != 0 => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(payload).expect("into memory");
            z.finish().expect("into memory")
        }
        _ => payload.to_vec(),
    };
    if selector != 0 && rng.u8(..3) == 0 {
        // Corrupt the compressed stream: a flipped bit, a cut, or a lying trailer.
        match rng.u8(..3) {
            0 if !body.is_empty() => {
                let i = rng.usize(..body.len());
                body[i] ^= 1 << rng.u32(..8);
            }
            1 if !body.is_empty() => body.truncate(rng.usize(..body.len())),
            _ => body.extend_from_slice(&body.clone()[..body.len().min(32)]),
        }
    }
    [&[selector][..], &body].concat()
}

/// Gzip of `data`; `members` splits it into several gzip members (MultiGzDecoder reads all).
pub fn gzip(data: &[u8], members: bool) -> Vec<u8> {
    let one = |part: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(part).expect("into memory");
        enc.finish().expect("into memory")
    };
    if members && data.len() > 1 {
        let (a, b) = data.split_at(data.len() / 2);
        [one(a), one(b)].concat()
    } else {
        one(data)
    }
}

/// Decompression bombs (computed once per test binary): gzip, zstd and deflate of far more zeros than
/// the limits allow, and a bomb spread over many small gzip members.
pub fn bombs() -> Vec<(u8, Vec<u8>)> {
    let zeros = vec![0u8; 80 << 20];
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&zeros).expect("into memory");
    let member = gzip(&zeros[..1 << 20], false);
    vec![
        (1, gzip(&zeros, false)),
        (2, zstd::encode_all(&zeros[..], 3).expect("into memory")),
        (3, z.finish().expect("into memory")),
        (1, member.repeat(80)),
    ]
}

//! Turning an OTLP body into spans: decompression within limits, then protobuf or JSON.
//! Large bodies do both on tokio's blocking pool, in one hand-off (`inflate_and_parse`).
//! OTLP/HTTP bodies and OTLP/gRPC messages both come through here.

use std::io::Read;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::config::HttpServerConfig;
use crate::pipeline::AdmitError;
use crate::receivers::error::IngestError;
use crate::shared::on_blocking_pool;

/// Output below this size is never treated as a bomb, whatever the ratio.
const BOMB_FLOOR: usize = 4 << 20;

/// Compressed bodies of this size or more are inflated on tokio's blocking pool: they take
/// milliseconds of CPU (up to the decompressed limit), during which an executor thread would
/// serve no other request or connection. Smaller ones inflate in less time than the hand-off
/// to another thread costs, so they stay where they are.
pub const INLINE_DECOMPRESSION_LIMIT: usize = 64 * 1024;

/// Bodies of this size or more (after inflation) are decoded, protobuf or JSON, on tokio's
/// blocking pool: a few MiB of OTLP take milliseconds to decode. Below it, decoding costs less
/// than the hand-off to another thread.
pub const INLINE_DECODE_LIMIT: usize = 64 * 1024;

/// How far a body may inflate: `max_size` bytes at most, and no more than `max_ratio` times its
/// compressed size once past 4 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflateLimits {
    pub max_size: usize,
    pub max_ratio: u32,
}

impl From<&HttpServerConfig> for InflateLimits {
    fn from(config: &HttpServerConfig) -> Self {
        InflateLimits { max_size: config.max_decompressed_body_size.as_usize(), max_ratio: config.max_decompression_ratio }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type` header value (parameters such as `charset` are ignored).
    pub fn from_content_type(value: Option<&str>) -> Result<Encoding, IngestError> {
        let raw = value.unwrap_or("");
        let media = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(IngestError::UnsupportedMediaType(raw.to_string())),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A body's `Content-Encoding`, as far as the receiver accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Zstd,
    Deflate,
}

impl Compression {
    pub(super) fn from_header(content_encoding: Option<&str>) -> Result<Compression, IngestError> {
        let encoding = content_encoding.unwrap_or("").trim().to_ascii_lowercase();
        match encoding.as_str() {
            "" | "identity" | "none" => Ok(Compression::None),
            "gzip" | "x-gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "deflate" => Ok(Compression::Deflate),
            _ => Err(IngestError::UnsupportedEncoding(encoding)),
        }
    }

    /// Inflates `body`, enforcing the size and ratio limits while inflating.
    fn inflate(self, body: &[u8], limits: InflateLimits) -> Result<Vec<u8>, IngestError> {
        match self {
            Compression::None => Ok(body.to_vec()),
            Compression::Gzip => inflate(flate2::read::MultiGzDecoder::new(Counting::new(body)), limits),
            Compression::Zstd => {
                let decoder = zstd::stream::read::Decoder::with_buffer(Counting::new(body))
                    .map_err(|e| IngestError::Malformed(format!("zstd: {e}")))?;
                inflate(decoder, limits)
            }
            Compression::Deflate => inflate(flate2::read::ZlibDecoder::new(Counting::new(body)), limits),
        }
    }

    /// Whether a body of `len` bytes in this encoding is inflated on the blocking pool.
    fn off_thread(self, len: usize) -> bool {
        self != Compression::None && len >= INLINE_DECOMPRESSION_LIMIT
    }
}

/// Decompresses `body` as named by `Content-Encoding`, enforcing the size and ratio limits while
/// inflating, so a bomb costs at most the limit in memory.
pub fn decompress(body: &[u8], content_encoding: Option<&str>, limits: &HttpServerConfig) -> Result<Vec<u8>, IngestError> {
    Compression::from_header(content_encoding)?.inflate(body, limits.into())
}

/// [`inflate_and_parse`] with no parsing, for the tests: a body sent without compression comes
/// back as it is (no copy), a compressed one inflated. Same limits, same errors as [`decompress`].
#[cfg(test)]
async fn decompress_body(body: Bytes, content_encoding: Option<&str>, limits: &HttpServerConfig) -> Result<Bytes, IngestError> {
    inflate_and_parse(body, Compression::from_header(content_encoding)?, limits.into(), Ok).await
}

/// Inflates a request body within the limits and parses it, with at most one hand-off to tokio's
/// blocking pool: a compressed body of [`INLINE_DECOMPRESSION_LIMIT`] bytes or more is inflated
/// and parsed there in one go; otherwise it is inflated here and parsed as [`parse_body`] does.
/// `/v1/traces` and `/v1/order-events` read their bodies through it, OTLP/gRPC its messages.
pub(super) async fn inflate_and_parse<T, F>(
    body: Bytes,
    compression: Compression,
    limits: InflateLimits,
    parse: F,
) -> Result<T, IngestError>
where
    T: Send + 'static,
    F: FnOnce(Bytes) -> Result<T, IngestError> + Send + 'static,
{
    if compression.off_thread(body.len()) {
        return on_blocking_pool(move || parse(Bytes::from(compression.inflate(&body, limits)?)))
            .await
            // Only a runtime that is shutting down drops the work: 503, try again (elsewhere).
            .unwrap_or(Err(IngestError::Admit(AdmitError::ShuttingDown)));
    }
    let body = if compression == Compression::None { body } else { Bytes::from(compression.inflate(&body, limits)?) };
    parse_body(body, parse).await
}

fn inflate<R: Read + HasInput>(mut reader: R, limits: InflateLimits) -> Result<Vec<u8>, IngestError> {
    let max = limits.max_size;
    let ratio = limits.max_ratio as usize;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| IngestError::Malformed(format!("cannot decompress body: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > max {
            return Err(IngestError::TooLarge { limit: max });
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > BOMB_FLOOR && out.len() > ratio.saturating_mul(reader.input_consumed().max(1)) {
            return Err(IngestError::DecompressionBomb { ratio: limits.max_ratio });
        }
    }
}

/// Readers whose compressed input position is known.
trait HasInput {
    fn input_consumed(&self) -> usize;
}

impl<'a> HasInput for flate2::read::MultiGzDecoder<Counting<'a>> {
    fn input_consumed(&self) -> usize {
        self.get_ref().pos
    }
}

impl<'a> HasInput for flate2::read::ZlibDecoder<Counting<'a>> {
    fn input_consumed(&self) -> usize {
        self.get_ref().pos
    }
}

impl<'a> HasInput for zstd::stream::read::Decoder<'static, Counting<'a>> {
    fn input_consumed(&self) -> usize {
        self.get_ref().pos
    }
}

/// A byte slice reader that counts what was read from it.
struct Counting<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Counting<'a> {
    fn new(data: &'a [u8]) -> Self {
        Counting { data, pos: 0 }
    }
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl std::io::BufRead for Counting<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(&self.data[self.pos..])
    }
    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.data.len());
    }
}

/// Decodes a request body in the given encoding.
pub fn decode_request(body: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, IngestError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| IngestError::Malformed(format!("invalid protobuf: {e}"))),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| IngestError::Malformed(format!("invalid OTLP JSON: {e}"))),
    }
}

/// [`decode_request`] of a (decompressed) body, as [`parse_body`] runs it, for the tests.
#[cfg(test)]
async fn decode_body(body: Bytes, encoding: Encoding) -> Result<ExportTraceServiceRequest, IngestError> {
    parse_body(body, move |body| decode_request(&body, encoding)).await
}

/// Runs `parse` over a (decompressed) body: on the blocking pool when the body is
/// [`INLINE_DECODE_LIMIT`] bytes or more, right here otherwise.
pub async fn parse_body<T, F>(body: Bytes, parse: F) -> Result<T, IngestError>
where
    T: Send + 'static,
    F: FnOnce(Bytes) -> Result<T, IngestError> + Send + 'static,
{
    if body.len() < INLINE_DECODE_LIMIT {
        return parse(body);
    }
    on_blocking_pool(move || parse(body))
        .await
        // Only a runtime that is shutting down drops the work: 503, try again (elsewhere).
        .unwrap_or(Err(IngestError::Admit(AdmitError::ShuttingDown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::ByteSize;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn inflates_gzip_and_zstd() {
        let limits = HttpServerConfig::default();
        let data = b"hello otlp".repeat(100);
        assert_eq!(decompress(&gzip(&data), Some("gzip"), &limits).unwrap(), data);
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(decompress(&z, Some("zstd"), &limits).unwrap(), data);
        assert!(matches!(decompress(&data, Some("br"), &limits), Err(IngestError::UnsupportedEncoding(_))));
        assert!(matches!(decompress(b"not gzip", Some("gzip"), &limits), Err(IngestError::Malformed(_))));
    }

    #[test]
    fn refuses_a_bomb_early() {
        let limits = HttpServerConfig::default();
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(matches!(decompress(&bomb, Some("gzip"), &limits), Err(IngestError::DecompressionBomb { .. })));
        let tight =
            HttpServerConfig { max_decompressed_body_size: ByteSize(1000), max_request_body_size: ByteSize(1000), ..Default::default() };
        assert!(matches!(decompress(&gzip(&[7u8; 5000]), Some("gzip"), &tight), Err(IngestError::TooLarge { limit: 1000 })));
    }

    /// Bytes that barely compress, so a compressed body of them is as large as they are.
    fn noise(len: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    fn compressed(name: &str, data: &[u8]) -> Vec<u8> {
        match name {
            "gzip" => gzip(data),
            "zstd" => zstd::encode_all(data, 3).unwrap(),
            _ => {
                let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).unwrap();
                enc.finish().unwrap()
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn large_bodies_inflate_on_the_blocking_pool_identically_and_within_the_limits() {
        let limits = HttpServerConfig::default();
        let data = [noise(512 << 10), b"order.id A-1001 ".repeat(32 << 10)].concat();
        for name in ["gzip", "zstd", "deflate"] {
            let body = compressed(name, &data);
            let compression = Compression::from_header(Some(name)).unwrap();
            assert!(compression.off_thread(body.len()), "{name}: {} bytes go to the blocking pool", body.len());
            let inflated = decompress_body(Bytes::from(body.clone()), Some(name), &limits).await.unwrap();
            assert_eq!(inflated, data, "{name}");
            assert_eq!(inflated, decompress(&body, Some(name), &limits).unwrap(), "{name}: the same bytes as inline");
        }

        // The decompressed-size limit, off the executor as inline.
        let tight = HttpServerConfig { max_decompressed_body_size: ByteSize(256 << 10), ..Default::default() };
        let body = gzip(&noise(300 << 10));
        assert!(Compression::Gzip.off_thread(body.len()));
        let off = decompress_body(Bytes::from(body.clone()), Some("gzip"), &tight).await;
        assert!(matches!(off, Err(IngestError::TooLarge { limit }) if limit == 256 << 10), "{off:?}");
        assert!(matches!(decompress(&body, Some("gzip"), &tight), Err(IngestError::TooLarge { .. })));

        // A bomb of 32 gzip members of 4 MiB of zeros each: over the inline limit compressed,
        // refused after a few MiB of output rather than 128 MiB.
        let member = gzip(&vec![0u8; 4 << 20]);
        let bomb = member.repeat(32);
        assert!(Compression::Gzip.off_thread(bomb.len()), "{} bytes", bomb.len());
        let off = decompress_body(Bytes::from(bomb.clone()), Some("gzip"), &limits).await;
        assert!(matches!(off, Err(IngestError::DecompressionBomb { ratio: 200 })), "{off:?}");
        assert!(matches!(decompress(&bomb, Some("gzip"), &limits), Err(IngestError::DecompressionBomb { .. })));

        // Unknown encodings are refused before any hand-off; a small body stays inline.
        let big = Bytes::from(noise(128 << 10));
        assert!(matches!(decompress_body(big.clone(), Some("br"), &limits).await, Err(IngestError::UnsupportedEncoding(e)) if e == "br"));
        assert!(!Compression::Gzip.off_thread(INLINE_DECOMPRESSION_LIMIT - 1));
        assert!(!Compression::None.off_thread(big.len()), "an uncompressed body is never copied to another thread");
        let same = decompress_body(big.clone(), Some("identity"), &limits).await.unwrap();
        assert_eq!(same.as_ptr(), big.as_ptr(), "an uncompressed body is passed on without a copy");
        let small = gzip(b"a small body");
        assert_eq!(decompress_body(Bytes::from(small), Some("gzip"), &limits).await.unwrap(), &b"a small body"[..]);
    }

    /// An OTLP request of `spans` spans with a few attributes each.
    fn request(spans: usize) -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let attribute = |key: &str, value: String| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
            ..Default::default()
        };
        let spans = (0..spans)
            .map(|i| Span {
                trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: format!("order.step {i}"),
                start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                end_time_unix_nano: 1_700_000_000_000_100_000 + i as u64,
                attributes: vec![attribute("order.id", format!("A-{i}")), attribute("order.status", "accepted".into())],
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn large_bodies_decode_on_the_blocking_pool_identically() {
        let original = request(2000);
        let protobuf = original.encode_to_vec();
        let json = serde_json::to_vec(&original).unwrap();
        for (encoding, body) in [(Encoding::Protobuf, protobuf), (Encoding::Json, json)] {
            assert!(body.len() >= INLINE_DECODE_LIMIT, "{encoding:?}: {} bytes go to the blocking pool", body.len());
            let off = decode_body(Bytes::from(body.clone()), encoding).await.unwrap();
            assert_eq!(off, decode_request(&body, encoding).unwrap(), "{encoding:?}: the same request as inline");
            assert_eq!(off, original, "{encoding:?}");

            // A truncated large body: the same error, whichever thread decoded it.
            let broken = Bytes::from(body[..body.len() - 7].to_vec());
            let off = decode_body(broken.clone(), encoding).await.unwrap_err();
            let inline = decode_request(&broken, encoding).unwrap_err();
            assert!(matches!(off, IngestError::Malformed(_)), "{encoding:?}: {off:?}");
            assert_eq!(off.to_string(), inline.to_string(), "{encoding:?}");
        }

        // Order events (a large array, one event in ten refused) parse the same off the executor.
        use crate::receivers::order_events::parse_order_events;
        let events: Vec<_> = (0..2000)
            .map(|i| {
                let status = if i % 10 == 0 { serde_json::json!(7) } else { serde_json::json!("accepted") };
                serde_json::json!({"order_id": format!("A-{i}"), "service": "mes-api", "status": status, "time": "2026-11-20T10:00:00Z"})
            })
            .collect();
        let body = serde_json::to_vec(&events).unwrap();
        assert!(body.len() >= INLINE_DECODE_LIMIT, "{} bytes", body.len());
        let off = parse_body(Bytes::from(body.clone()), |b| parse_order_events(&b, 1).map_err(|e| IngestError::Malformed(e.to_string())))
            .await
            .unwrap();
        assert_eq!((off.events.len(), off.rejected.len()), (1800, 200));
        assert_eq!(off, parse_order_events(&body, 1).unwrap());

        // Where the work runs: a large body on another thread, a small one on this one.
        let here = std::thread::current().id();
        let thread = |body: Vec<u8>| parse_body(Bytes::from(body), |_| Ok(std::thread::current().id()));
        assert_ne!(thread(vec![0; INLINE_DECODE_LIMIT]).await.unwrap(), here);
        assert_eq!(thread(vec![0; INLINE_DECODE_LIMIT - 1]).await.unwrap(), here);
        let small = request(3);
        assert!(small.encoded_len() < INLINE_DECODE_LIMIT);
        assert_eq!(decode_body(Bytes::from(small.encode_to_vec()), Encoding::Protobuf).await.unwrap(), small);
    }

    #[test]
    fn content_types() {
        assert_eq!(Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(), Encoding::Json);
        assert_eq!(Encoding::from_content_type(Some("application/x-protobuf")).unwrap(), Encoding::Protobuf);
        assert!(Encoding::from_content_type(Some("text/plain")).is_err());
        assert!(Encoding::from_content_type(None).is_err());
    }
}

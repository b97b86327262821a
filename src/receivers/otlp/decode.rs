//! Turning an OTLP/HTTP body into spans: decompression within limits, then protobuf or JSON.

use std::io::Read;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::config::HttpServerConfig;
use crate::receivers::error::IngestError;

/// Output below this size is never treated as a bomb, whatever the ratio.
const BOMB_FLOOR: usize = 4 << 20;

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

/// Decompresses `body` as named by `Content-Encoding`, enforcing the size and ratio limits while
/// inflating, so a bomb costs at most the limit in memory.
pub fn decompress(body: &[u8], content_encoding: Option<&str>, limits: &HttpServerConfig) -> Result<Vec<u8>, IngestError> {
    let encoding = content_encoding.unwrap_or("").trim().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" | "none" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => inflate(flate2::read::MultiGzDecoder::new(Counting::new(body)), limits),
        "zstd" => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(Counting::new(body)).map_err(|e| IngestError::Malformed(format!("zstd: {e}")))?;
            inflate(decoder, limits)
        }
        "deflate" => inflate(flate2::read::ZlibDecoder::new(Counting::new(body)), limits),
        other => Err(IngestError::UnsupportedEncoding(other.to_string())),
    }
}

fn inflate<R: Read + HasInput>(mut reader: R, limits: &HttpServerConfig) -> Result<Vec<u8>, IngestError> {
    let max = limits.max_decompressed_body_size.as_usize();
    let ratio = limits.max_decompression_ratio as usize;
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
            return Err(IngestError::DecompressionBomb { ratio: limits.max_decompression_ratio });
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

    #[test]
    fn content_types() {
        assert_eq!(Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(), Encoding::Json);
        assert_eq!(Encoding::from_content_type(Some("application/x-protobuf")).unwrap(), Encoding::Protobuf);
        assert!(Encoding::from_content_type(Some("text/plain")).is_err());
        assert!(Encoding::from_content_type(None).is_err());
    }
}

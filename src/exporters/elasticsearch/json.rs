//! A small JSON writer for span documents: straight into the bulk buffer, no intermediate values.
//!
//! Span documents are the exporter's hot path (one per span, at 100k spans/s), so strings are
//! copied in one piece when they need no escaping (nearly always) and ids, numbers and times are
//! formatted in place.

use bytes::{BufMut, BytesMut};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bytes that may appear in a JSON string as they are: not `"`, not `\`, not a control character.
#[inline]
fn plain(b: u8) -> bool {
    b >= 0x20 && b != b'"' && b != b'\\'
}

/// `"text"`, escaped per RFC 8259 (the same escapes as serde_json).
pub fn string(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 2);
    out.put_u8(b'"');
    let bytes = text.as_bytes();
    if bytes.iter().all(|b| plain(*b)) {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if plain(b) {
                continue;
            }
            out.extend_from_slice(&bytes[start..i]);
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]),
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.put_u8(b'"');
}

/// `"key":`
#[inline]
pub fn key(out: &mut BytesMut, name: &str) {
    string(out, name);
    out.put_u8(b':');
}

/// Lower-case hex of `bytes`, without quotes.
pub fn hex_raw(out: &mut BytesMut, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.put_u8(HEX[(b >> 4) as usize]);
        out.put_u8(HEX[(b & 0xf) as usize]);
    }
}

/// `"<hex>"`
pub fn hex(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u8(b'"');
    hex_raw(out, bytes);
    out.put_u8(b'"');
}

pub fn u64(out: &mut BytesMut, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

pub fn i64(out: &mut BytesMut, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A finite double the way serde_json writes it (always with a `.` or an exponent, so it reads
/// back as a double, never as an integer).
pub fn f64(out: &mut BytesMut, n: f64) {
    out.extend_from_slice(ryu::Buffer::new().format_finite(n).as_bytes());
}

/// `"YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"` (RFC 3339, UTC, nanoseconds), as everywhere else
/// (`shared::write_rfc3339_nanos`), written straight into the buffer.
pub fn timestamp(out: &mut BytesMut, unix_nanos: u64) {
    out.extend_from_slice(b"\"");
    crate::shared::write_rfc3339_nanos(out, unix_nanos);
    out.extend_from_slice(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for text in ["plain", "quote \" and \\ slash", "line\nbreak\ttab\r", "\u{1}\u{1f}\u{8}\u{c}", "ünïcødé ✓ 🚀", "", "/</script>"]
        {
            let mut out = BytesMut::new();
            string(&mut out, text);
            assert_eq!(std::str::from_utf8(&out).unwrap(), serde_json::to_string(text).unwrap());
        }
    }

    #[test]
    fn timestamps_match_the_shared_formatter_for_many_instants() {
        let mut n: u64 = 0;
        for i in 0..20_000u64 {
            // Spread over 1970..2500, with every kind of nanosecond part.
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407 + i);
            let ns = n % 16_725_225_600_000_000_000;
            let mut out = BytesMut::new();
            timestamp(&mut out, ns);
            let expected = format!("\"{}\"", crate::shared::format_rfc3339_nanos(ns));
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected, "{ns}");
        }
        let mut out = BytesMut::new();
        timestamp(&mut out, 0);
        assert_eq!(&out[..], b"\"1970-01-01T00:00:00.000000000Z\"");
    }

    #[test]
    fn numbers_read_back_with_their_type() {
        for x in [0.0, 1.0, -2.5, 1e20, 1e-7, f64::MAX, f64::MIN_POSITIVE] {
            let mut out = BytesMut::new();
            f64(&mut out, x);
            let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(back.is_f64(), "{x} wrote {:?}", std::str::from_utf8(&out));
            assert_eq!(back.as_f64(), Some(x));
        }
        let mut out = BytesMut::new();
        i64(&mut out, i64::MIN);
        assert_eq!(&out[..], i64::MIN.to_string().as_bytes());
    }
}

//! The wire format of a unary gRPC call (one length-prefixed message each way, the status in
//! trailers), for the servers that answer calls without tonic's server machinery: the OTLP
//! receiver, which inflates and decodes messages itself (large ones on the blocking pool), and
//! the benchmark sink.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

/// The bytes before each message: a compressed flag and the message's length (big-endian).
pub const PREFIX_LEN: usize = 5;

/// One message of a call, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The compressed flag: the message is compressed with the call's `grpc-encoding`.
    pub compressed: bool,
    pub bytes: Bytes,
}

/// Why a call's body is not one length-prefixed message within the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the call carries no message")]
    Empty,
    #[error("a message of {len} bytes as sent; the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("the message is cut short: {got} of {expected} bytes")]
    Truncated { got: usize, expected: usize },
    #[error("a unary call carries one message; this one carries more")]
    MoreThanOne,
    #[error("compressed flag {0}; 0 and 1 are defined")]
    Flag(u8),
    #[error("cannot read the call: {0}")]
    Read(String),
}

/// Reads the one message of a unary call. A message announced as longer than `limit` is refused
/// from its prefix, before the rest of it is read; a message that arrived in one piece (the
/// usual case) is passed on without a copy.
pub async fn read_unary<B>(body: B, limit: usize) -> Result<Message, FrameError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut received = 0usize;
    let mut expected: Option<usize> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FrameError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        received += data.len();
        match first.take() {
            None if gathered.is_empty() => first = Some(data),
            None => gathered.put(data),
            Some(earlier) => {
                gathered.reserve(expected.unwrap_or(received).min(limit + PREFIX_LEN));
                gathered.put(earlier);
                gathered.put(data);
            }
        }
        if expected.is_none() && received >= PREFIX_LEN {
            let head = first.as_deref().unwrap_or(&gathered[..]);
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > limit {
                return Err(FrameError::TooLarge { len, limit });
            }
            expected = Some(PREFIX_LEN + len);
        }
        if expected.is_some_and(|expected| received > expected) {
            return Err(FrameError::MoreThanOne);
        }
    }
    let all = first.unwrap_or_else(|| gathered.freeze());
    let Some(expected) = expected else {
        return Err(if received == 0 { FrameError::Empty } else { FrameError::Truncated { got: received, expected: PREFIX_LEN } });
    };
    if received < expected {
        return Err(FrameError::Truncated { got: received, expected });
    }
    let compressed = match all[0] {
        0 => false,
        1 => true,
        flag => return Err(FrameError::Flag(flag)),
    };
    Ok(Message { compressed, bytes: all.slice(PREFIX_LEN..) })
}

/// `message` with its prefix, uncompressed.
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(PREFIX_LEN + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// The trailers of a reply: `grpc-status`, and `grpc-message` when there is one.
pub fn status_trailers(code: i32, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) = HeaderValue::from_str(message) {
        if !message.is_empty() {
            trailers.insert("grpc-message", message);
        }
    }
    trailers
}

/// A reply body: at most one chunk of data, then trailers if any.
#[derive(Debug, Default)]
pub struct ReplyBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl ReplyBody {
    pub fn new(data: Option<Bytes>, trailers: Option<HeaderMap>) -> Self {
        ReplyBody { data, trailers }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body that arrives in the given pieces.
    struct Pieces(VecDeque<Bytes>);

    impl Body for Pieces {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|piece| Ok(Frame::data(piece))))
        }
    }

    fn pieces(parts: Vec<Vec<u8>>) -> Pieces {
        Pieces(parts.into_iter().map(Bytes::from).collect())
    }

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[tokio::test]
    async fn one_message_in_one_piece_or_many() {
        let whole = framed(0, b"hello");
        let read = read_unary(pieces(vec![whole.clone()]), 100).await.unwrap();
        assert_eq!(read, Message { compressed: false, bytes: Bytes::from_static(b"hello") });
        // Split inside the prefix and inside the message.
        let split = vec![whole[..2].to_vec(), whole[2..7].to_vec(), vec![], whole[7..].to_vec()];
        assert_eq!(read_unary(pieces(split), 100).await.unwrap(), read);
        let compressed = read_unary(pieces(vec![framed(1, b"zz")]), 100).await.unwrap();
        assert!(compressed.compressed);
        let empty_message = read_unary(pieces(vec![framed(0, b"")]), 100).await.unwrap();
        assert!(empty_message.bytes.is_empty(), "an empty message is a message (all fields default)");
        assert_eq!(frame(b"hello"), Bytes::from(whole));
    }

    #[tokio::test]
    async fn what_is_not_one_message_is_refused() {
        assert_eq!(read_unary(pieces(vec![]), 100).await, Err(FrameError::Empty));
        assert_eq!(read_unary(pieces(vec![vec![0, 0]]), 100).await, Err(FrameError::Truncated { got: 2, expected: 5 }));
        let mut cut = framed(0, b"hello");
        cut.truncate(8);
        assert_eq!(read_unary(pieces(vec![cut]), 100).await, Err(FrameError::Truncated { got: 8, expected: 10 }));
        let two = [framed(0, b"a"), framed(0, b"b")].concat();
        assert_eq!(read_unary(pieces(vec![two]), 100).await, Err(FrameError::MoreThanOne));
        assert_eq!(read_unary(pieces(vec![framed(2, b"a")]), 100).await, Err(FrameError::Flag(2)));
        // Over the limit: refused on the prefix, the rest is never read.
        let mut announced = framed(0, b"");
        announced[1..5].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert_eq!(read_unary(pieces(vec![announced]), 100).await, Err(FrameError::TooLarge { len: 1_000_000, limit: 100 }));
    }
}

//! Request bodies made of a batch's encoded parts, sent without copying them into one buffer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A request body made of encoded parts sent one after the other, its length known up front
/// (`Content-Length`).
pub struct Parts {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl Parts {
    pub fn new(parts: Vec<Bytes>) -> Parts {
        let remaining = parts.iter().map(|p| p.len() as u64).sum();
        Parts { parts: parts.into_iter().filter(|p| !p.is_empty()).collect(), remaining }
    }
}

impl Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.parts.pop_front();
        if let Some(part) = &next {
            self.remaining -= part.len() as u64;
        }
        Poll::Ready(next.map(|part| Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The parts, concatenated, compressed with gzip at its fast level.
pub fn gzip(parts: &[Bytes]) -> Bytes {
    use std::io::Write;
    let plain: usize = parts.iter().map(Bytes::len).sum();
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(plain / 4), flate2::Compression::fast());
    for part in parts {
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(part);
    }
    Bytes::from(enc.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_body_of_parts_is_their_bytes_in_order_with_its_length_known() {
        let body = Parts::new(vec![Bytes::from_static(b"ab"), Bytes::new(), Bytes::from_static(b"cde")]);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"abcde"));
        assert!(Parts::new(Vec::new()).is_end_stream());
    }
}

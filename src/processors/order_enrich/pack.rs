//! Packing waiting spans: a span that has waited in the buffer for [`PACK_AFTER`] is compressed
//! with zstd against a dictionary made of spans of the same traffic (their encoded bytes, as a raw
//! dictionary: no training). Spans of one service share most of their attribute keys and many
//! values, so a span of a few hundred bytes packs to about a quarter, each on its own: a trace can
//! still leave the buffer alone, and a span is unpacked only when it leaves.
//!
//! Only spans that wait long are packed: the spans of a trace whose order comes within half a
//! second (most of them) never pay for it. A dictionary is replaced by one of newer spans after
//! [`DICTIONARY_LIFETIME`]; spans packed with the old one keep it (`Arc`) until they leave.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use zstd::zstd_safe::{get_error_name, get_frame_content_size, CCtx, CDict, DCtx, DDict};

/// A span waits this long before it is packed.
pub const PACK_AFTER: Duration = Duration::from_millis(500);
/// Packing runs at most this often (each run goes on from where the last one stopped).
pub const PACK_EVERY: Duration = Duration::from_millis(250);
/// How many waiting spans make a dictionary, and how few are enough to make one.
const DICTIONARY_SPANS: usize = 64;
const DICTIONARY_MIN_SPANS: usize = 16;
const DICTIONARY_LIFETIME: Duration = Duration::from_secs(600);
/// zstd's fast levels: -1 packs the shop's spans about as small as level 1 (a quarter) in about
/// 60% of the time.
const LEVEL: i32 = -1;
/// A packed span never unpacks to more than this (a span is at most a request, 16 MiB by default;
/// this only guards against a corrupt frame header).
const MAX_SPAN_BYTES: u64 = 64 << 20;

thread_local! {
    static COMPRESS: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DECOMPRESS: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// Why a packed span does not unpack (it was packed here, so it should; the span is dropped and
/// logged).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the packed span does not give its size")]
    NoSize,
    #[error("zstd cannot unpack the span: {0}")]
    Zstd(&'static str),
}

/// A dictionary to pack and unpack with.
pub struct Dictionary {
    compress: CDict<'static>,
    decompress: DDict<'static>,
}

impl Dictionary {
    fn new(sample: &[u8]) -> Dictionary {
        Dictionary { compress: CDict::create(sample, LEVEL), decompress: DDict::create(sample) }
    }

    /// `plain` packed, or `None` when packing does not make it smaller.
    pub fn pack(&self, plain: &[u8]) -> Option<Box<[u8]>> {
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(plain.len()));
        let written = COMPRESS.with(|c| c.borrow_mut().compress_using_cdict(&mut out, plain, &self.compress)).ok()?;
        (written < plain.len()).then(|| out.into_boxed_slice())
    }

    pub fn unpack(&self, packed: &[u8]) -> Result<Vec<u8>, UnpackError> {
        let size = match get_frame_content_size(packed) {
            Ok(Some(size)) if size <= MAX_SPAN_BYTES => size as usize,
            _ => return Err(UnpackError::NoSize),
        };
        let mut out = Vec::with_capacity(size);
        DECOMPRESS
            .with(|d| d.borrow_mut().decompress_using_ddict(&mut out, packed, &self.decompress))
            .map_err(|code| UnpackError::Zstd(get_error_name(code)))?;
        Ok(out)
    }
}

/// The enricher's packing state: the current dictionary, and when packing runs next.
#[derive(Default)]
pub struct Packer {
    state: Mutex<PackerState>,
}

#[derive(Default)]
struct PackerState {
    dictionary: Option<(Arc<Dictionary>, Instant)>,
    next_run: Option<Instant>,
    /// The last run stopped at its budget: the next call goes on at once.
    unfinished: bool,
}

impl Packer {
    fn lock(&self) -> std::sync::MutexGuard<'_, PackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a packing run is due at `now` (and, if so, the next one is scheduled).
    pub fn due(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.unfinished || state.next_run.is_none_or(|at| at <= now) {
            state.next_run = Some(now + PACK_EVERY);
            return true;
        }
        false
    }

    /// Records whether the run stopped at its budget.
    pub fn finished(&self, finished: bool) {
        self.lock().unfinished = !finished;
    }

    /// The dictionary to pack with at `now`: the current one, or one made from the encoded spans
    /// `sample` gives (at most [`DICTIONARY_SPANS`] of them) when there is none or it is old;
    /// `None` while too few spans wait to make one.
    pub fn dictionary(&self, now: Instant, sample: impl FnOnce(usize) -> Vec<Box<[u8]>>) -> Option<Arc<Dictionary>> {
        let mut state = self.lock();
        if let Some((dictionary, made)) = &state.dictionary {
            if now.saturating_duration_since(*made) < DICTIONARY_LIFETIME {
                return Some(dictionary.clone());
            }
        }
        let spans = sample(DICTIONARY_SPANS);
        if spans.len() < DICTIONARY_MIN_SPANS {
            return state.dictionary.as_ref().map(|(d, _)| d.clone());
        }
        let dictionary = Arc::new(Dictionary::new(&spans.concat()));
        state.dictionary = Some((dictionary.clone(), now));
        Some(dictionary)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn shop_spans(n: usize) -> Vec<Vec<u8>> {
        let mut generator = crate::loadgen::TrafficGenerator::new(3, 1_700_000_000_000_000_000);
        let mut out = Vec::new();
        while out.len() < n {
            for rs in generator.request(100).resource_spans {
                out.extend(rs.scope_spans.into_iter().flat_map(|ss| ss.spans).map(|s| s.encode_to_vec()));
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn spans_pack_small_and_unpack_as_they_were() {
        let spans = shop_spans(2_000);
        let dictionary = Dictionary::new(&spans[..DICTIONARY_SPANS].concat());
        let (mut plain, mut packed) = (0, 0);
        for span in &spans[DICTIONARY_SPANS..] {
            let p = dictionary.pack(span).expect("a shop span packs smaller");
            plain += span.len();
            packed += p.len();
            assert_eq!(&dictionary.unpack(&p).unwrap(), span);
        }
        assert!(packed * 2 < plain, "packed to less than half: {packed} of {plain} bytes");
        // Something that does not shrink is left as it is; garbage does not unpack.
        assert!(dictionary.pack(&[7]).is_none());
        assert!(dictionary.unpack(b"not a zstd frame").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dictionary_is_made_once_enough_spans_wait_and_renewed_when_old() {
        let packer = Packer::default();
        let t0 = Instant::now();
        assert!(packer.dictionary(t0, |_| shop_spans(3).into_iter().map(Vec::into_boxed_slice).collect()).is_none(), "too few");
        let sample = |n: usize| shop_spans(n).into_iter().map(Vec::into_boxed_slice).collect();
        let first = packer.dictionary(t0, sample).unwrap();
        let again = packer.dictionary(t0 + Duration::from_secs(1), |_| unreachable!("the current one serves")).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let renewed = packer.dictionary(t0 + DICTIONARY_LIFETIME, sample).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert!(packer.due(t0) && !packer.due(t0 + Duration::from_millis(100)) && packer.due(t0 + PACK_EVERY));
        packer.finished(false);
        assert!(packer.due(t0 + PACK_EVERY), "an unfinished run goes on at once");
    }
}

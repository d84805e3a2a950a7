//! MLLP framing as a tokio-util [`Decoder`]/[`Encoder`]: `0x0B <payload> 0x1C 0x0D`.
//!
//! The decoder works check-then-parse on the read buffer: it looks for the next framing byte
//! with `memchr`, never rescans bytes it already scanned, and splits payloads longer than
//! [`COPY_LIMIT`] out of the buffer without copying; shorter ones (most HL7 messages) are
//! copied out, so the connection's read buffer stays its own and the next read reuses it
//! instead of allocating a new one. It answers `Ok(None)` while a frame is incomplete.
//!
//! Accepted, because real senders do it:
//! - bytes before the start block (NULs, garbage, stray CR/LF between frames): skipped and
//!   counted ([`MllpCodec::skipped_bytes`]);
//! - a missing CR after `0x1C`: the frame is emitted as soon as `0x1C` is seen, so a sender that
//!   omits the CR and waits for its ACK does not deadlock; a CR that follows later is swallowed,
//!   any other byte is counted ([`MllpCodec::missing_trailers`]) and scanned as usual.
//!
//! Refused, without losing the framing or the connection:
//! - a start block inside a frame: the partial frame becomes [`Inbound::Interrupted`] and
//!   decoding restarts at the new start block;
//! - a payload past the maximum size: the decoder switches to discard mode (keeping the head
//!   and counting the length, never buffering the rest) and emits [`Inbound::Oversized`] at the
//!   end block.
//!
//! End of stream inside a frame is [`MllpError::TruncatedFrame`]; a clean end (nothing
//! pending, or only garbage) is `Ok(None)`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::MllpError;

/// Start block: opens a frame.
pub const START_BLOCK: u8 = 0x0B;
/// End block: closes a frame's payload.
pub const END_BLOCK: u8 = 0x1C;
/// Trailer expected after the end block.
pub const TRAILER: u8 = 0x0D;
/// How many leading bytes of a refused frame are kept, so the caller can salvage MSH-10 for a
/// NACK.
pub const HEAD_LIMIT: usize = 4 * 1024;
/// Payloads up to this size are copied out of the read buffer (one small allocation, and the
/// buffer is reused); longer ones are split off it (no copy, the next read allocates a buffer).
pub const COPY_LIMIT: usize = 4 * 1024;
/// Default maximum payload size: room for an ORU carrying a Base64 PDF, small enough that a
/// few hundred connections cannot exhaust memory.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// One item read from an MLLP stream; the refused kinds carry enough to answer with a NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A complete frame's payload (without the framing bytes).
    Frame(Bytes),
    /// A frame whose payload exceeded the maximum size; it was discarded past its head.
    Oversized {
        /// The first bytes of the payload (at most [`HEAD_LIMIT`]).
        head: Bytes,
        /// The full payload length that was received.
        len: usize,
    },
    /// A frame cut short by a new start block before its end block.
    Interrupted {
        /// The first bytes of the partial payload (at most [`HEAD_LIMIT`]).
        head: Bytes,
    },
}

/// Where the decoder stands in the byte stream.
#[derive(Debug)]
enum State {
    /// Looking for a start block; the buffer holds no payload.
    Scanning,
    /// After a start block: the buffer starts at the payload; `scanned` bytes of it hold no
    /// framing byte.
    InFrame { scanned: usize },
    /// The payload passed the maximum size: only its head and length are kept.
    Discarding { head: BytesMut, len: usize },
}

/// The MLLP codec; one per connection, since it carries the framing state and counters.
#[derive(Debug)]
pub struct MllpCodec {
    /// Payloads longer than this are refused as [`Inbound::Oversized`].
    max_frame_bytes: usize,
    state: State,
    /// The last frame ended with `0x1C` as the last byte available: a CR read next is its
    /// trailer, not garbage.
    pending_trailer: bool,
    /// Bytes skipped outside frames (counter for the server's statistics).
    skipped_bytes: u64,
    /// Frames whose `0x1C` was not followed by a CR.
    missing_trailers: u64,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl MllpCodec {
    /// A codec refusing payloads longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            state: State::Scanning,
            pending_trailer: false,
            skipped_bytes: 0,
            missing_trailers: 0,
        }
    }

    /// The configured maximum payload size.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Whether a frame has started but not ended, so the server can pick the mid-frame read
    /// timeout instead of the idle timeout.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Scanning)
    }

    /// Total bytes skipped outside frames since the codec was created.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Total frames whose end block was not followed by a CR.
    pub fn missing_trailers(&self) -> u64 {
        self.missing_trailers
    }

    /// Consumes the end block at `buf[0]` and its CR if present; when the CR is not yet
    /// available, remembers to swallow it later instead of waiting for it.
    fn consume_end(&mut self, buf: &mut BytesMut) {
        buf.advance(1);
        match buf.first() {
            Some(&TRAILER) => buf.advance(1),
            Some(_) => self.missing_trailers += 1,
            None => self.pending_trailer = true,
        }
    }

    /// Skips to the next start block; returns whether one was found (and consumed).
    fn scan_for_start(&mut self, buf: &mut BytesMut) -> bool {
        if self.pending_trailer {
            match buf.first() {
                None => return false,
                Some(&TRAILER) => {
                    buf.advance(1);
                    self.pending_trailer = false;
                }
                Some(_) => {
                    self.missing_trailers += 1;
                    self.pending_trailer = false;
                }
            }
        }
        match memchr::memchr(START_BLOCK, buf) {
            Some(pos) => {
                self.skipped_bytes += pos as u64;
                buf.advance(pos + 1);
                true
            }
            None => {
                self.skipped_bytes += buf.len() as u64;
                buf.clear();
                false
            }
        }
    }
}

/// Copies at most [`HEAD_LIMIT`] leading bytes.
fn head_of(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes.get(..HEAD_LIMIT).unwrap_or(bytes))
}

/// Takes the first `len` bytes of `buf` as a payload: copied when short, split off when long.
fn take_payload(buf: &mut BytesMut, len: usize) -> Bytes {
    if len <= COPY_LIMIT {
        let payload = Bytes::copy_from_slice(buf.get(..len).unwrap_or_default());
        buf.advance(len.min(buf.len()));
        payload
    } else {
        buf.split_to(len).freeze()
    }
}

impl Decoder for MllpCodec {
    type Item = Inbound;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, MllpError> {
        loop {
            match &mut self.state {
                State::Scanning => {
                    if !self.scan_for_start(buf) {
                        return Ok(None);
                    }
                    self.state = State::InFrame { scanned: 0 };
                }
                State::InFrame { scanned } => {
                    let rest = buf.get(*scanned..).unwrap_or_default();
                    let Some(found) = memchr::memchr2(END_BLOCK, START_BLOCK, rest) else {
                        *scanned = buf.len();
                        if buf.len() > self.max_frame_bytes {
                            let head = BytesMut::from(head_of(buf).as_ref());
                            self.state = State::Discarding {
                                head,
                                len: buf.len(),
                            };
                            buf.clear();
                        }
                        return Ok(None);
                    };
                    let pos = *scanned + found;
                    let is_end = buf.get(pos) == Some(&END_BLOCK);
                    self.state = State::Scanning;
                    let item = if pos > self.max_frame_bytes {
                        let head = head_of(buf.get(..pos).unwrap_or_default());
                        buf.advance(pos);
                        Inbound::Oversized { head, len: pos }
                    } else if is_end {
                        Inbound::Frame(take_payload(buf, pos))
                    } else {
                        let mut head = buf.split_to(pos);
                        head.truncate(HEAD_LIMIT);
                        Inbound::Interrupted {
                            head: head.freeze(),
                        }
                    };
                    // A start block stays in the buffer: the next decode opens a frame there.
                    if is_end {
                        self.consume_end(buf);
                    }
                    return Ok(Some(item));
                }
                State::Discarding { head, len } => {
                    let found = memchr::memchr2(END_BLOCK, START_BLOCK, buf);
                    let take = found.unwrap_or(buf.len());
                    let room = HEAD_LIMIT.saturating_sub(head.len());
                    head.put_slice(buf.get(..take.min(room)).unwrap_or_default());
                    *len += take;
                    let Some(pos) = found else {
                        buf.clear();
                        return Ok(None);
                    };
                    let item = Inbound::Oversized {
                        head: std::mem::take(head).freeze(),
                        len: *len,
                    };
                    let is_end = buf.get(pos) == Some(&END_BLOCK);
                    self.state = State::Scanning;
                    buf.advance(pos);
                    // An oversized frame cut by a start block is reported as oversized (it is
                    // both, and the length is the more useful fact); the start block stays.
                    if is_end {
                        self.consume_end(buf);
                    }
                    return Ok(Some(item));
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, MllpError> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        self.pending_trailer = false;
        let received = match std::mem::replace(&mut self.state, State::Scanning) {
            State::Scanning => return Ok(None),
            State::InFrame { .. } => buf.len(),
            State::Discarding { len, .. } => len,
        };
        buf.clear();
        Err(MllpError::TruncatedFrame { received })
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), MllpError> {
        if let Some(offset) = memchr::memchr2(START_BLOCK, END_BLOCK, payload) {
            let byte = payload.get(offset).copied().unwrap_or_default();
            return Err(MllpError::ReservedByte { byte, offset });
        }
        dst.reserve(payload.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(payload);
        dst.put_u8(END_BLOCK);
        dst.put_u8(TRAILER);
        Ok(())
    }
}

impl Encoder<Bytes> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), MllpError> {
        self.encode(payload.as_ref(), dst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    fn frame(payload: &[u8]) -> Inbound {
        Inbound::Frame(Bytes::copy_from_slice(payload))
    }

    /// Feeds `chunks` one after the other, decoding everything after each, then ends the
    /// stream; returns the items and the end-of-stream result.
    fn run(codec: &mut MllpCodec, chunks: &[&[u8]]) -> (Vec<Inbound>, Result<(), String>) {
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return (items, Ok(())),
                Err(e) => return (items, Err(e.to_string())),
            }
        }
    }

    /// Test tables write chunks as ASCII `&str` (`\x0B` escapes included) for readability.
    fn as_bytes<'a>(chunks: &[&'a str]) -> Vec<&'a [u8]> {
        chunks.iter().map(|c| c.as_bytes()).collect()
    }

    fn bytewise(stream: &[u8]) -> Vec<&[u8]> {
        stream.chunks(1).collect()
    }

    #[rstest]
    #[case::one_frame(&["\x0BMSH|a\x1C\x0D"], vec![frame(b"MSH|a")])]
    #[case::two_frames_one_read(&["\x0Ba\x1C\x0D\x0Bb\x1C\x0D"], vec![frame(b"a"), frame(b"b")])]
    #[case::split_across_reads(&["\x0BMS", "H|a", "\x1C", "\x0D"], vec![frame(b"MSH|a")])]
    #[case::empty_payload(&["\x0B\x1C\x0D"], vec![frame(b"")])]
    #[case::garbage_before(&["\0\0junk\r\n\x0Ba\x1C\x0D"], vec![frame(b"a")])]
    #[case::missing_cr_then_frame(&["\x0Ba\x1C\x0Bb\x1C\x0D"], vec![frame(b"a"), frame(b"b")])]
    #[case::missing_cr_at_eof(&["\x0Ba\x1C"], vec![frame(b"a")])]
    #[case::late_cr_swallowed(&["\x0Ba\x1C", "\x0D\x0Bb\x1C\x0D"], vec![frame(b"a"), frame(b"b")])]
    #[case::lf_instead_of_cr(&["\x0Ba\x1C\n\x0Bb\x1C\x0D"], vec![frame(b"a"), frame(b"b")])]
    #[case::start_inside_frame(&["\x0Bpart\x0Bb\x1C\x0D"], vec![Inbound::Interrupted { head: Bytes::from_static(b"part") }, frame(b"b")])]
    #[case::max_size_exactly(&["\x0B12345678\x1C\x0D"], vec![frame(b"12345678")])]
    #[case::oversized_one_read(&["\x0B123456789\x1C\x0D\x0Bok\x1C\x0D"], vec![Inbound::Oversized { head: Bytes::from_static(b"123456789"), len: 9 }, frame(b"ok")])]
    #[case::oversized_discard_mode(&["\x0B12345", "6789", "abc\x1C\x0D", "\x0Bok\x1C\x0D"], vec![Inbound::Oversized { head: Bytes::from_static(b"123456789abc"), len: 12 }, frame(b"ok")])]
    #[case::oversized_cut_by_start(&["\x0B123456789", "ab\x0Bok\x1C\x0D"], vec![Inbound::Oversized { head: Bytes::from_static(b"123456789ab"), len: 11 }, frame(b"ok")])]
    fn ok_decode(#[case] chunks: &[&str], #[case] expected: Vec<Inbound>) {
        let mut codec = MllpCodec::new(8);
        let (items, end) = run(&mut codec, &as_bytes(chunks));
        assert_eq!(items, expected);
        assert_eq!(end, Ok(()));
        // The same stream delivered byte by byte decodes the same way.
        let stream = chunks.concat().into_bytes();
        let (items, end) = run(&mut MllpCodec::new(8), &bytewise(&stream));
        assert_eq!(items, expected);
        assert_eq!(end, Ok(()));
    }

    #[rstest]
    #[case::mid_frame(&["\x0BMSH|"], "connection closed mid-frame after 4 payload bytes")]
    #[case::start_only(&["junk\x0B"], "connection closed mid-frame after 0 payload bytes")]
    #[case::mid_discard(&["\x0B123456789", "abc"], "connection closed mid-frame after 12 payload bytes")]
    fn err_decode_eof_mid_frame(#[case] chunks: &[&str], #[case] text: &str) {
        let (_, end) = run(&mut MllpCodec::new(8), &as_bytes(chunks));
        assert_eq!(end, Err(text.to_owned()));
    }

    #[rstest]
    #[case::nothing(&[])]
    #[case::only_garbage(&["\0\r\n"])]
    #[case::after_frame(&["\x0Ba\x1C\x0D"])]
    fn ok_clean_eof(#[case] chunks: &[&str]) {
        let mut codec = MllpCodec::new(8);
        let (_, end) = run(&mut codec, &as_bytes(chunks));
        assert_eq!(end, Ok(()));
        assert!(!codec.in_frame());
    }

    #[test]
    fn ok_counts_skipped_bytes_and_missing_trailers() {
        let mut codec = MllpCodec::new(64);
        let (items, _) = run(
            &mut codec,
            &[b"\0\0\0\x0Ba\x1C", b"\r\n\r\n\x0Bb\x1C\x0Bc\x1C\x0D"],
        );
        assert_eq!(items, vec![frame(b"a"), frame(b"b"), frame(b"c")]);
        // NUL NUL NUL, then LF CR LF (the first CR was the late trailer of `a`).
        assert_eq!(codec.skipped_bytes(), 6);
        assert_eq!(codec.missing_trailers(), 1);
    }

    #[test]
    fn ok_missing_cr_emits_without_waiting() {
        let mut codec = MllpCodec::new(64);
        let mut buf = BytesMut::from(&b"\x0BMSH|x\x1C"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame(b"MSH|x")));
        assert!(!codec.in_frame());
        buf.extend_from_slice(b"\x0D");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.missing_trailers(), 0);
        assert_eq!(codec.skipped_bytes(), 0);
    }

    #[test]
    fn ok_in_frame_tracks_partial_frames() {
        let mut codec = MllpCodec::new(4);
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(!codec.in_frame());
        buf.extend_from_slice(b"\x0Bab");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(codec.in_frame());
        buf.extend_from_slice(b"cdefgh");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(codec.in_frame(), "discard mode is still inside a frame");
        assert!(buf.is_empty(), "discard mode buffers nothing");
    }

    #[test]
    fn ok_oversized_head_is_capped() {
        let mut codec = MllpCodec::new(10);
        let mut stream = vec![START_BLOCK];
        stream.extend(std::iter::repeat_n(b'x', 3 * HEAD_LIMIT));
        stream.extend_from_slice(b"\x1C\x0D");
        let chunks: Vec<&[u8]> = stream.chunks(1000).collect();
        let (items, _) = run(&mut codec, &chunks);
        match items.as_slice() {
            [Inbound::Oversized { head, len }] => {
                assert_eq!(head.len(), HEAD_LIMIT);
                assert_eq!(*len, 3 * HEAD_LIMIT);
            }
            other => panic!("unexpected items {other:?}"),
        }
    }

    #[test]
    fn ok_interrupted_head_is_capped() {
        let mut codec = MllpCodec::new(3 * HEAD_LIMIT);
        let mut stream = vec![START_BLOCK];
        stream.extend(std::iter::repeat_n(b'x', 2 * HEAD_LIMIT));
        stream.extend_from_slice(b"\x0Bb\x1C\x0D");
        let (items, _) = run(&mut codec, &[&stream]);
        match items.as_slice() {
            [Inbound::Interrupted { head }, Inbound::Frame(b)] => {
                assert_eq!(head.len(), HEAD_LIMIT);
                assert_eq!(b.as_ref(), b"b");
            }
            other => panic!("unexpected items {other:?}"),
        }
    }

    #[test]
    fn ok_short_payload_copied_and_read_buffer_reused() {
        let mut codec = MllpCodec::default();
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let start = buf.as_ptr();
        buf.extend_from_slice(b"\x0BMSH|short\x1C\x0D");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame(b"MSH|short")));
        assert!(buf.is_empty());
        // The payload is its own copy: the next read's room is the same buffer.
        buf.reserve(8 * 1024);
        assert_eq!(buf.as_ptr(), start);
    }

    #[test]
    fn ok_long_payload_split_off_without_copy() {
        let mut codec = MllpCodec::default();
        let mut buf = BytesMut::with_capacity(2 * COPY_LIMIT);
        buf.extend_from_slice(&[START_BLOCK]);
        buf.extend(std::iter::repeat_n(b'x', COPY_LIMIT + 1));
        buf.extend_from_slice(&[END_BLOCK, TRAILER]);
        let payload_at = buf.as_ptr().wrapping_add(1);
        match codec.decode(&mut buf).unwrap() {
            Some(Inbound::Frame(payload)) => {
                assert_eq!(payload.len(), COPY_LIMIT + 1);
                assert_eq!(payload.as_ptr(), payload_at);
            }
            other => panic!("unexpected item {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn ok_encode() {
        let mut codec = MllpCodec::default();
        let mut dst = BytesMut::new();
        codec.encode(&b"MSH|^~\\&"[..], &mut dst).unwrap();
        codec.encode(Bytes::from_static(b"x"), &mut dst).unwrap();
        assert_eq!(dst.as_ref(), b"\x0BMSH|^~\\&\x1C\x0D\x0Bx\x1C\x0D");
    }

    #[rstest]
    #[case::start_block(&b"MSH|\x0B"[..], "payload holds reserved MLLP byte `\\x0B` at byte offset 4")]
    #[case::end_block(&b"\x1C"[..], "payload holds reserved MLLP byte `\\x1C` at byte offset 0")]
    fn err_encode_reserved_byte(#[case] payload: &[u8], #[case] text: &str) {
        let mut dst = BytesMut::new();
        let err = MllpCodec::default().encode(payload, &mut dst).unwrap_err();
        assert_eq!(err.to_string(), text);
        assert!(dst.is_empty());
    }

    /// Splits `stream` at the given cut points (taken modulo its length).
    fn split_at_cuts(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| c % (stream.len() + 1))
            .collect::<Vec<_>>();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points.into_iter().chain([stream.len()]) {
            chunks.push(stream[from..p].to_vec());
            from = p;
        }
        chunks
    }

    proptest! {
        #[test]
        fn prop_arbitrary_chunks_never_panic_nor_overbuffer(
            chunks in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![Just(START_BLOCK), Just(END_BLOCK), Just(TRAILER), any::<u8>()],
                    0..64,
                ),
                0..32,
            ),
            max in 0usize..48,
        ) {
            let mut codec = MllpCodec::new(max);
            let mut buf = BytesMut::new();
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
                while let Some(item) = codec.decode(&mut buf).unwrap() {
                    match item {
                        Inbound::Frame(p) => prop_assert!(p.len() <= max),
                        Inbound::Oversized { head, len } => {
                            prop_assert!(len > max);
                            prop_assert!(head.len() <= HEAD_LIMIT.min(len));
                        }
                        Inbound::Interrupted { head } => prop_assert!(head.len() <= max),
                    }
                }
                prop_assert!(buf.len() <= max, "buffered {} > max {}", buf.len(), max);
            }
            let _ = codec.decode_eof(&mut buf);
        }

        #[test]
        fn prop_encoded_frames_survive_any_split(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>().prop_filter("not reserved", |b| *b != START_BLOCK && *b != END_BLOCK), 0..40),
                0..8,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let mut codec = MllpCodec::new(64);
            let mut stream = BytesMut::new();
            for p in &payloads {
                codec.encode(p.as_slice(), &mut stream).unwrap();
            }
            let chunks = split_at_cuts(&stream, &cuts);
            let chunk_refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let mut decoder = MllpCodec::new(64);
            let (items, end) = run(&mut decoder, &chunk_refs);
            let expected: Vec<Inbound> = payloads.iter().map(|p| frame(p)).collect();
            prop_assert_eq!(items, expected);
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(decoder.skipped_bytes(), 0);
            prop_assert_eq!(decoder.missing_trailers(), 0);
        }
    }
}

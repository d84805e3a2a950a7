//! How a journal record is written in an intake log segment, and read back.
//!
//! A segment starts with [`MAGIC`]; then records, each a 16-byte header and a payload:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | payload length, little-endian |
//! | 4 | CRC-32 of the sequence number's 8 bytes and the payload |
//! | 8 | sequence number, little-endian (1, 2, 3 … across segments) |
//! | n | payload: `received_at` (i64, µs), status (0 accepted, 1 rejected), the raw bytes' SHA-256, then channel, peer, sender, message type, control id, reason (rejected only) and raw, each a u32 length and its bytes |
//!
//! A record whose header or CRC does not check is where the segment ends: the tail a crash
//! cut in the middle of an append (never acknowledged: the ACK waits for the `fdatasync`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::super::writer::Prepared;
use super::super::{InboundRecord, RecordStatus};

/// The first bytes of every segment: the format's name and version.
pub(crate) const MAGIC: &[u8; 8] = b"OBINTK01";
/// Bytes of a record's header.
pub(crate) const HEADER: usize = 16;
/// The longest payload a reader accepts: a larger length is a damaged header, not a record
/// (an MLLP frame is bounded by `max_frame_size`, 64 MiB at most).
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// Appends record `seq` to `out`.
pub(crate) fn encode(seq: u64, prepared: &Prepared, out: &mut Vec<u8>) {
    let record = prepared.record();
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&prepared.received_at().to_le_bytes());
    let reason = match &record.status {
        RecordStatus::Accepted => {
            out.push(0);
            None
        }
        RecordStatus::Rejected { reason } => {
            out.push(1);
            Some(reason)
        }
    };
    out.extend_from_slice(prepared.hash());
    for field in [
        record.channel.as_bytes(),
        record.peer.as_bytes(),
        record.sender.as_bytes(),
        record.message_type.as_bytes(),
        record.control_id.as_bytes(),
    ] {
        put(out, field);
    }
    if let Some(reason) = reason {
        put(out, reason.as_bytes());
    }
    put(out, &record.raw);
    let payload_len = out.len() - start - HEADER;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(out.get(start + HEADER..).unwrap_or_default());
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
    header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    header[8..].copy_from_slice(&seq.to_le_bytes());
    if let Some(slot) = out.get_mut(start..start + HEADER) {
        slot.copy_from_slice(&header);
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(field);
}

/// A record's header, read before its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) payload_len: usize,
    crc: u32,
    pub(crate) seq: u64,
}

impl Header {
    /// `None` for a length no record can have (a damaged or torn header).
    pub(crate) fn parse(bytes: &[u8; HEADER]) -> Option<Header> {
        let word = |at: usize| -> [u8; 4] {
            let mut word = [0; 4];
            word.copy_from_slice(&bytes[at..at + 4]);
            word
        };
        let payload_len = usize::try_from(u32::from_le_bytes(word(0))).ok()?;
        let mut seq = [0; 8];
        seq.copy_from_slice(&bytes[8..]);
        (payload_len <= MAX_PAYLOAD).then_some(Header {
            payload_len,
            crc: u32::from_le_bytes(word(4)),
            seq: u64::from_le_bytes(seq),
        })
    }
}

/// Why a record's payload could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("its checksum does not match (a torn or damaged write)")]
    Checksum,
    #[error("its payload ends inside field `{0}`")]
    Truncated(&'static str),
    #[error("field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
    #[error("its status byte is {0}, expected 0 or 1")]
    Status(u8),
    #[error("{0} bytes follow its last field")]
    Trailing(usize),
}

/// Reads back the record `header` announced from its payload.
pub(crate) fn decode(header: &Header, payload: Bytes) -> Result<Prepared, DecodeError> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header.seq.to_le_bytes());
    crc.update(&payload);
    if crc.finalize() != header.crc {
        return Err(DecodeError::Checksum);
    }
    let mut reader = Reader { payload, at: 0 };
    let received_at = i64::from_le_bytes(reader.fixed::<8>("received_at")?);
    let [status] = reader.fixed::<1>("status")?;
    let hash = reader.fixed::<32>("hash")?;
    let channel = reader.text("channel")?;
    let peer = reader.text("peer")?;
    let sender = reader.text("sender")?;
    let message_type = reader.text("message_type")?;
    let control_id = reader.text("control_id")?;
    let status = match status {
        0 => RecordStatus::Accepted,
        1 => RecordStatus::Rejected {
            reason: reader.text("reason")?,
        },
        other => return Err(DecodeError::Status(other)),
    };
    let raw = reader.field("raw")?;
    let left = reader.payload.len() - reader.at;
    if left > 0 {
        return Err(DecodeError::Trailing(left));
    }
    let record = InboundRecord {
        channel,
        received_at: jiff::Timestamp::from_microsecond(received_at)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        peer,
        sender,
        message_type,
        control_id,
        raw,
        status,
    };
    Ok(Prepared::from_parts(record, hash, received_at))
}

/// Walks a payload field by field.
struct Reader {
    payload: Bytes,
    at: usize,
}

impl Reader {
    fn fixed<const N: usize>(&mut self, name: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .payload
            .get(self.at..self.at + N)
            .ok_or(DecodeError::Truncated(name))?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        self.at += N;
        Ok(out)
    }

    fn field(&mut self, name: &'static str) -> Result<Bytes, DecodeError> {
        let len = u32::from_le_bytes(self.fixed::<4>(name)?);
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated(name))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.payload.len())
            .ok_or(DecodeError::Truncated(name))?;
        let field = self.payload.slice(self.at..end);
        self.at = end;
        Ok(field)
    }

    fn text(&mut self, name: &'static str) -> Result<String, DecodeError> {
        let bytes = self.field(name)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8(name))
    }
}

/// Why no record could be read at an offset of a segment.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// What is there is no record: a torn or failed append, or damage (the reader decides
    /// which), said how.
    Bad(String),
}

/// The record at `offset` of `file`, with its size; `None` where nothing was written: the end
/// of the file, or zeros (allocated ahead). Recovery and the applier read through it.
pub(crate) fn read_at(
    file: &File,
    offset: u64,
) -> Result<Option<(Prepared, u64, usize)>, ReadError> {
    let mut header = [0u8; HEADER];
    match read_full_at(file, &mut header, offset).map_err(ReadError::Io)? {
        0 => return Ok(None),
        HEADER if header == [0; HEADER] => return Ok(None),
        HEADER => {}
        n => {
            return Err(ReadError::Bad(format!(
                "the file ends {n} bytes into a record's header"
            )));
        }
    }
    let header = Header::parse(&header).ok_or_else(|| {
        ReadError::Bad("a record's header announces an impossible length".to_owned())
    })?;
    let mut payload = vec![0u8; header.payload_len];
    let read = read_full_at(file, &mut payload, offset + HEADER as u64).map_err(ReadError::Io)?;
    if read < payload.len() {
        return Err(ReadError::Bad(format!(
            "the file ends {read} bytes into record {}'s {} bytes",
            header.seq, header.payload_len
        )));
    }
    let prepared = decode(&header, Bytes::from(payload))
        .map_err(|error| ReadError::Bad(format!("record {}: {error}", header.seq)))?;
    Ok(Some((prepared, header.seq, HEADER + header.payload_len)))
}

/// The record of `segment` at `offset` (0: its start, where the magic is checked first),
/// and its sequence number; `offset` moves past it. `None` where nothing was written.
pub(crate) fn read_next(
    segment: &File,
    offset: &mut u64,
) -> Result<Option<(Prepared, u64)>, ReadError> {
    if *offset == 0 {
        let mut magic = [0u8; MAGIC.len()];
        match read_full_at(segment, &mut magic, 0).map_err(ReadError::Io)? {
            0 => return Ok(None), // created, never written
            n if n == magic.len() && &magic == MAGIC => *offset = MAGIC.len() as u64,
            _ => {
                return Err(ReadError::Bad(
                    "the file does not start as an intake log segment".to_owned(),
                ));
            }
        }
    }
    let Some((prepared, seq, size)) = read_at(segment, *offset)? else {
        return Ok(None);
    };
    *offset += size as u64;
    Ok(Some((prepared, seq)))
}

/// Reads from `offset` until `buf` is full or the end of the file; how many bytes were read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn prepared(status: RecordStatus) -> Prepared {
        Prepared::new(InboundRecord {
            channel: "adt-in".to_owned(),
            received_at: jiff::Timestamp::from_microsecond(1_764_000_000_123_456).unwrap(),
            peer: "127.0.0.1:5000".to_owned(),
            sender: "DPI^HOSP".to_owned(),
            message_type: "ADT^A01".to_owned(),
            control_id: "SYN0002".to_owned(),
            raw: Bytes::from_static(b"MSH|^~\\&|DPI|HOSP\rPID|1||SYN123\r"),
            status,
        })
    }

    fn read_back(bytes: &[u8]) -> (Header, Result<Prepared, DecodeError>) {
        let header = Header::parse(bytes[..HEADER].try_into().unwrap()).unwrap();
        let payload = Bytes::copy_from_slice(&bytes[HEADER..HEADER + header.payload_len]);
        (header, decode(&header, payload))
    }

    #[rstest]
    #[case::accepted(RecordStatus::Accepted)]
    #[case::rejected(RecordStatus::Rejected { reason: "MSH-9 missing".to_owned() })]
    fn ok_a_record_reads_back_as_written(#[case] status: RecordStatus) {
        let written = prepared(status);
        let mut bytes = Vec::new();
        encode(42, &written, &mut bytes);
        let (header, read) = read_back(&bytes);
        assert_eq!(header.seq, 42);
        assert_eq!(HEADER + header.payload_len, bytes.len());
        let read = read.unwrap();
        assert_eq!(read.record(), written.record());
        assert_eq!(read.hash(), written.hash());
        assert_eq!(read.received_at(), written.received_at());
    }

    #[rstest]
    #[case::payload_byte(HEADER + 20, DecodeError::Checksum)]
    #[case::sequence_number(HEADER - 1, DecodeError::Checksum)]
    fn err_a_flipped_byte_fails_the_checksum(#[case] at: usize, #[case] expected: DecodeError) {
        let mut bytes = Vec::new();
        encode(7, &prepared(RecordStatus::Accepted), &mut bytes);
        bytes[at] ^= 0x40;
        let (_, read) = read_back(&bytes);
        assert_eq!(read.unwrap_err(), expected);
        assert_eq!(
            DecodeError::Checksum.to_string(),
            "its checksum does not match (a torn or damaged write)"
        );
    }

    #[test]
    fn err_a_length_past_the_bound_is_no_header() {
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Header::parse(&header), None);
    }

    #[test]
    fn err_a_short_payload_names_the_field_it_ends_in() {
        let mut bytes = Vec::new();
        encode(3, &prepared(RecordStatus::Accepted), &mut bytes);
        let header = Header::parse(bytes[..HEADER].try_into().unwrap()).unwrap();
        // A payload cut inside the hash, with a checksum made for it.
        let payload = Bytes::copy_from_slice(&bytes[HEADER..HEADER + 20]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&3u64.to_le_bytes());
        crc.update(&payload);
        let cut = Header {
            payload_len: 20,
            crc: crc.finalize(),
            ..header
        };
        let error = decode(&cut, payload).unwrap_err();
        assert_eq!(error, DecodeError::Truncated("hash"));
        assert_eq!(error.to_string(), "its payload ends inside field `hash`");
    }
}

//! Batch payloads: split FHS/BHS…BTS/FTS envelopes, or several bare MSH messages in one
//! payload, into message slices, checking the counts the trailers announce.
//!
//! Accepted: optional FHS, any number of BHS…BTS groups (or none), messages outside a BHS,
//! CR/LF/CRLF line ends, blank lines, a leading BOM, an empty batch. Refused: segments before
//! the first header or message, anything after FTS, a second FHS, a BTS-1/FTS-1 count that is
//! not a number or does not match what was found. Messages themselves are not parsed here.

use crate::text::readable_prefix;

/// Why a payload cannot be split into messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Nothing but whitespace.
    #[error("empty payload")]
    Empty,
    /// A segment where it cannot be.
    #[error("segment {number} (`{id}`) at byte {offset}: {reason}")]
    Unexpected {
        /// Line number of the segment in the payload, 1-based (blank lines not counted).
        number: usize,
        /// The segment id as found, readable.
        id: String,
        /// Offset of the segment in the payload.
        offset: usize,
        /// What was expected instead.
        reason: &'static str,
    },
    /// BTS-1 or FTS-1 is not a number.
    #[error("{segment}-1 at byte {offset}: `{value}` is not a count")]
    BadCount {
        /// `BTS` or `FTS`.
        segment: &'static str,
        /// Offset of the trailer segment.
        offset: usize,
        /// The value, readable.
        value: String,
    },
    /// The trailer count does not match.
    #[error("{segment}-1 at byte {offset}: expected {expected} {what}, found {found}")]
    CountMismatch {
        /// `BTS` or `FTS`.
        segment: &'static str,
        /// Offset of the trailer segment.
        offset: usize,
        /// What the trailer says.
        expected: usize,
        /// What the payload holds.
        found: usize,
        /// `messages` or `batches`.
        what: &'static str,
    },
}

/// One BHS…BTS group (or the messages outside any BHS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchGroup<'a> {
    /// The BHS segment, without its terminator.
    pub header: Option<&'a [u8]>,
    /// The BTS segment, without its terminator.
    pub trailer: Option<&'a [u8]>,
    /// The messages, each from `MSH` to its last segment terminator.
    pub messages: Vec<&'a [u8]>,
}

/// A split payload: envelopes as raw segments, messages as slices of the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The FHS segment, if any.
    pub file_header: Option<&'a [u8]>,
    /// The FTS segment, if any.
    pub file_trailer: Option<&'a [u8]>,
    /// The groups, in order.
    pub groups: Vec<BatchGroup<'a>>,
}

impl<'a> Batch<'a> {
    /// All messages in payload order.
    pub fn messages(&self) -> Vec<&'a [u8]> {
        self.groups
            .iter()
            .flat_map(|g| g.messages.iter().copied())
            .collect()
    }
}

/// One line of the payload: content `start..end`, next line at `next`.
struct Line {
    start: usize,
    end: usize,
    next: usize,
}

fn lines(raw: &[u8], from: usize) -> impl Iterator<Item = Line> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        while pos < raw.len() {
            let rest = raw.get(pos..)?;
            let len = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            let start = pos;
            let end = pos + len;
            let next = match (raw.get(end), raw.get(end + 1)) {
                (Some(b'\r'), Some(b'\n')) => end + 2,
                (Some(_), _) => end + 1,
                (None, _) => end,
            };
            pos = next.max(end + 1);
            let line = raw.get(start..end)?;
            if line.iter().all(|b| b.is_ascii_whitespace() || *b == 0) {
                continue;
            }
            return Some(Line { start, end, next });
        }
        None
    })
}

/// Splits a payload into messages and batch envelopes.
pub fn split(raw: &[u8]) -> Result<Batch<'_>, BatchError> {
    let from = if raw.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let mut batch = Batch::default();
    let mut fs = None;
    // Current message: start offset and end (just past its last line).
    let mut current: Option<(usize, usize)> = None;
    // Whether the last group is open (BHS seen or implicit, no BTS yet).
    let mut group_open = false;
    let mut closed_file = false;
    let mut count = 0;
    for (i, line) in lines(raw, from).enumerate() {
        count += 1;
        let number = i + 1;
        let seg = raw.get(line.start..line.end).unwrap_or_default();
        let id = seg.get(..3).unwrap_or(seg);
        let unexpected = |reason| BatchError::Unexpected {
            number,
            id: readable_prefix(id, 8),
            offset: line.start,
            reason,
        };
        if closed_file {
            return Err(unexpected("nothing may follow FTS"));
        }
        let is_boundary = matches!(id, b"FHS" | b"BHS" | b"BTS" | b"FTS" | b"MSH");
        if is_boundary && let Some((start, end)) = current.take() {
            push_message(&mut batch, &mut group_open, raw.get(start..end));
        }
        if matches!(id, b"FHS" | b"BHS" | b"MSH") && fs.is_none() {
            fs = seg.get(3).copied();
        }
        match id {
            b"FHS" => {
                if batch.file_header.is_some() || !batch.groups.is_empty() {
                    return Err(unexpected("FHS must be the first segment of the payload"));
                }
                batch.file_header = Some(seg);
            }
            b"BHS" => {
                batch.groups.push(BatchGroup {
                    header: Some(seg),
                    ..BatchGroup::default()
                });
                group_open = true;
            }
            b"MSH" => current = Some((line.start, line.next)),
            b"BTS" => {
                if !group_open {
                    batch.groups.push(BatchGroup::default());
                }
                group_open = false;
                let found = batch.groups.last().map_or(0, |g| g.messages.len());
                if let Some(g) = batch.groups.last_mut() {
                    g.trailer = Some(seg);
                }
                check_count(
                    seg,
                    fs.unwrap_or(b'|'),
                    "BTS",
                    line.start,
                    found,
                    "messages",
                )?;
            }
            b"FTS" => {
                group_open = false;
                batch.file_trailer = Some(seg);
                let found = batch.groups.iter().filter(|g| g.header.is_some()).count();
                check_count(seg, fs.unwrap_or(b'|'), "FTS", line.start, found, "batches")?;
                closed_file = true;
            }
            _ => match current.as_mut() {
                Some((_, end)) => *end = line.next,
                None => return Err(unexpected("expected FHS, BHS or MSH first")),
            },
        }
    }
    if let Some((start, end)) = current.take() {
        push_message(&mut batch, &mut group_open, raw.get(start..end));
    }
    if count == 0 {
        return Err(BatchError::Empty);
    }
    Ok(batch)
}

fn push_message<'a>(batch: &mut Batch<'a>, group_open: &mut bool, msg: Option<&'a [u8]>) {
    let Some(msg) = msg else { return };
    if !*group_open {
        batch.groups.push(BatchGroup::default());
        *group_open = true;
    }
    if let Some(g) = batch.groups.last_mut() {
        g.messages.push(msg);
    }
}

/// Checks field 1 of a trailer (BTS-1 / FTS-1) against what was found; empty means unchecked.
fn check_count(
    seg: &[u8],
    fs: u8,
    segment: &'static str,
    offset: usize,
    found: usize,
    what: &'static str,
) -> Result<(), BatchError> {
    let value = seg.split(|&b| b == fs).nth(1).unwrap_or_default();
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(());
    }
    let expected = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| BatchError::BadCount {
            segment,
            offset,
            value: readable_prefix(value, 16),
        })?;
    if expected != found {
        return Err(BatchError::CountMismatch {
            segment,
            offset,
            expected,
            found,
            what,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    const M1: &str = "MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5\rPID|1||X\r";
    const M2: &str = "MSH|^~\\&|A|B|||||ADT^A01|2|P|2.5\rPID|1||Y\rPV1|1\r";

    #[test]
    fn ok_full_envelope() {
        let raw = format!("FHS|^~\\&|A\rBHS|^~\\&|A\r{M1}{M2}BTS|2\rFTS|1\r");
        let b = split(raw.as_bytes()).unwrap();
        assert_eq!(b.messages(), [M1.as_bytes(), M2.as_bytes()]);
        assert_eq!(b.file_header, Some(&b"FHS|^~\\&|A"[..]));
        assert_eq!(b.file_trailer, Some(&b"FTS|1"[..]));
        assert_eq!(b.groups.len(), 1);
        assert_eq!(b.groups[0].header, Some(&b"BHS|^~\\&|A"[..]));
        assert_eq!(b.groups[0].trailer, Some(&b"BTS|2"[..]));
    }

    #[rstest]
    #[case::ok_bare_msh(format!("{M1}{M2}"), 2)]
    #[case::ok_single(M1.to_string(), 1)]
    #[case::ok_lf(format!("{M1}{M2}").replace('\r', "\n"), 2)]
    #[case::ok_crlf(format!("{M1}{M2}").replace('\r', "\r\n"), 2)]
    #[case::ok_blank_lines(format!("\r\n{M1}\r\n\r\n{M2}\n\n"), 2)]
    #[case::ok_bhs_only(format!("BHS|^~\\&\r{M1}{M2}{M1}BTS|3"), 3)]
    #[case::ok_empty_count(format!("BHS|^~\\&\r{M1}BTS|\r"), 1)]
    #[case::ok_empty_batch("FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r".to_string(), 0)]
    #[case::ok_two_batches(format!("FHS|^~\\&\rBHS|^~\\&\r{M1}BTS|1\rBHS|^~\\&\r{M1}{M2}BTS|2\rFTS|2\r"), 3)]
    #[case::ok_bom(format!("\u{FEFF}{M1}"), 1)]
    fn ok_split(#[case] raw: String, #[case] n: usize) {
        let b = split(raw.as_bytes()).unwrap();
        let msgs = b.messages();
        assert_eq!(msgs.len(), n);
        for m in msgs {
            assert!(m.starts_with(b"MSH"));
            assert!(crate::hl7::Message::parse(m).is_ok());
        }
    }

    #[test]
    fn ok_message_slices_keep_terminators() {
        let raw = format!("{M1}{M2}").replace('\r', "\r\n");
        let b = split(raw.as_bytes()).unwrap();
        assert_eq!(b.messages()[0], M1.replace('\r', "\r\n").as_bytes());
    }

    #[rstest]
    #[case::err_empty("", "empty payload")]
    #[case::err_blank("\r\n  \r", "empty payload")]
    #[case::err_bts_mismatch(format!("BHS|^~\\&\r{M1}{M2}BTS|3\r"), "BTS-1 at byte 99: expected 3 messages, found 2")]
    #[case::err_fts_mismatch(format!("FHS|^~\\&\rBHS|^~\\&\r{M1}BTS|1\rFTS|2\r"), "FTS-1 at byte 66: expected 2 batches, found 1")]
    #[case::err_bad_count(format!("BHS|^~\\&\r{M1}BTS|two\r"), "BTS-1 at byte 51: `two` is not a count")]
    #[case::err_junk_first(
        "PID|1\r",
        "segment 1 (`PID`) at byte 0: expected FHS, BHS or MSH first"
    )]
    #[case::err_after_fts(format!("FHS|^~\\&\r{M1}FTS|\r{M2}"), "segment 5 (`MSH`) at byte 56: nothing may follow FTS")]
    #[case::err_second_fhs(format!("FHS|^~\\&\r{M1}FHS|^~\\&\r"), "segment 4 (`FHS`) at byte 51: FHS must be the first segment of the payload")]
    fn err_split(#[case] raw: String, #[case] expected: &str) {
        assert_eq!(split(raw.as_bytes()).unwrap_err().to_string(), expected);
    }
}

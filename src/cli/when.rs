//! The times `ordobridge journal --since/--until` take.
//!
//! Accepted:
//! - an RFC 3339 time with its offset: `2026-11-22T08:15:00Z`, `2026-11-22T09:15:00+01:00`
//!   (fractions of a second too);
//! - a date `YYYY-MM-DD`: midnight at the start of that day, in the given time zone (the CLI
//!   passes the system's, the one its listings print);
//! - an age `<N><unit>` counted back from now, unit `s`, `m`, `h`, `d` (24 hours) or `w`
//!   (7 days): `30m`, `2h`, `3d`.
//!
//! Deliberately not accepted: a time without an offset (ambiguous around a DST change), months
//! and years as ages (not a fixed length), and a sign or spaces in an age.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Why a time argument was refused; the CLI prefixes the flag name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhenError {
    /// Nothing given.
    #[error("empty: expected {EXPECTED}")]
    Empty,
    /// Not one of the accepted shapes.
    #[error("`{0}` is not a time: expected {EXPECTED}")]
    Unreadable(String),
    /// An age with a unit this parser does not know.
    #[error("`{text}`: unknown unit `{unit}` (expected s, m, h, d or w)")]
    Unit {
        /// The whole argument, escaped.
        text: String,
        /// The unit as found, escaped.
        unit: String,
    },
    /// A valid shape whose value is out of the representable range.
    #[error("`{0}` is out of range (years -9999 to 9999)")]
    OutOfRange(String),
}

const EXPECTED: &str = "an RFC 3339 time (`2026-11-22T08:15:00+01:00`), a date (`2026-11-22`) \
                        or an age (`30m`, `2h`, `3d`, `1w`)";

/// Reads `text` as a point in time; `now` anchors ages, `tz` places dates.
pub fn parse_when(text: &str, now: Timestamp, tz: &TimeZone) -> Result<Timestamp, WhenError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(WhenError::Empty);
    }
    let shown = || super::escape_controls(text);
    if let Some(age) = age(text)? {
        return now
            .checked_sub(age)
            .map_err(|_| WhenError::OutOfRange(shown()));
    }
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    if is_date_shape(text) {
        let date: jiff::civil::Date = text.parse().map_err(|_| WhenError::Unreadable(shown()))?;
        return date
            .to_zoned(tz.clone())
            .map(|z| z.timestamp())
            .map_err(|_| WhenError::OutOfRange(shown()));
    }
    Err(WhenError::Unreadable(shown()))
}

/// `YYYY-MM-DD` exactly (the civil date parser would take more).
fn is_date_shape(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// `Some(age)` for `<digits><unit>`; `None` when `text` does not start like an age.
fn age(text: &str) -> Result<Option<SignedDuration>, WhenError> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    // A date or an RFC 3339 time goes on with `-` after its digits; an age ends in letters.
    if digits == 0 || unit.is_empty() || !unit.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Ok(None);
    }
    let shown = || super::escape_controls(text);
    let seconds_per: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Err(WhenError::Unit {
                text: shown(),
                unit: super::escape_controls(other),
            });
        }
    };
    let seconds = number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per))
        .ok_or_else(|| WhenError::OutOfRange(shown()))?;
    Ok(Some(SignedDuration::from_secs(seconds)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    fn paris() -> TimeZone {
        TimeZone::get("Europe/Paris").unwrap_or_else(|_| TimeZone::fixed(jiff::tz::offset(1)))
    }

    #[rstest]
    #[case::ok_rfc3339_utc("2026-11-20T08:15:00Z", "2026-11-20T08:15:00Z")]
    #[case::ok_rfc3339_offset("2026-11-20T09:15:00+01:00", "2026-11-20T08:15:00Z")]
    #[case::ok_rfc3339_fraction("2026-11-20T08:15:00.250Z", "2026-11-20T08:15:00.25Z")]
    #[case::ok_date_local_midnight("2026-11-20", "2026-11-19T23:00:00Z")]
    #[case::ok_spaces_trimmed(" 2026-11-20 ", "2026-11-19T23:00:00Z")]
    #[case::ok_seconds("90s", "2026-11-22T11:58:30Z")]
    #[case::ok_minutes("30m", "2026-11-22T11:30:00Z")]
    #[case::ok_hours("2h", "2026-11-22T10:00:00Z")]
    #[case::ok_days("3d", "2026-11-19T12:00:00Z")]
    #[case::ok_weeks("1w", "2026-11-15T12:00:00Z")]
    #[case::ok_zero("0h", "2026-11-22T12:00:00Z")]
    fn ok_when(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(
            parse_when(text, now(), &paris()).unwrap(),
            expected.parse::<Timestamp>().unwrap()
        );
    }

    #[rstest]
    #[case::err_empty(
        "  ",
        "empty: expected an RFC 3339 time (`2026-11-22T08:15:00+01:00`), a date (`2026-11-22`) \
         or an age (`30m`, `2h`, `3d`, `1w`)"
    )]
    #[case::err_no_offset(
        "2026-11-20T08:15:00",
        "`2026-11-20T08:15:00` is not a time: expected an RFC 3339 time \
         (`2026-11-22T08:15:00+01:00`), a date (`2026-11-22`) or an age (`30m`, `2h`, `3d`, `1w`)"
    )]
    #[case::err_bad_date(
        "2026-02-30",
        "`2026-02-30` is not a time: expected an RFC 3339 time (`2026-11-22T08:15:00+01:00`), \
         a date (`2026-11-22`) or an age (`30m`, `2h`, `3d`, `1w`)"
    )]
    #[case::err_words(
        "yesterday",
        "`yesterday` is not a time: expected an RFC 3339 time (`2026-11-22T08:15:00+01:00`), \
         a date (`2026-11-22`) or an age (`30m`, `2h`, `3d`, `1w`)"
    )]
    #[case::err_negative_age(
        "-2h",
        "`-2h` is not a time: expected an RFC 3339 time (`2026-11-22T08:15:00+01:00`), \
         a date (`2026-11-22`) or an age (`30m`, `2h`, `3d`, `1w`)"
    )]
    #[case::err_month_unit("2mo", "`2mo`: unknown unit `mo` (expected s, m, h, d or w)")]
    #[case::err_year_unit("1y", "`1y`: unknown unit `y` (expected s, m, h, d or w)")]
    #[case::err_control_escaped(
        "2\u{1b}",
        "`2\\u{1b}` is not a time: expected an RFC 3339 time (`2026-11-22T08:15:00+01:00`), \
         a date (`2026-11-22`) or an age (`30m`, `2h`, `3d`, `1w`)"
    )]
    #[case::err_too_old(
        "99999999999999w",
        "`99999999999999w` is out of range (years -9999 to 9999)"
    )]
    fn err_when(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(
            parse_when(text, now(), &paris()).unwrap_err().to_string(),
            expected
        );
    }
}

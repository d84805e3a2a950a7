//! Numbers, durations and sizes as the configuration writes them (`30s`, `1h 30m`, `64KiB`).

use std::time::Duration;

use toml::Spanned;

use super::Report;
use super::raw::SizeValue;

pub(super) fn positive(
    value: Option<Spanned<i64>>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<usize> {
    let value = value?;
    match usize::try_from(*value.get_ref()) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            report.push(
                Some(value.span()),
                key,
                format!("expected a positive number, found {}", value.get_ref()),
            );
            None
        }
    }
}

pub(super) fn duration_value(
    value: Spanned<String>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<Duration> {
    match parse_duration(value.get_ref()) {
        Some(d) => Some(d),
        None => {
            report.push(
                Some(value.span()),
                key,
                format!(
                    "invalid duration `{}`: expected a number with a unit, such as `500ms`, `30s`, `15m` or `1h`",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

pub(super) fn size_value(
    value: Spanned<SizeValue>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<usize> {
    let span = value.span();
    let parsed = match value.into_inner() {
        SizeValue::Bytes(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or(n.to_string()),
        SizeValue::Text(text) => parse_size(&text).ok_or(text),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(shown) => {
            report.push(
                Some(span),
                key,
                format!(
                    "invalid size `{shown}`: expected a positive number of bytes or a size such as `64KiB`, `4MiB`, `1MB`"
                ),
            );
            None
        }
    }
}

/// Parses `500ms`, `30s`, `15m`, `2h` (one number, one unit) or a friendly `1h 30m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    for part in text.split_whitespace() {
        let split = part.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = part.split_at(split);
        let n: u64 = number.parse().ok()?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            "w" => Duration::from_secs(n.checked_mul(7 * 86_400)?),
            // A year of retention: 365 days.
            "y" => Duration::from_secs(n.checked_mul(365 * 86_400)?),
            _ => return None,
        };
        total = total.checked_add(d)?;
    }
    Some(total)
}

/// Parses `4096`, `64KiB`, `4MiB`, `1MB`, `2kB`.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor).filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("500ms", Duration::from_millis(500))]
    #[case("30s", Duration::from_secs(30))]
    #[case("15m", Duration::from_secs(900))]
    #[case("1h 30m", Duration::from_secs(5400))]
    #[case("2w", Duration::from_secs(14 * 86_400))]
    #[case("2y", Duration::from_secs(730 * 86_400))]
    fn ok_durations(#[case] text: &str, #[case] expected: Duration) {
        assert_eq!(parse_duration(text), Some(expected));
    }

    #[rstest]
    #[case("4096", Some(4096))]
    #[case("64KiB", Some(65536))]
    #[case("4MiB", Some(4 << 20))]
    #[case("1MB", Some(1_000_000))]
    #[case("0", None)]
    #[case("MiB", None)]
    fn sizes(#[case] text: &str, #[case] expected: Option<usize>) {
        assert_eq!(parse_size(text), expected);
    }
}

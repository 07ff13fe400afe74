//! Human units in the route file: durations (`500ms`, `30s`, `5m`, `1h`), byte sizes
//! (`512`, `64KiB`, `4MB`), whole numbers and booleans.
//!
//! Owns the text → value parsing and the error wording for these scalars, plus [`Scalar`], the
//! serde helper that reads any YAML scalar as text so that every message about a bad value is
//! written here and not by the YAML library. It does not know which field a value belongs to or
//! which bounds apply; the conversion in `lib.rs` does.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A value that is not a duration or size; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError(String);

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnitError {}

impl UnitError {
    /// An error with this message (for callers that add their own bounds).
    pub fn new(message: impl Into<String>) -> Self {
        UnitError(message.into())
    }
}

impl From<UnitError> for String {
    fn from(e: UnitError) -> String {
        e.0
    }
}

const DURATION_FORM: &str =
    "write a number followed by ns, us, ms, s, m or h, e.g. `500ms`, `1.5s`, `30s`, `5m`, `1h`";

/// Parse a duration: a number (decimals allowed: `1.5s`) and one unit, `ns`, `us` (or `µs`), `ms`, `s`, `m`
/// (or `min`) or `h`. A bare number is an error (seconds or milliseconds? the file must say). The one parser for the
/// route file and `ringway-load`'s command line.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim_start();
    let nanos_per_unit: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" if !number.is_empty() => {
            return Err(UnitError(format!(
                "`{text}` has no unit: {DURATION_FORM} (a bare number is ambiguous)"
            )));
        }
        _ if number.is_empty() => {
            return Err(UnitError(format!(
                "`{text}` is not a duration: {DURATION_FORM}"
            )));
        }
        _ => {
            return Err(UnitError(format!(
                "`{text}` has an unknown unit `{unit}`: {DURATION_FORM}"
            )));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(UnitError(format!(
            "`{text}` is not a duration: {DURATION_FORM}"
        )));
    }
    let too_large = || UnitError(format!("`{text}` is too large for a duration"));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    // The fraction is exact to the nanosecond: digits beyond what the unit resolves are dropped.
    let mut nanos = whole.checked_mul(nanos_per_unit).ok_or_else(too_large)?;
    let mut scale = nanos_per_unit;
    for d in fraction.bytes().take(20) {
        scale /= 10;
        nanos += u128::from(d - b'0') * scale;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

const SIZE_FORM: &str = "write a whole number of bytes, optionally with a unit B, KiB, MiB, GiB (1024-based) or KB, MB, GB \
     (1000-based), e.g. `64KiB`";

/// Parse a byte size: a bare number of bytes, or a whole number with one of the units B, KiB, MiB, GiB (powers of
/// 1024) or KB, MB, GB (powers of 1000). Units are case-insensitive (`16kb` is 16,000 bytes, `16KiB` 16,384). The one
/// parser for the route file and `ringway-load`'s command line.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if digits.is_empty() {
        return Err(UnitError(format!("`{text}` is not a size: {SIZE_FORM}")));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| UnitError(format!("`{text}` is too large for a size")))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ if unit.starts_with('.') => {
            return Err(UnitError(format!(
                "`{text}` is not a size: a size is a whole number of bytes"
            )));
        }
        _ => {
            return Err(UnitError(format!(
                "`{text}` has an unknown unit `{unit}`: {SIZE_FORM}"
            )));
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| UnitError(format!("`{text}` is too large for a size")))
}

/// Parse a whole non-negative number.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a whole number"));
    }
    t.parse()
        .map_err(|_| format!("`{text}` is too large (at most {})", u64::MAX))
}

/// Parse `true` or `false`.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{text}` is not a boolean: write true or false")),
    }
}

/// Format a duration the way the route file writes it (`500ms`, `30s`, `5m`, `1h`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// Format a byte size with the largest binary unit that divides it exactly.
pub fn format_size(n: u64) -> String {
    if n == 0 {
        return "0".to_owned();
    }
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// Any YAML scalar, kept as its text. Numbers and booleans arrive as their source spelling, so
/// `max_headers: 64` and `max_header_bytes: 16KiB` go through the same code path. Lists and
/// mappings are rejected with a message that says a single value was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a single value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, UnitError>) -> String {
        r.expect_err("an error").to_string()
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(" 2 s "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_take_decimals_exactly() {
        // The disagreement between the route file and ringway-load (issue 13): both read `1.5s` now.
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration(".5m"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.25ms"), Ok(Duration::from_micros(1250)));
        assert_eq!(parse_duration("1.0000000009s"), Ok(Duration::new(1, 0)));
    }

    #[test]
    fn durations_reject_missing_or_unknown_units() {
        assert!(err(parse_duration("30")).contains("has no unit"));
        assert!(err(parse_duration("3d")).contains("unknown unit `d`"));
        assert!(err(parse_duration("s")).contains("is not a duration"));
        assert!(err(parse_duration("-1s")).contains("is not a duration"));
        assert!(err(parse_duration("1.2.3s")).contains("is not a duration"));
        assert!(err(parse_duration(".s")).contains("is not a duration"));
        assert!(err(parse_duration("99999999999999999999h")).contains("too large"));
        assert!(err(parse_duration("18446744073709551615h")).contains("too large"));
    }

    #[test]
    fn sizes_binary_and_decimal() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4MB"), Ok(4_000_000));
        assert_eq!(parse_size("3KB"), Ok(3_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("16 kib"), Ok(16_384));
        // The other disagreement: `16kb` is 16,000 bytes everywhere.
        assert_eq!(parse_size("16kb"), Ok(16_000));
    }

    #[test]
    fn sizes_reject_garbage() {
        assert!(err(parse_size("4XB")).contains("unknown unit `XB`"));
        assert!(err(parse_size("MiB")).contains("is not a size"));
        assert!(err(parse_size("1.5MiB")).contains("whole number"));
        assert!(err(parse_size("17179869184GiB")).contains("too large"));
    }

    #[test]
    fn counts_and_bools() {
        assert_eq!(parse_count("64"), Ok(64));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("x").is_err());
        assert!(parse_count("").is_err());
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["500ms", "30s", "5m", "1h", "90s", "1500ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(4_000_000), "4000000B");
        assert_eq!(format_size(16_384), "16KiB");
    }
}

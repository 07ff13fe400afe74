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

/// Parse a duration such as `500ms`, `30s`, `5m` or `1h` (one integer and one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const ALLOWED: &str =
        "write a whole number followed by ms, s, m or h, e.g. `500ms`, `30s`, `5m`, `1h`";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if digits.is_empty() {
        return Err(format!("`{text}` is not a duration: {ALLOWED}"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large for a duration"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "`{text}` has no unit: {ALLOWED} (a bare number is ambiguous)"
            ));
        }
        _ => return Err(format!("`{text}` has an unknown unit `{unit}`: {ALLOWED}")),
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too large for a duration"))
}

/// Parse a byte size: a bare number of bytes, or a number with one of the units B, KiB, MiB,
/// GiB (powers of 1024) or KB, MB, GB (powers of 1000). Units are case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    const ALLOWED: &str = "write a whole number of bytes, optionally with a unit B, KiB, MiB, GiB, KB, MB or GB, e.g. `64KiB`";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if digits.is_empty() {
        return Err(format!("`{text}` is not a size: {ALLOWED}"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large for a size"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("`{text}` has an unknown unit `{unit}`: {ALLOWED}")),
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large for a size"))
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

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 2 s "), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_reject_missing_or_unknown_units() {
        assert!(parse_duration("30").unwrap_err().contains("has no unit"));
        assert!(
            parse_duration("3d")
                .unwrap_err()
                .contains("unknown unit `d`")
        );
        assert!(
            parse_duration("1.5s")
                .unwrap_err()
                .contains("unknown unit `.5s`")
        );
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("is not a duration")
        );
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("is not a duration")
        );
        assert!(
            parse_duration("99999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_duration("18446744073709551615h")
                .unwrap_err()
                .contains("too large")
        );
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
    }

    #[test]
    fn sizes_reject_garbage() {
        assert!(parse_size("4XB").unwrap_err().contains("unknown unit `XB`"));
        assert!(parse_size("MiB").unwrap_err().contains("is not a size"));
        assert!(parse_size("1.5MiB").unwrap_err().contains("unknown unit"));
        assert!(
            parse_size("17179869184GiB")
                .unwrap_err()
                .contains("too large")
        );
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

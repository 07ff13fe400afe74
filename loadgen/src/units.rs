//! Parsing of the human units on the command line: durations (`10s`, `500ms`, `2m`, `1.5s`) and
//! payload size specs (`64`, `16KiB`, `64..4096`). It owns no policy about what values make sense
//! for a run; [`crate::cli`] checks that.

use std::time::Duration;

/// A unit string that could not be parsed; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// Parses a duration such as `10s`, `500ms`, `250us`, `2m`, `1h` or `1.5s`. A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        UnitError(format!(
            "duration `{text}`: expected a number such as 10s or 500ms"
        ))
    })?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(UnitError(format!(
                "duration `{text}`: unknown unit `{other}` (use ns, us, ms, s, m or h)"
            )));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(UnitError(format!("duration `{text}` is out of range")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size such as `64`, `4KiB`, `1MiB`, `2KB` (KB = 1000).
pub fn parse_size(text: &str) -> Result<usize, UnitError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number.parse().map_err(|_| {
        UnitError(format!(
            "size `{text}`: expected a number such as 64 or 16KiB"
        ))
    })?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        other => {
            return Err(UnitError(format!(
                "size `{text}`: unknown unit `{other}` (use B, KiB, MiB, KB or MB)"
            )));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| UnitError(format!("size `{text}` is too large")))
}

/// A payload size: fixed (`64`) or uniform over an inclusive range (`64..4096`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeSpec {
    /// Smallest payload in bytes.
    pub min: usize,
    /// Largest payload in bytes (equal to `min` for a fixed size).
    pub max: usize,
}

impl SizeSpec {
    /// Parses `N` or `MIN..MAX` (inclusive; `..=` is accepted too).
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        match text.split_once("..") {
            None => {
                let size = parse_size(text)?;
                Ok(Self {
                    min: size,
                    max: size,
                })
            }
            Some((lo, hi)) => {
                let hi = hi.strip_prefix('=').unwrap_or(hi);
                let (min, max) = (parse_size(lo)?, parse_size(hi)?);
                if min > max {
                    return Err(UnitError(format!(
                        "size range `{text}`: {min} is above {max}"
                    )));
                }
                Ok(Self { min, max })
            }
        }
    }

    /// Whether every message has the same size.
    pub fn is_fixed(&self) -> bool {
        self.min == self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes_and_ranges_parse() {
        assert_eq!(parse_size("16KiB").unwrap(), 16384);
        assert_eq!(parse_size("2KB").unwrap(), 2000);
        assert_eq!(
            SizeSpec::parse("64").unwrap(),
            SizeSpec { min: 64, max: 64 }
        );
        assert_eq!(
            SizeSpec::parse("64..4096").unwrap(),
            SizeSpec { min: 64, max: 4096 }
        );
        assert_eq!(
            SizeSpec::parse("1KiB..=2KiB").unwrap(),
            SizeSpec {
                min: 1024,
                max: 2048
            }
        );
        assert!(SizeSpec::parse("4096..64").is_err());
        assert!(SizeSpec::parse("12parsecs").is_err());
    }
}

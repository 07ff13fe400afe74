//! The human units on the command line: durations and sizes with the route file's own parser
//! (`ringway_config::units`: one parser, one set of rules), and payload size specs (`64`, `16KiB`,
//! `64..4096`). It owns no policy about what values make sense for a run; [`crate::cli`] checks that.

use std::time::Duration;

pub use ringway_config::units::UnitError;

/// Parses a duration (`10s`, `500ms`, `250us`, `2m`, `1h`, `1.5s`; a unit is required): the route file's parser,
/// so the two never disagree.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    ringway_config::units::parse_duration(text)
}

/// Parses a byte size (`64`, `16KiB`, `1MiB`, `2KB` = 2000, case-insensitive): the route file's parser.
pub fn parse_size(text: &str) -> Result<usize, UnitError> {
    let n = ringway_config::units::parse_size(text)?;
    usize::try_from(n).map_err(|_| size_too_large(text))
}

fn size_too_large(text: &str) -> UnitError {
    UnitError::new(format!("`{text}` is too large for a size on this machine"))
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
                    return Err(UnitError::new(format!(
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
        assert!(
            parse_duration("3").is_err(),
            "a bare number is ambiguous here as in the route file"
        );
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes_and_ranges_parse() {
        assert_eq!(parse_size("16KiB").unwrap(), 16384);
        assert_eq!(parse_size("2KB").unwrap(), 2000);
        assert_eq!(
            parse_size("16kb").unwrap(),
            16_000,
            "the same rule as the route file"
        );
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

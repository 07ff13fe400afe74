//! Errors of the route file and where they point: [`ConfigError`] and the YAML position index
//! that maps a line/column to a YAML path (`routes[1].upstream`) and back.
//!
//! The YAML library reports positions but not paths; the conversion into validated types knows
//! paths but not positions. [`PathIndex`] is built from the parser's event stream once per file
//! and answers both questions, so every error names file, line, column and path. This module does
//! not decide what is valid.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser};

/// Everything that can go wrong loading a route file. Display is one line:
/// `FILE:LINE:COLUMN: PATH: MESSAGE`.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Io {
        /// The file as given to [`crate::load`].
        file: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The text is not YAML.
    Syntax {
        /// File name used in messages.
        file: String,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What the YAML parser disliked.
        message: String,
    },
    /// The YAML is well-formed but does not describe a valid Ringway configuration: wrong type,
    /// unknown key, bad value, broken reference, or inconsistent settings.
    Invalid {
        /// File name used in messages.
        file: String,
        /// 1-based line of the offending value (or its closest enclosing node).
        line: u64,
        /// 1-based column.
        column: u64,
        /// YAML path such as `routes[1].upstream`; empty for the document root.
        path: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line and column the error points at, if it points into the file.
    pub fn position(&self) -> Option<(u64, u64)> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { line, column, .. }
            | ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
        }
    }

    /// The YAML path of the offending node, for errors about a value.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { file, source } => write!(f, "{file}: cannot read file: {source}"),
            ConfigError::Syntax {
                file,
                line,
                column,
                message,
            } => write!(f, "{file}:{line}:{column}: YAML syntax error: {message}"),
            ConfigError::Invalid {
                file,
                line,
                column,
                path,
                message,
            } => {
                if path.is_empty() {
                    write!(f, "{file}:{line}:{column}: {message}")
                } else {
                    write!(f, "{file}:{line}:{column}: {path}: {message}")
                }
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A problem found while converting raw values, before it is given a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A 1-based (line, column) position.
pub(crate) type Pos = (u64, u64);

/// Positions of every node of one YAML document, by path and in source order.
#[derive(Debug, Default)]
pub(crate) struct PathIndex {
    /// Node starts in event order. Mapping keys are recorded with the path of their mapping,
    /// so an error at a key (unknown or duplicate key) names the mapping that holds it.
    by_pos: Vec<(Pos, String)>,
    /// Position of the value at each path (first occurrence wins).
    by_path: HashMap<String, Pos>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        in_key: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

impl PathIndex {
    /// Build the index, or report the first YAML syntax error as (position, message).
    pub fn build(text: &str) -> Result<PathIndex, (Pos, String)> {
        let mut index = PathIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| {
                let m = e.marker();
                ((m.line() as u64, m.col() as u64 + 1), one_line(&e.info()))
            })?;
            let pos = (span.start.line() as u64, span.start.col() as u64 + 1);
            match event {
                Event::Scalar(value, ..) => {
                    let is_key = matches!(stack.last(), Some(Frame::Map { in_key: true, .. }));
                    if is_key {
                        if let Some(Frame::Map { path, key, .. }) = stack.last_mut() {
                            index.by_pos.push((pos, path.clone()));
                            *key = Some(value.into_owned());
                        }
                        Self::complete(&mut stack);
                    } else {
                        let path = Self::child_path(&stack);
                        index.record(pos, path);
                        Self::complete(&mut stack);
                    }
                }
                Event::Alias(..) => {
                    let path = Self::child_path(&stack);
                    index.record(pos, path);
                    Self::complete(&mut stack);
                }
                Event::MappingStart(..) => {
                    let path = Self::child_path(&stack);
                    index.record(pos, path.clone());
                    stack.push(Frame::Map {
                        path,
                        key: None,
                        in_key: true,
                    });
                }
                Event::SequenceStart(..) => {
                    let path = Self::child_path(&stack);
                    index.record(pos, path.clone());
                    stack.push(Frame::Seq { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    Self::complete(&mut stack);
                }
                _ => {}
            }
        }
        Ok(index)
    }

    fn record(&mut self, pos: Pos, path: String) {
        self.by_path.entry(path.clone()).or_insert(pos);
        self.by_pos.push((pos, path));
    }

    /// Path of the node that starts now, given the enclosing collections.
    fn child_path(stack: &[Frame]) -> String {
        match stack.last() {
            None => String::new(),
            Some(Frame::Seq { path, index }) => format!("{path}[{index}]"),
            Some(Frame::Map {
                path, key, in_key, ..
            }) => {
                // A collection used as a key gets a placeholder name.
                let key = if *in_key {
                    "?"
                } else {
                    key.as_deref().unwrap_or("?")
                };
                join(path, key)
            }
        }
    }

    /// A node finished inside the top frame: advance the sequence index or flip key/value.
    fn complete(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Seq { index, .. }) => *index += 1,
            Some(Frame::Map { in_key, .. }) => *in_key = !*in_key,
            None => {}
        }
    }

    /// The path of the node at (or last starting before) `pos`.
    pub fn path_at(&self, pos: Pos) -> String {
        let mut best: Option<&(Pos, String)> = None;
        for entry in &self.by_pos {
            if entry.0 <= pos && best.is_none_or(|b| entry.0 > b.0) {
                best = Some(entry);
            }
        }
        best.map(|b| b.1.clone()).unwrap_or_default()
    }

    /// The position of the value at `path`, or of its nearest ancestor present in the file.
    pub fn pos_of(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(cut) => p = &p[..cut],
                None => return self.by_path.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}

/// Messages are one line: the gateway prints them as a single log line.
fn one_line(message: &str) -> String {
    message.trim().replace(['\n', '\r'], "; ")
}

/// `parent.key`, or `key` at the root.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Reword the YAML library's messages in the file's vocabulary (keys, lists, values).
pub(crate) fn reword(message: &str) -> String {
    let message = one_line(message);
    let message = message.as_str();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once('`')
    {
        if expected.contains("there are no fields") {
            return format!("unknown key `{name}` (this mapping takes no keys)");
        }
        let allowed = expected
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .replace('`', "");
        return format!("unknown key `{name}` (allowed: {allowed})");
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return format!("missing required key `{}", rest);
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("duplicate key `{key}`: each key may appear once");
    }
    if message.starts_with("multiple YAML documents") {
        return "the file holds more than one YAML document (`---`); a route file is exactly one"
            .to_owned();
    }
    match message {
        "expected string scalar" => "expected a single value, not a list or mapping".to_owned(),
        "expected sequence start" => "expected a list (`- item` lines or `[a, b]`)".to_owned(),
        "expected mapping start" => "expected a mapping (`key: value` lines)".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_maps_positions_to_paths_and_back() {
        let text = "a:\n  - x: 1\n    y: [10, 20]\n  - z\nb: {c: d}\n";
        let index = PathIndex::build(text).unwrap();
        assert_eq!(index.pos_of("a[0].x"), (2, 8));
        assert_eq!(index.pos_of("a[0].y[1]"), (3, 13));
        assert_eq!(index.pos_of("a[1]"), (4, 5));
        assert_eq!(index.pos_of("b.c"), (5, 8));
        // Missing paths fall back to the closest ancestor.
        assert_eq!(index.pos_of("a[0].missing"), (2, 5));
        assert_eq!(index.path_at((3, 13)), "a[0].y[1]");
        // A key position names its mapping.
        assert_eq!(index.path_at((3, 5)), "a[0]");
        assert_eq!(index.path_at((5, 5)), "b");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = PathIndex::build("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.0.0 >= 1, "{err:?}");
        assert!(!err.1.is_empty());
    }

    #[test]
    fn reworded_messages() {
        assert_eq!(
            reword("unknown field `foo`, expected one of `a`, `b`"),
            "unknown key `foo` (allowed: a, b)"
        );
        assert_eq!(
            reword("missing field `name`"),
            "missing required key `name`"
        );
        assert_eq!(
            reword("duplicate mapping key: a, set DuplicateKeyPolicy in Options if acceptable"),
            "duplicate key `a`: each key may appear once"
        );
    }
}

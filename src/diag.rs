//! Problems found in a config file, each pointing at `FILE:LINE:COL`.

use std::fmt;
use std::ops::Range;

/// One thing wrong with a file. `position` is absent where no place in the
/// file applies (an unreadable file, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Collects problems against one source text.
pub struct Diagnostics<'a> {
    file: String,
    text: &'a str,
    problems: Vec<(usize, Problem)>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(file: impl Into<String>, text: &'a str) -> Self {
        Diagnostics {
            file: file.into(),
            text,
            problems: Vec::new(),
        }
    }

    /// Records a problem at the start of `span` (a byte range of the text).
    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let position = line_col(self.text, span.start);
        self.problems.push((
            span.start,
            Problem {
                file: self.file.clone(),
                position: Some(position),
                message: message.into(),
            },
        ));
    }

    /// Records a problem of the whole file.
    pub fn file(&mut self, message: impl Into<String>) {
        self.problems.push((
            0,
            Problem {
                file: self.file.clone(),
                position: None,
                message: message.into(),
            },
        ));
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.text, offset)
    }

    pub fn finish(mut self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            return Ok(());
        }
        self.problems.sort_by_key(|(offset, _)| *offset);
        Err(ConfigError {
            problems: self.problems.into_iter().map(|(_, p)| p).collect(),
        })
    }
}

/// Deserializes `text`, recording every unknown key (at its position) and
/// the first syntax or type error. `None` when the structure could not be read.
pub fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    diag: &mut Diagnostics,
) -> Option<T> {
    let deserializer = match toml::Deserializer::parse(text) {
        Ok(d) => d,
        Err(e) => {
            report_toml_error(diag, &e);
            return None;
        }
    };
    let mut unknown = Vec::new();
    let value: Result<T, _> =
        serde_ignored::deserialize(deserializer, |p| unknown.push(path_segments(&p)));
    for key in &unknown {
        let message = format!("unknown key `{}`", key.join("."));
        match key_span(text, key) {
            Some(span) => diag.at(span, message),
            None => diag.file(message),
        }
    }
    match value {
        Ok(value) => Some(value),
        Err(e) => {
            report_toml_error(diag, &e);
            None
        }
    }
}

fn report_toml_error(diag: &mut Diagnostics, e: &toml::de::Error) {
    let message = e.message().trim().to_owned();
    match e.span() {
        Some(span) => diag.at(span, message),
        None => diag.file(message),
    }
}

fn path_segments(path: &serde_ignored::Path) -> Vec<String> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = path_segments(parent);
            v.push(index.to_string());
            v
        }
        P::Map { parent, key } => {
            let mut v = path_segments(parent);
            // `Spanned<T>` shows up in the path as a private map key.
            if !key.starts_with("$__serde_spanned") {
                v.push(key.clone());
            }
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            path_segments(parent)
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Where the key at `path` (as serde_ignored names it) stands in the file.
pub fn key_span(text: &str, path: &[String]) -> Option<Range<usize>> {
    let document = toml_edit::Document::parse(text.to_owned()).ok()?;
    let mut table = document.as_table();
    let (last, parents) = path.split_last()?;
    let mut parents = parents.iter().peekable();
    while let Some(segment) = parents.next() {
        let item = table.get(segment)?;
        table = match item {
            toml_edit::Item::Table(t) => t,
            toml_edit::Item::ArrayOfTables(array) => {
                let index: usize = parents.next()?.parse().ok()?;
                array.get(index)?
            }
            _ => return None,
        };
    }
    table.key(last).and_then(|k| k.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_col(text, text.rfind('=').unwrap()), (2, 4));
    }

    #[test]
    fn finds_keys_in_tables_and_arrays_of_tables() {
        let text = "[server]\nlisten = 1\n\n[[rule]]\npath = 1\n[[rule]]\npaht = 2\n";
        let span = key_span(text, &["rule".into(), "1".into(), "paht".into()]).unwrap();
        assert_eq!(line_col(text, span.start), (7, 1));
        let span = key_span(text, &["server".into(), "listen".into()]).unwrap();
        assert_eq!(line_col(text, span.start), (2, 1));
    }
}

//! Path globs (SPEC §2): `*` within one segment, `**` for any number of whole
//! segments. Parsed once at load; matching allocates nothing and takes time
//! linear in the path for each `**`-free stretch (the classic two-pointer
//! wildcard match, over segments instead of characters).

use std::fmt;

#[derive(Clone)]
pub struct Glob {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(Box<str>),
    /// A segment with `*` in it, split at the stars.
    Wild(Box<[Box<str>]>),
    /// `**`: any number of whole segments, none included.
    Any,
}

impl Glob {
    pub fn parse(source: &str) -> Result<Glob, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(format!("path pattern {source:?} must start with /"));
        };
        let mut segments = Vec::new();
        for piece in rest.split('/') {
            let segment = if piece == "**" {
                if matches!(segments.last(), Some(Segment::Any)) {
                    continue;
                }
                Segment::Any
            } else if piece.contains("**") {
                return Err(format!(
                    "path pattern {source:?}: `**` must be a whole segment, like /a/**/b"
                ));
            } else {
                let piece = super::path::normalize_pattern_segment(piece)
                    .map_err(|e| format!("path pattern {source:?}: {e}"))?;
                if piece.contains('*') {
                    Segment::Wild(piece.split('*').map(Box::from).collect())
                } else {
                    Segment::Literal(piece.into())
                }
            };
            segments.push(segment);
        }
        Ok(Glob {
            source: source.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first segment when it is plain text: only paths whose first
    /// segment is exactly this can match.
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(text)) => Some(text),
            _ => None,
        }
    }

    /// `path` is the normalized path split at `/` after the leading one
    /// (see [`split_path`]).
    pub fn matches(&self, path: &[&str]) -> bool {
        let pattern = &self.segments;
        let (mut p, mut s) = (0, 0);
        // Where to resume after the latest `**`: pattern index after it, path index it took up to.
        let mut resume: Option<(usize, usize)> = None;
        while s < path.len() {
            match pattern.get(p) {
                Some(Segment::Any) => {
                    resume = Some((p + 1, s));
                    p += 1;
                    continue;
                }
                Some(segment) if segment.matches(path[s]) => {
                    p += 1;
                    s += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                Some((after_any, taken)) => {
                    p = after_any;
                    s = taken + 1;
                    resume = Some((after_any, taken + 1));
                }
                None => return false,
            }
        }
        while matches!(pattern.get(p), Some(Segment::Any)) {
            p += 1;
        }
        p == pattern.len()
    }
}

impl Glob {
    /// True when every path `other` matches, `self` matches too: `other`
    /// can never be reached past `self`. Conservative: a `*` inside a
    /// segment covers another wild segment only when it is a bare `*` or
    /// the same pattern, so an answer of `false` may hide a subtle cover,
    /// never the other way round.
    pub fn covers(&self, other: &Glob) -> bool {
        covers(&self.segments, &other.segments)
    }
}

fn covers(a: &[Segment], b: &[Segment]) -> bool {
    match (a.first(), b.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(Segment::Any), _) => covers(&a[1..], b) || (!b.is_empty() && covers(a, &b[1..])),
        (Some(_), None) | (Some(_), Some(Segment::Any)) => false,
        (Some(x), Some(y)) => segment_covers(x, y) && covers(&a[1..], &b[1..]),
    }
}

fn segment_covers(a: &Segment, b: &Segment) -> bool {
    match (a, b) {
        (Segment::Literal(x), Segment::Literal(y)) => x == y,
        (Segment::Wild(_), Segment::Literal(y)) => a.matches(y),
        (Segment::Wild(x), Segment::Wild(y)) => {
            x == y || (x.len() == 2 && x.iter().all(|p| p.is_empty()))
        }
        _ => false,
    }
}

/// Splits a normalized path into the segments [`Glob::matches`] takes;
/// `/` is one empty segment, and a trailing slash adds an empty one.
pub fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

impl Segment {
    fn matches(&self, text: &str) -> bool {
        match self {
            Segment::Literal(l) => **l == *text,
            Segment::Any => true,
            Segment::Wild(parts) => {
                let (first, rest) = parts.split_first().expect("split yields one part at least");
                let Some(mut remaining) = text.strip_prefix(&**first) else {
                    return false;
                };
                let (last, middle) = rest.split_last().expect("a wild segment has a star");
                for part in middle {
                    match remaining.find(&**part) {
                        Some(i) => remaining = &remaining[i + part.len()..],
                        None => return false,
                    }
                }
                remaining.len() >= last.len() && remaining.ends_with(&**last)
            }
        }
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        let segments: Vec<&str> = split_path(path).collect();
        Glob::parse(pattern).unwrap().matches(&segments)
    }

    #[test]
    fn double_star_covers_the_prefix_itself_and_everything_below() {
        for path in ["/admin", "/admin/", "/admin/users", "/admin/a/b/c"] {
            assert!(m("/admin/**", path), "{path}");
        }
        for path in ["/", "/administrator", "/x/admin", "/Admin"] {
            assert!(!m("/admin/**", path), "{path}");
        }
        for path in ["/", "/a", "/a/b/", "/.gateway/login"] {
            assert!(m("/**", path), "{path}");
        }
    }

    #[test]
    fn double_star_in_the_middle() {
        assert!(m("/a/**/z", "/a/z"));
        assert!(m("/a/**/z", "/a/b/c/z"));
        assert!(!m("/a/**/z", "/a/b/c/z/d"));
        assert!(m("/**/z/**", "/q/z/r"));
        assert!(m("/a/**/b/**/c", "/a/x/b/y/b/c"));
    }

    #[test]
    fn single_star_stays_within_a_segment() {
        assert!(m("/files/*", "/files/report.pdf"));
        assert!(m("/files/*", "/files/"));
        assert!(!m("/files/*", "/files/a/b"));
        assert!(!m("/files/*", "/files"));
        assert!(m("/files/*.pdf", "/files/report.pdf"));
        assert!(!m("/files/*.pdf", "/files/report.txt"));
        assert!(m("/v*/api/*-x*", "/v2/api/a-xy"));
        assert!(!m("/a*a", "/a"));
        assert!(m("/a*a", "/aa"));
    }

    #[test]
    fn literals_are_exact_and_case_sensitive() {
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
        assert!(m("/health", "/health"));
        assert!(!m("/health", "/health/"));
        assert!(!m("/health", "/Health"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Glob::parse("admin/**").is_err());
        assert!(Glob::parse("/a**").is_err());
        assert!(Glob::parse("/***").is_err());
    }

    #[test]
    fn long_paths_match_in_reasonable_time() {
        let path = "/a".repeat(20_000) + "/b";
        assert!(m("/**/a/**/a/**/b", &path));
        assert!(!m("/**/a/**/a/**/c", &path));
    }

    #[test]
    fn covering_patterns() {
        let covers = |a: &str, b: &str| Glob::parse(a).unwrap().covers(&Glob::parse(b).unwrap());
        assert!(covers("/**", "/admin/**"));
        assert!(covers("/**", "/"));
        assert!(covers("/admin/**", "/admin/users"));
        assert!(covers("/admin/**", "/admin/**"));
        assert!(covers("/admin/**", "/admin"));
        assert!(covers("/admin/*", "/admin/users"));
        assert!(covers("/admin/*", "/admin/*.pdf"));
        assert!(covers("/*/x", "/a/x"));
        assert!(covers("/a/**/z", "/a/b/**/z"));
        assert!(!covers("/admin/*", "/admin/**"));
        assert!(!covers("/admin/**", "/"));
        assert!(!covers("/admin", "/admin/**"));
        assert!(!covers("/a/*.pdf", "/a/*"));
        assert!(!covers("/api/**", "/apis"));
        assert!(!covers("/a/**/z", "/a/**"));
    }
}

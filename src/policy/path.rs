//! Request path normalization (SPEC §4).
//!
//! The policy judges the normalized path and the upstream receives that same
//! path, so there is no second interpretation for an attacker to aim at.
//! Anything whose meaning differs between servers (`%2F`, `%5C`, `%00`,
//! backslashes, broken escapes, `..` above the root) is refused instead of
//! guessed at.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    #[error("the path contains an encoded backslash (%5C)")]
    EncodedBackslash,
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains an invalid percent-encoding")]
    BadPercentEncoding,
    #[error("the path climbs above the root with ..")]
    EscapesRoot,
    /// `..;x` or `.;x`: servers that cut path parameters first (Tomcat,
    /// Jetty) read these as dot segments; others as names.
    #[error("the path has a dot segment with parameters (like ..;x)")]
    DotSegmentWithParameters,
}

/// Decodes percent-encoded unreserved characters (RFC 3986 §2.3), upper-cases
/// the hex of the escapes it keeps, merges empty segments and resolves `.`
/// and `..`. A trailing slash is kept.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    if raw.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut out = String::with_capacity(raw.len());
    // Where each kept segment starts in `out`, so `..` can drop the last one.
    let mut starts: Vec<usize> = Vec::new();
    let mut segment = String::new();
    let mut trailing_slash = false;
    let mut pieces = rest.split('/').peekable();
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        segment.clear();
        decode_segment(piece, &mut segment)?;
        if matches!(segment.split(';').next(), Some("." | "..")) && segment.contains(';') {
            return Err(PathError::DotSegmentWithParameters);
        }
        match segment.as_str() {
            "" | "." => trailing_slash = last,
            ".." => {
                let start = starts.pop().ok_or(PathError::EscapesRoot)?;
                out.truncate(start);
                trailing_slash = last;
            }
            _ => {
                starts.push(out.len());
                out.push('/');
                out.push_str(&segment);
                trailing_slash = false;
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// The form of a normalized path that some servers treat as the same
/// resource: in each segment, path parameters (`;...`) cut off (Java
/// servlet containers), trailing dots and spaces removed (Windows and IIS),
/// ASCII letters lower-cased (case-insensitive servers), and no trailing
/// slash (Express, Spring up to 5 and many others serve `/a/` as `/a`).
/// `None` when that form is the path itself, which is the common case and
/// costs one scan.
///
/// The policy judges both forms and the stricter decision wins, so none of
/// these spellings reaches a protected path through a rule meant for
/// something else; the upstream still receives the normalized path.
pub fn lenient_alias(path: &str) -> Option<String> {
    if !needs_alias(path) {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for piece in path.strip_prefix('/').unwrap_or(path).split('/') {
        let mut segment = piece.split(';').next().unwrap_or("");
        loop {
            let cut = segment
                .strip_suffix('.')
                .or_else(|| segment.strip_suffix(' '))
                .or_else(|| segment.strip_suffix("%20"));
            match cut {
                Some(shorter) => segment = shorter,
                None => break,
            }
        }
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        // ASCII letters lower-cased, but not the hex digits of escapes.
        let mut escape_digits = 0;
        for c in segment.chars() {
            if escape_digits > 0 {
                escape_digits -= 1;
                out.push(c);
            } else {
                escape_digits = if c == '%' { 2 } else { 0 };
                out.push(c.to_ascii_lowercase());
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    (out != path).then_some(out)
}

fn needs_alias(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.len() > 1 && bytes.ends_with(b"/") {
        return true;
    }
    bytes.iter().enumerate().any(|(i, &b)| {
        let ends_segment = bytes.get(i + 1).is_none_or(|&next| next == b'/');
        b.is_ascii_uppercase()
            || b == b';'
            || ends_segment && (b == b'.' || b == b' ' || b == b'0' && path[..=i].ends_with("%20"))
    })
}

/// One segment of a rule's path pattern, in the form [`normalize`] gives
/// request paths: escapes of unreserved characters decoded, other escapes
/// upper-cased, bytes past ASCII escaped. So `path = "/café/**"` matches
/// what a request for `/café/x` or `/caf%c3%a9/x` is judged as.
pub fn normalize_pattern_segment(piece: &str) -> Result<String, PathError> {
    if piece.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut out = String::with_capacity(piece.len());
    decode_segment(piece, &mut out)?;
    Ok(out)
}

fn decode_segment(piece: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = piece.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b >= 0x80 {
            // Raw UTF-8 (or any byte past ASCII): kept, as its escape, so
            // that `/café` and `/caf%C3%A9` are one path.
            let _ = write!(out, "%{b:02X}");
            i += 1;
            continue;
        }
        if b != b'%' {
            out.push(b as char);
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(PathError::BadPercentEncoding);
        };
        let value = (hi * 16 + lo) as u8;
        match value {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::EncodedBackslash),
            0 => return Err(PathError::EncodedNul),
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                out.push(c as char)
            }
            c => {
                let _ = write!(out, "%{c:02X}");
            }
        }
        i += 3;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
    }

    #[test]
    fn plain_paths_pass_unchanged() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/a%20b", "/x;y=1", "/%C3%A9"] {
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn bytes_past_ascii_are_escaped_like_their_escapes() {
        assert_eq!(ok("/café/ü"), "/caf%C3%A9/%C3%BC");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(normalize_pattern_segment("café").unwrap(), "caf%C3%A9");
        assert_eq!(normalize_pattern_segment("%7euser*").unwrap(), "~user*");
        assert!(normalize_pattern_segment("a%2Fb").is_err());
        assert!(normalize_pattern_segment("a\\b").is_err());
        assert_eq!(lenient_alias("/CAF%C3%A9"), Some("/caf%C3%A9".into()));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/%7euser/%2D%5f"), "/~user/-_");
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/%c3%a9"), "/%C3%A9");
        // No double decoding: %25 stays an escaped percent sign.
        assert_eq!(ok("/%252e%252e/admin"), "/%252e%252e/admin");
    }

    #[test]
    fn slashes_merge_and_dots_resolve() {
        assert_eq!(ok("//admin"), "/admin");
        assert_eq!(ok("/a//b///c"), "/a/b/c");
        assert_eq!(ok("/./admin"), "/admin");
        assert_eq!(ok("/x/../admin"), "/admin");
        assert_eq!(ok("/api/x/../../admin"), "/admin");
        assert_eq!(ok("/x/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/x/%2E/admin"), "/x/admin");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/..."), "/...");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5Cb", PathError::EncodedBackslash),
            ("/a%5cb", PathError::EncodedBackslash),
            ("/a%00", PathError::EncodedNul),
            ("/a\\b", PathError::Backslash),
            ("/a%", PathError::BadPercentEncoding),
            ("/a%4", PathError::BadPercentEncoding),
            ("/a%zz", PathError::BadPercentEncoding),
            ("/..", PathError::EscapesRoot),
            ("/../admin", PathError::EscapesRoot),
            ("/%2e%2e/admin", PathError::EscapesRoot),
            ("/a/../../b", PathError::EscapesRoot),
            ("..%2fadmin", PathError::NotAbsolute),
            ("/..%2fadmin", PathError::EncodedSlash),
            ("/public/..;/admin", PathError::DotSegmentWithParameters),
            ("/public/.;x/admin", PathError::DotSegmentWithParameters),
            ("*", PathError::NotAbsolute),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize(raw), Err(expected), "{raw:?}");
        }
    }

    #[test]
    fn lenient_aliases() {
        assert_eq!(lenient_alias("/admin/users"), None);
        assert_eq!(lenient_alias("/static/app.js"), None);
        assert_eq!(lenient_alias("/ADMIN"), Some("/admin".into()));
        assert_eq!(
            lenient_alias("/admin;jsessionid=1/x"),
            Some("/admin/x".into())
        );
        assert_eq!(lenient_alias("/admin."), Some("/admin".into()));
        assert_eq!(lenient_alias("/admin.. /x"), Some("/admin/x".into()));
        assert_eq!(lenient_alias("/admin%20"), Some("/admin".into()));
        assert_eq!(lenient_alias("/admin%20%20/"), Some("/admin".into()));
        assert_eq!(lenient_alias("/Admin;x./"), Some("/admin".into()));
        assert_eq!(
            lenient_alias("/actuator/env/"),
            Some("/actuator/env".into())
        );
        assert_eq!(lenient_alias("/"), None);
        assert_eq!(lenient_alias("/a/.../b"), Some("/a/b".into()));
        assert_eq!(lenient_alias("/;x"), Some("/".into()));
        assert_eq!(lenient_alias("/file%200"), None);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Raw request paths made of the pieces that matter to normalizing:
        /// slashes, dots, escapes (good, bad, of reserved and unreserved
        /// bytes), parameters, upper case, UTF-8.
        pub fn raw_path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_owned()),
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just(";".to_owned()),
                Just(" ".to_owned()),
                Just("%".to_owned()),
                "%[0-9a-fA-F]{2}",
                "[a-zA-Z0-9_~-]{1,4}",
                Just("é".to_owned()),
                Just("%2e".to_owned()),
                Just("%2F".to_owned()),
            ];
            proptest::collection::vec(piece, 0..16)
                .prop_map(|pieces| format!("/{}", pieces.concat()))
        }

        proptest! {
            #[test]
            fn normalizing_is_idempotent_and_leaves_no_dot_or_empty_segments(raw in raw_path()) {
                if let Ok(normal) = normalize(&raw) {
                    prop_assert_eq!(normalize(&normal), Ok(normal.clone()));
                    prop_assert!(normal.starts_with('/'));
                    prop_assert!(normal.is_ascii(), "{}", normal);
                    let inner = normal.strip_prefix('/').unwrap();
                    let inner = inner.strip_suffix('/').unwrap_or(inner);
                    if !inner.is_empty() {
                        for segment in inner.split('/') {
                            prop_assert!(!matches!(segment, "" | "." | ".."), "{:?} in {}", segment, normal);
                        }
                    }
                }
            }

            #[test]
            fn the_lenient_alias_is_its_own_alias(raw in raw_path()) {
                if let Ok(normal) = normalize(&raw) {
                    if let Some(alias) = lenient_alias(&normal) {
                        prop_assert_eq!(lenient_alias(&alias), None, "alias of {}", normal);
                    }
                }
            }
        }
    }
}

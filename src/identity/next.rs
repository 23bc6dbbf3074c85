//! The `next` parameter (SPEC §3): only a local path is ever followed.

/// Returns `raw` when it is a safe local path, else `/`. Safe: starts with a
/// single `/`, not `//` or `/\`, no scheme or host, no control characters or
/// backslashes; and the same holds once percent-decoded, since some
/// browsers and frameworks decode before they resolve.
pub fn safe_next(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return "/".into();
    };
    if !is_local(raw) || !is_local(&percent_decode(raw)) {
        return "/".into();
    }
    // A Location header is ASCII: escape anything else.
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_local(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && !path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() && c != ' ')
}

/// Decodes every `%XX` once; a `%` without two hex digits stays as it is.
pub fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` if it is an `https://` URL whose host is `domain` or one of its
/// subdomains (forward-auth across hosts); `None` otherwise or without a
/// domain.
pub fn absolute_on_domain<'u>(url: &'u str, domain: Option<&str>) -> Option<&'u str> {
    let domain = domain?;
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") || url.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    let host = uri.host()?.to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    (host == domain || host.ends_with(&format!(".{domain}"))).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_kept() {
        for p in ["/", "/app", "/a/b?c=d&e=%2F", "/x#frag", "/caf%C3%A9"] {
            assert_eq!(safe_next(Some(p)), p);
        }
        assert_eq!(safe_next(Some("/café")), "/caf%C3%A9");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn everything_that_could_leave_the_site_becomes_root() {
        let attacks = [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "http:/evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/\tevil",
            "/\n/evil.example",
            "/%09/evil.example",
            "/%0d%0aSet-Cookie:x=1",
            "/a\r\nLocation: //evil",
            "/\u{0085}x",
            " //evil.example",
        ];
        for a in attacks {
            assert_eq!(safe_next(Some(a)), "/", "{a:?}");
        }
    }
}

//! The request's host, parsed rather than trusted (SPEC §4).
//!
//! Which text names the host: the URI's authority where there is one
//! (HTTP/2's `:authority`, or an absolute-form HTTP/1.1 target, which RFC
//! 9112 §3.2.2 puts before `Host`), else the one `Host` header. What is
//! refused (400): userinfo, anything that is not a name, an IPv4 address or
//! a bracketed IPv6 address with an optional port; no `Host` on HTTP/1.1;
//! several; and on HTTP/2 a `Host` that names another host than
//! `:authority`. What is kept: the name lower-cased and without one
//! trailing dot, and the port. That same text is judged by the policy and
//! sent upstream as `Host`.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Uri, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request names its host more than once")]
    Several,
    #[error("an HTTP/1.1 request needs a Host header")]
    Missing,
    #[error("the request's host is not a valid host name or address")]
    Invalid,
    #[error("the Host header and :authority name different hosts")]
    Disagree,
}

/// A host as judged: `name[:port]` in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    value: HeaderValue,
    name_len: usize,
}

impl Host {
    /// `name[:port]`, for `Host` and `X-Forwarded-Host`.
    pub fn value(&self) -> &HeaderValue {
        &self.value
    }

    /// The name alone (`[::1]` for IPv6), for host rules.
    pub fn name(&self) -> &str {
        let text = self.value.to_str().expect("built from ASCII");
        &text[..self.name_len]
    }

    /// Parses a header's `name[:port]`; when it is already canonical (the
    /// common case) the value is shared, not copied.
    pub fn parse_value(value: &HeaderValue) -> Result<Host, HostError> {
        let text = value.to_str().map_err(|_| HostError::Invalid)?;
        let (name, port) = split_port(text)?;
        if is_canonical_name(name)? && port.is_none_or(|(_, digits)| !digits.starts_with('0')) {
            return Ok(Host {
                value: value.clone(),
                name_len: name.len(),
            });
        }
        Host::parse(value.as_bytes())
    }

    /// Parses `name[:port]` as an authority without userinfo.
    pub fn parse(text: &[u8]) -> Result<Host, HostError> {
        let text = std::str::from_utf8(text).map_err(|_| HostError::Invalid)?;
        let (name, port) = split_port(text)?;
        let mut canonical = if let Some(inner) = name.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::Invalid)?;
            let ip: std::net::Ipv6Addr = inner.parse().map_err(|_| HostError::Invalid)?;
            format!("[{ip}]")
        } else {
            is_canonical_name(name)?;
            let name = name.strip_suffix('.').unwrap_or(name);
            name.to_ascii_lowercase()
        };
        let name_len = canonical.len();
        if let Some((port, _)) = port {
            canonical.push(':');
            canonical.push_str(&port.to_string());
        }
        Ok(Host {
            value: HeaderValue::from_str(&canonical).expect("checked ASCII"),
            name_len,
        })
    }

    /// The host a request names, as the policy must judge it; `None` for
    /// an HTTP/1.0 request (or an HTTP/2 one) that names none.
    pub fn of_request(
        version: Version,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<Host>, HostError> {
        let mut hosts = headers.get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(HostError::Several);
        }
        if let Some(authority) = uri.authority() {
            let host = Host::parse(authority.as_str().as_bytes())?;
            if version == Version::HTTP_2 {
                if let Some(header) = host_header {
                    if Host::parse(header.as_bytes())? != host {
                        return Err(HostError::Disagree);
                    }
                }
            }
            return Ok(Some(host));
        }
        match host_header {
            Some(value) => Host::parse_value(value).map(Some),
            None if version == Version::HTTP_11 => Err(HostError::Missing),
            None => Ok(None),
        }
    }
}

/// Whether `name` (a host name or IPv4 address; an IPv6 one is
/// bracketed) is valid, and if so whether it is already canonical: lower
/// case, no trailing dot. Bracketed names are never taken as canonical.
fn is_canonical_name(name: &str) -> Result<bool, HostError> {
    if name.starts_with('[') {
        return Ok(false);
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let valid = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(HostError::Invalid);
    }
    Ok(trimmed.len() == name.len() && !name.bytes().any(|b| b.is_ascii_uppercase()))
}

/// A port and the digits it was written with.
type Port<'a> = (u16, &'a str);

/// `name:port` -> (`name`, port); IPv6 names are bracketed.
fn split_port(text: &str) -> Result<(&str, Option<Port<'_>>), HostError> {
    if text.contains('@') {
        return Err(HostError::Invalid);
    }
    let colon = match text.rfind(':') {
        Some(i) if !text[i..].contains(']') => Some(i),
        _ => None,
    };
    match colon {
        None => Ok((text, None)),
        Some(i) => {
            let digits = &text[i + 1..];
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(HostError::Invalid);
            }
            let port = digits.parse::<u16>().map_err(|_| HostError::Invalid)?;
            Ok((&text[..i], Some((port, digits))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Result<String, HostError> {
        Host::parse(text.as_bytes()).map(|h| h.value().to_str().unwrap().to_owned())
    }

    #[test]
    fn hosts_are_canonical() {
        assert_eq!(host("Admin.Example."), Ok("admin.example".into()));
        assert_eq!(host("admin.example.:8443"), Ok("admin.example:8443".into()));
        assert_eq!(host("10.0.0.1:80"), Ok("10.0.0.1:80".into()));
        assert_eq!(host("[::1]:8443"), Ok("[::1]:8443".into()));
        assert_eq!(host("[0:0::1]"), Ok("[::1]".into()));
        assert_eq!(Host::parse(b"[::1]:1").unwrap().name(), "[::1]");
        assert_eq!(Host::parse(b"A.b:1").unwrap().name(), "a.b");
        assert_eq!(host("a:080"), Ok("a:80".into()));
        for (text, canonical) in [
            ("a.example:8443", "a.example:8443"),
            ("A.example.", "a.example"),
            ("a:080", "a:80"),
            ("[::1]", "[::1]"),
        ] {
            let value = HeaderValue::from_static(text);
            let parsed = Host::parse_value(&value).unwrap();
            assert_eq!(parsed.value(), canonical);
            assert_eq!(parsed, Host::parse(text.as_bytes()).unwrap());
        }
        assert!(Host::parse_value(&HeaderValue::from_static("a..b")).is_err());
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for bad in [
            "",
            "user@host",
            "a b",
            "host:",
            "host:99999",
            "host:-1",
            "[::1",
            "::1",
            "a..b",
            "a.b..",
            ".",
            "[::1]x",
            "host/path",
            "h\u{e9}te",
            "[zz::1]",
        ] {
            assert_eq!(host(bad), Err(HostError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn the_request_names_its_host_once() {
        let uri: Uri = "/".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            Host::of_request(Version::HTTP_11, &uri, &headers),
            Err(HostError::Missing)
        );
        assert_eq!(Host::of_request(Version::HTTP_10, &uri, &headers), Ok(None));
        headers.append(header::HOST, HeaderValue::from_static("a.example"));
        headers.append(header::HOST, HeaderValue::from_static("b.example"));
        assert_eq!(
            Host::of_request(Version::HTTP_11, &uri, &headers),
            Err(HostError::Several)
        );
        let h2: Uri = "https://a.example:8443/".parse().unwrap();
        let mut one = HeaderMap::new();
        one.insert(header::HOST, HeaderValue::from_static("A.example.:8443"));
        assert!(Host::of_request(Version::HTTP_2, &h2, &one).is_ok());
        one.insert(header::HOST, HeaderValue::from_static("b.example"));
        assert_eq!(
            Host::of_request(Version::HTTP_2, &h2, &one),
            Err(HostError::Disagree)
        );
        // HTTP/1.1 absolute form: the target's authority wins over Host.
        let absolute = Host::of_request(Version::HTTP_11, &h2, &HeaderMap::new()).unwrap();
        assert_eq!(absolute.unwrap().name(), "a.example");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsing_never_panics_and_a_parsed_host_parses_to_itself(text in "[a-zA-Z0-9.:@\\[\\]_ -]{0,40}") {
                if let Ok(host) = Host::parse(text.as_bytes()) {
                    let again = Host::parse(host.value().as_bytes()).unwrap();
                    prop_assert_eq!(&again, &host);
                    prop_assert!(!host.name().ends_with('.'));
                    prop_assert!(!host.name().bytes().any(|b| b.is_ascii_uppercase()));
                }
            }

            #[test]
            fn parsers_of_client_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let _ = Host::parse(&bytes);
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    let mut headers = HeaderMap::new();
                    headers.insert(header::COOKIE, value.clone());
                    headers.insert(header::HOST, value.clone());
                    headers.insert(http::header::HeaderName::from_static("x-forwarded-for"), value.clone());
                    headers.insert(http::header::HeaderName::from_static("forwarded"), value);
                    let _ = crate::identity::cookie_values(&headers, "__Host-authgate").count();
                    let _ = Host::of_request(Version::HTTP_2, &Uri::from_static("/"), &headers);
                    let everyone = crate::forwarded::TrustedProxies::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
                    let _ = everyone.client("10.0.0.1".parse().unwrap(), &HeaderValue::from_static("10.0.0.1"), &headers);
                }
                let text = String::from_utf8_lossy(&bytes);
                let _ = crate::identity::safe_next(Some(&text));
                let _ = crate::policy::path::normalize(&text);
                let _: Vec<_> = form_urlencoded::parse(&bytes).collect();
            }
        }
    }
}

//! `[ldap]`: the directory people may sign in against, and `[users]
//! order` for a name it shares with the users file.

use std::sync::Arc;
use std::time::Duration;

use super::super::raw::{self, Text};
use super::super::{Ldap, LdapGroups, NameOrder};
use super::Validator;

/// Stands in for a name or a DN when a filter template is checked.
const SAMPLE: &str = "sample";

impl Validator<'_> {
    pub(super) fn ldap(
        &mut self,
        raw: Option<toml::Spanned<raw::RawLdap>>,
        order: Option<&Vec<Text>>,
        identity_headers: &[&str],
    ) -> Option<Option<Arc<Ldap>>> {
        let order = self.name_order(order);
        let Some(raw) = raw else {
            return order.map(|_| None);
        };
        let raw = raw.into_inner();
        let url = raw.url.get_ref().clone();
        let start_tls = raw.start_tls.as_ref().is_some_and(|b| *b.get_ref());
        let insecure = raw.insecure.as_ref().is_some_and(|b| *b.get_ref());
        let authority = url
            .strip_prefix("ldaps://")
            .map(|rest| (true, rest))
            .or_else(|| url.strip_prefix("ldap://").map(|rest| (false, rest)));
        let mut ok = true;
        let wants_tls = match authority {
            Some((tls, rest))
                if !rest.is_empty()
                    && !rest.contains(['/', '?', '#', '@', ' '])
                    && rest.parse::<http::uri::Authority>().is_ok() =>
            {
                match (tls, start_tls, insecure) {
                    (true, true, _) => {
                        self.diag.at(raw.url.span(), "an ldaps:// URL is TLS from the first byte; start_tls is for ldap:// URLs");
                        ok = false;
                        true
                    }
                    (true, false, true) | (false, true, true) => {
                        self.diag.at(
                            raw.url.span(),
                            "insecure = true is for plain ldap:// without start_tls",
                        );
                        ok = false;
                        true
                    }
                    (false, false, false) => {
                        self.diag.at(raw.url.span(), "plain ldap:// sends passwords in the clear: use ldaps://, or start_tls = true; insecure = true allows it on a network you trust");
                        ok = false;
                        false
                    }
                    (tls, start_tls, _) => tls || start_tls,
                }
            }
            _ => {
                self.diag.at(
                    raw.url.span(),
                    format!(
                        "url must be ldaps://HOST[:PORT] or ldap://HOST[:PORT] (found {url:?})"
                    ),
                );
                ok = false;
                true
            }
        };
        let tls = if wants_tls {
            self.roots(&raw.ca, raw.url.span()).map(Some)
        } else {
            if let Some(ca) = &raw.ca {
                self.diag
                    .at(ca.span(), "ca is for ldaps:// or start_tls = true");
                ok = false;
            }
            Some(None)
        };
        let bind = match (&raw.bind_dn, &raw.bind_password_file) {
            (None, None) => Some(None),
            (Some(dn), Some(file)) if self.dn(dn) => self
                .secret_file(file, "the search account's password")
                .map(|secret| secret.map(|s| (dn.get_ref().clone(), s))),
            (Some(_), Some(_)) => None,
            (Some(dn), None) => {
                self.diag.at(dn.span(), "bind_dn needs bind_password_file");
                None
            }
            (None, Some(file)) => {
                self.diag.at(
                    file.span(),
                    "bind_password_file is the password of bind_dn; set bind_dn too",
                );
                None
            }
        };
        ok &= self.dn(&raw.user_base);
        let active_directory = raw.active_directory.as_ref().is_some_and(|b| *b.get_ref());
        let user_filter = match &raw.user_filter {
            Some(text) => self
                .filter_template(text, &["{username}"])
                .then(|| text.get_ref().clone()),
            None if active_directory => Some(
                "(&(objectClass=user)(|(sAMAccountName={username})(userPrincipalName={username})))"
                    .to_owned(),
            ),
            None => Some("(&(objectClass=person)(uid={username}))".to_owned()),
        };
        let username_attribute = match &raw.username_attribute {
            Some(text) if is_attribute(text.get_ref()) => Some(text.get_ref().clone()),
            Some(text) => {
                self.diag.at(
                    text.span(),
                    format!("{:?} is not an attribute name", text.get_ref()),
                );
                None
            }
            None if active_directory => Some("sAMAccountName".to_owned()),
            None => Some("uid".to_owned()),
        };
        let groups = match (&raw.group_base, &raw.group_filter) {
            (Some(base), filter) => {
                let filter_ok = match filter {
                    Some(f) => self.filter_template(f, &["{dn}", "{username}"]),
                    None => true,
                };
                (self.dn(base) && filter_ok).then(|| LdapGroups::Search {
                    base: base.get_ref().clone(),
                    filter: filter
                        .as_ref()
                        .map_or_else(|| "(member={dn})".to_owned(), |f| f.get_ref().clone()),
                })
            }
            (None, Some(filter)) => {
                self.diag.at(
                    filter.span(),
                    "group_filter searches under group_base; set group_base too (without both, memberOf names the groups)",
                );
                None
            }
            (None, None) => Some(LdapGroups::MemberOf),
        };
        let (role_map, default_roles, roles_ok) = self.role_map(&raw.role_map, &raw.default_roles);
        let role_map = role_map
            .into_iter()
            .map(|(group, roles)| (group.to_lowercase(), roles))
            .collect();
        let (headers, headers_ok) = self.filled_headers(&raw.headers, identity_headers);
        for (_, attribute) in &headers {
            if !is_attribute(attribute) {
                let span = raw.headers.as_ref().map_or(raw.url.span(), |h| h.span());
                self.diag
                    .at(span, format!("{attribute:?} is not an attribute name"));
                ok = false;
            }
        }
        let timeout = self.bounded(
            &raw.timeout,
            "timeout",
            Duration::from_secs(3),
            (Duration::from_millis(100), Duration::from_secs(60)),
        );
        let recheck = self.bounded(
            &raw.recheck,
            "recheck",
            Duration::from_secs(300),
            (Duration::from_secs(1), Duration::from_secs(24 * 3600)),
        );
        let connections = match &raw.connections {
            None => Some(4),
            Some(n) if (1..=64).contains(n.get_ref()) => Some(*n.get_ref() as usize),
            Some(n) => {
                self.diag
                    .at(n.span(), "connections must be between 1 and 64");
                None
            }
        };
        if !(ok && roles_ok && headers_ok) {
            return None;
        }
        Some(Some(Arc::new(Ldap {
            url,
            start_tls,
            tls: tls?,
            bind: bind?,
            user_base: raw.user_base.into_inner(),
            user_filter: user_filter?,
            username_attribute: username_attribute?,
            active_directory,
            groups: groups?,
            role_map,
            default_roles,
            headers,
            timeout: timeout?,
            recheck: recheck?,
            connections: connections?,
            order: order?,
        })))
    }

    /// `[users] order`: `None` when it is wrong.
    fn name_order(&mut self, order: Option<&Vec<Text>>) -> Option<Option<NameOrder>> {
        let Some(list) = order else {
            return Some(None);
        };
        let words: Vec<&str> = list.iter().map(|w| w.get_ref().as_str()).collect();
        match words.as_slice() {
            ["local", "ldap"] => Some(Some(NameOrder::LocalFirst)),
            ["ldap", "local"] => Some(Some(NameOrder::DirectoryFirst)),
            _ => {
                let span = list.first().map_or(0..0, |w| w.span());
                self.diag.at(
                    span,
                    "order is [\"local\", \"ldap\"] or [\"ldap\", \"local\"]: where a name in both signs in",
                );
                None
            }
        }
    }

    /// A DN as the directory would take it (not empty, `attr=value` parts).
    fn dn(&mut self, text: &Text) -> bool {
        let value = text.get_ref();
        let fine = !value.trim().is_empty()
            && value.split(',').all(|part| {
                part.split_once('=')
                    .is_some_and(|(a, _)| is_attribute(a.trim()))
            })
            && !value.chars().any(char::is_control);
        if !fine {
            self.diag.at(
                text.span(),
                format!("{value:?} is not a DN like \"ou=people,dc=example,dc=org\""),
            );
        }
        fine
    }

    /// A search filter with at least one of `holes`, which parses once
    /// they are filled.
    fn filter_template(&mut self, text: &Text, holes: &[&str]) -> bool {
        let value = text.get_ref();
        let mut filled = value.clone();
        for hole in holes {
            filled = filled.replace(hole, SAMPLE);
        }
        let fine = holes.iter().any(|h| value.contains(h)) && ldap3::parse_filter(&filled).is_ok();
        if !fine {
            self.diag.at(
                text.span(),
                format!(
                    "{value:?} is not a search filter with {} where the value goes, like \"(&(objectClass=person)(uid={{username}}))\"",
                    holes.join(" or ")
                ),
            );
        }
        fine
    }

    /// A duration between `range.0` and `range.1`, or `default`.
    fn bounded(
        &mut self,
        text: &Option<Text>,
        key: &str,
        default: Duration,
        range: (Duration, Duration),
    ) -> Option<Duration> {
        let value = self.duration(text, default)?;
        if let Some(text) = text {
            if !(range.0..=range.1).contains(&value) {
                self.diag.at(
                    text.span(),
                    format!(
                        "{key} must be between {} and {}",
                        humantime::format_duration(range.0),
                        humantime::format_duration(range.1)
                    ),
                );
                return None;
            }
        }
        Some(value)
    }
}

/// An LDAP attribute description (RFC 4512 §2.5): a name or an OID.
fn is_attribute(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';')
}

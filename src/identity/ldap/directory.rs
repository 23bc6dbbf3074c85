//! Talking to the directory: two bounded pools of connections (searches,
//! bound as the search account; and binds, which check a person's
//! password and are never used for anything else), every exchange within
//! `timeout`, and what the gateway reads from an entry ([`Person`]).
//!
//! Names typed by people go into filters only escaped (RFC 4515, with
//! `ldap3::ldap_escape`); DNs are only ever the directory's own.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use tokio::sync::Semaphore;

use crate::config::{Ldap as Settings, LdapGroups};
use crate::identity::hold_off::HoldOff;
use crate::metrics::DirectoryStats;

/// `userAccountControl`'s ACCOUNTDISABLE bit (Active Directory).
const ACCOUNT_DISABLED: i64 = 0x2;
/// After a failed exchange, sign-ins are answered "unavailable" at once
/// for this long, rather than each waiting out `timeout`.
const HOLD_OFF: Duration = Duration::from_secs(2);
/// Result codes (RFC 4511 §4.1.9) that say "not these credentials".
const INVALID_CREDENTIALS: u32 = 49;
const UNWILLING_TO_PERFORM: u32 = 53;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const NO_SUCH_OBJECT: u32 = 32;
/// Names looked up in one search when sessions are checked again.
pub const RECHECK_BATCH: usize = 50;

/// The directory could not be asked (down, slow, or refusing the search
/// account). Never "no such user".
#[derive(Debug, Clone, thiserror::Error)]
#[error("the directory cannot be reached: {0}")]
pub struct Down(pub String);

/// Someone the directory knows, as the gateway uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub dn: String,
    /// The `username_attribute`'s value: their name here, whatever they typed.
    pub name: String,
    /// Group DNs.
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Active Directory says the account is disabled.
    pub disabled: bool,
}

/// What a sign-in against the directory found.
#[derive(Debug)]
pub enum Verdict {
    /// No entry matched the name.
    Unknown,
    /// More than one entry matched: refused, whatever the password.
    Ambiguous,
    /// The entry exists, the password did not bind (or was empty).
    WrongPassword,
    /// The password bound, but the account is disabled.
    Disabled,
    Passed(Person),
}

/// What a search found.
struct Found {
    entries: Vec<SearchEntry>,
    /// There were more than its size limit.
    cut: bool,
}

/// A bounded set of open connections.
struct Pool {
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
    /// Bound as the search account when opened.
    service: bool,
}

pub struct Directory {
    pub settings: Arc<Settings>,
    searchers: Pool,
    binders: Pool,
    stats: Arc<DirectoryStats>,
    /// Sign-ins answer "unavailable" without trying for [`HOLD_OFF`]
    /// after a failure.
    down: HoldOff,
}

impl Directory {
    pub fn new(settings: Arc<Settings>, stats: Arc<DirectoryStats>) -> Directory {
        let pool = |service| Pool {
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(settings.connections),
            service,
        };
        Directory {
            searchers: pool(true),
            binders: pool(false),
            settings,
            stats,
            down: HoldOff::new(HOLD_OFF),
        }
    }

    /// Checks `password` for `name`: one search and one bind, whether the
    /// name exists or not (an unknown name binds as a DN that does not
    /// exist, with a random password). An empty password is refused
    /// before anything is sent: an LDAP bind with a DN and no password is
    /// an unauthenticated bind, which some directories let "succeed".
    pub async fn sign_in(&self, name: &str, password: &str) -> Result<Verdict, Down> {
        if password.is_empty() {
            return Ok(Verdict::WrongPassword);
        }
        if self.down.active() {
            return Err(Down("it failed moments ago; trying again shortly".into()));
        }
        let outcome = tokio::time::timeout(self.settings.timeout, self.sign_in_now(name, password))
            .await
            .unwrap_or_else(|_| {
                Err(Down(format!(
                    "no answer within {}",
                    humantime::format_duration(self.settings.timeout)
                )))
            });
        self.note(&outcome);
        outcome
    }

    async fn sign_in_now(&self, name: &str, password: &str) -> Result<Verdict, Down> {
        let filter = fill(&self.settings.user_filter, &[("{username}", name)]);
        let Found { mut entries, cut } = self
            .search(
                &self.settings.user_base,
                Scope::Subtree,
                &filter,
                self.attributes(),
                2,
            )
            .await?;
        let entry = match (entries.len(), cut) {
            (1, false) => entries.pop().expect("one"),
            (n, _) => {
                // The same bind as for a known name, to a DN that is nobody's.
                self.bind(&nobody(&self.settings.user_base), &crate::session::new_id())
                    .await?;
                return Ok(if n == 0 {
                    Verdict::Unknown
                } else {
                    Verdict::Ambiguous
                });
            }
        };
        if !self.bind(&entry.dn, password).await? {
            return Ok(Verdict::WrongPassword);
        }
        let person = self.person(entry).await?;
        Ok(match person {
            Some(p) if p.disabled => Verdict::Disabled,
            Some(p) => Verdict::Passed(p),
            // No name attribute: nobody the gateway can name.
            None => Verdict::Unknown,
        })
    }

    /// The people with these names as the directory has them now (a name
    /// missing from the map is no longer there, or no longer matches the
    /// user filter); one search per [`RECHECK_BATCH`] names.
    pub async fn look_up(&self, names: &[String]) -> Result<HashMap<String, Person>, Down> {
        let outcome = async {
            let mut people = HashMap::new();
            for batch in names.chunks(RECHECK_BATCH) {
                let filter = format!(
                    "(|{})",
                    batch
                        .iter()
                        .map(|n| fill(&self.settings.user_filter, &[("{username}", n)]))
                        .collect::<String>()
                );
                let found = tokio::time::timeout(
                    self.settings.timeout,
                    self.search(
                        &self.settings.user_base,
                        Scope::Subtree,
                        &filter,
                        self.attributes(),
                        0,
                    ),
                )
                .await
                .map_err(|_| Down("a search took longer than timeout".into()))??;
                // Each person's groups at once, as many as the pool has connections.
                let people_found =
                    futures_util::future::join_all(found.entries.into_iter().map(|entry| {
                        tokio::time::timeout(self.settings.timeout, self.person(entry))
                    }))
                    .await;
                for person in people_found {
                    let person = person
                        .map_err(|_| Down("a group search took longer than timeout".into()))??;
                    if let Some(person) = person {
                        people.insert(crate::users::canonical(&person.name).to_string(), person);
                    }
                }
            }
            Ok(people)
        }
        .await;
        self.note(&outcome);
        outcome
    }

    /// One person, by name, without a password (`authgate check --online`).
    pub async fn find(&self, name: &str) -> Result<Option<Person>, Down> {
        Ok(self
            .look_up(&[name.to_owned()])
            .await?
            .remove(&*crate::users::canonical(name)))
    }

    /// Remembers how the last exchange went: the outage metric, one log
    /// line when a streak of failures begins and one when it ends.
    fn note<T>(&self, outcome: &Result<T, Down>) {
        match outcome {
            Ok(_) => {
                self.down.succeeded();
                if self.stats.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(url = %self.settings.url, "the directory answers again");
                }
            }
            Err(Down(why)) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.down.failed();
                if !self.stats.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(url = %self.settings.url, reason = %why, "the directory cannot be reached: its users cannot sign in until it answers (local users and open sessions are not affected)");
                }
            }
        }
    }

    fn attributes(&self) -> Vec<&str> {
        let mut wanted = vec![self.settings.username_attribute.as_str()];
        if self.settings.groups == LdapGroups::MemberOf {
            wanted.push("memberOf");
        }
        if self.settings.active_directory {
            wanted.push("userAccountControl");
        }
        wanted.extend(self.settings.headers.iter().map(|(_, a)| a.as_str()));
        wanted
    }

    /// What the gateway reads from a user's entry (and their groups).
    async fn person(&self, entry: SearchEntry) -> Result<Option<Person>, Down> {
        let settings = &self.settings;
        let Some(name) = first(&entry, &settings.username_attribute).map(str::to_owned) else {
            return Ok(None);
        };
        let groups: Vec<String> = match &settings.groups {
            LdapGroups::MemberOf => values(&entry, "memberOf").map(str::to_owned).collect(),
            LdapGroups::Search { base, filter } => {
                let filter = fill(filter, &[("{dn}", &entry.dn), ("{username}", &name)]);
                self.search(base, Scope::Subtree, &filter, vec!["1.1"], 0)
                    .await?
                    .entries
                    .into_iter()
                    .map(|g| g.dn)
                    .collect()
            }
        };
        let disabled = settings.active_directory
            && first(&entry, "userAccountControl")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .is_some_and(|flags| flags & ACCOUNT_DISABLED != 0);
        let headers = settings
            .headers
            .iter()
            .filter_map(|(header, attribute)| {
                let value = HeaderValue::from_str(first(&entry, attribute)?).ok()?;
                Some((header.clone(), value))
            })
            .collect();
        Ok(Some(Person {
            roles: roles_of(settings, &groups),
            dn: entry.dn,
            name,
            groups,
            headers,
            disabled,
        }))
    }

    /// A search on a pooled connection bound as the search account; at
    /// most `limit` entries (0: the server's limit).
    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attributes: Vec<&str>,
        limit: i32,
    ) -> Result<Found, Down> {
        self.stats.searches.fetch_add(1, Ordering::Relaxed);
        let (mut ldap, permit) = self.take(&self.searchers).await?;
        let answer = ldap
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .search(base, scope, filter, attributes)
            .await;
        let (entries, result) = match answer {
            Ok(ldap3::SearchResult(entries, result)) => (entries, result),
            Err(e) => return Err(Down(e.to_string())),
        };
        let cut = match result.rc {
            0 | NO_SUCH_OBJECT => false,
            SIZE_LIMIT_EXCEEDED if limit > 0 => true,
            rc => {
                return Err(Down(format!(
                    "a search was refused ({rc}: {})",
                    result.text
                )))
            }
        };
        self.give_back(&self.searchers, ldap, permit);
        let entries = entries
            .into_iter()
            .map(|raw| {
                // `construct` panics on an entry it cannot decode.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    SearchEntry::construct(raw)
                }))
                .map_err(|_| Down("the directory sent an entry that could not be read".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Found { entries, cut })
    }

    /// Whether `password` binds as `dn`, on a connection kept for binds.
    async fn bind(&self, dn: &str, password: &str) -> Result<bool, Down> {
        self.stats.binds.fetch_add(1, Ordering::Relaxed);
        let (mut ldap, permit) = self.take(&self.binders).await?;
        let result = ldap
            .simple_bind(dn, password)
            .await
            .map_err(|e| Down(e.to_string()))?;
        let passed = match result.rc {
            0 => true,
            INVALID_CREDENTIALS | UNWILLING_TO_PERFORM => false,
            rc => return Err(Down(format!("a bind was refused ({rc}: {})", result.text))),
        };
        self.give_back(&self.binders, ldap, permit);
        Ok(passed)
    }

    /// A connection of `pool`: an idle one, or a new one while the pool
    /// has room; waits for one otherwise.
    async fn take<'p>(
        &self,
        pool: &'p Pool,
    ) -> Result<(Ldap, tokio::sync::SemaphorePermit<'p>), Down> {
        let permit = pool
            .permits
            .acquire()
            .await
            .expect("the pool is never closed");
        let idle = pool.idle.lock().expect("not poisoned").pop();
        match idle {
            Some(mut ldap) => {
                if ldap.is_closed() {
                    Ok((self.open(pool.service).await?, permit))
                } else {
                    Ok((ldap, permit))
                }
            }
            None => Ok((self.open(pool.service).await?, permit)),
        }
    }

    fn give_back(&self, pool: &Pool, ldap: Ldap, permit: tokio::sync::SemaphorePermit<'_>) {
        pool.idle.lock().expect("not poisoned").push(ldap);
        drop(permit);
    }

    async fn open(&self, service: bool) -> Result<Ldap, Down> {
        let settings = &self.settings;
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(settings.timeout)
            .set_starttls(settings.start_tls);
        if let Some(tls) = &settings.tls {
            conn_settings = conn_settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &settings.url)
            .await
            .map_err(|e| Down(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "a directory connection ended");
            }
        });
        self.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        if let (true, Some((dn, secret))) = (service, &settings.bind) {
            let result = ldap
                .simple_bind(dn, &secret.0)
                .await
                .map_err(|e| Down(e.to_string()))?;
            if result.rc != 0 {
                return Err(Down(format!(
                    "the search account {dn} cannot bind ({}: {})",
                    result.rc, result.text
                )));
            }
        }
        Ok(ldap)
    }
}

/// A filter template with each hole filled by its value, escaped (RFC 4515).
pub fn fill(template: &str, holes: &[(&str, &str)]) -> String {
    let mut filled = template.to_owned();
    for (hole, value) in holes {
        filled = filled.replace(hole, &ldap3::ldap_escape(*value));
    }
    filled
}

/// A DN under `base` that no entry has: unknown names bind here.
fn nobody(base: &str) -> String {
    format!("cn={},{base}", crate::session::new_id())
}

fn values<'e>(entry: &'e SearchEntry, attribute: &'e str) -> impl Iterator<Item = &'e str> {
    entry
        .attrs
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(attribute))
        .flat_map(|(_, v)| v.iter().map(String::as_str))
}

fn first<'e>(entry: &'e SearchEntry, attribute: &'e str) -> Option<&'e str> {
    values(entry, attribute).next()
}

/// `default_roles`, and the roles `role_map` gives for each group, named
/// by its DN or by its name (the value of its first RDN), in any case.
pub fn roles_of(settings: &Settings, groups: &[String]) -> Vec<String> {
    let mut roles = settings.default_roles.clone();
    for group in groups {
        let dn = normalize_dn(group);
        let name = dn
            .split(',')
            .next()
            .and_then(|rdn| rdn.split_once('='))
            .map(|(_, v)| v.to_owned());
        for (wanted, given) in &settings.role_map {
            if Some(wanted) == name.as_ref() || normalize_dn(wanted) == dn {
                for role in given {
                    if !roles.contains(role) {
                        roles.push(role.clone());
                    }
                }
            }
        }
    }
    roles.sort();
    roles
}

/// A DN in lower case without the spaces around `,` and `=`.
fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| match rdn.split_once('=') {
            Some((a, v)) => format!("{}={}", a.trim(), v.trim()),
            None => rdn.trim().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_so_they_never_widen_a_search() {
        let template = "(&(objectClass=person)(uid={username}))";
        assert_eq!(
            fill(template, &[("{username}", "*")]),
            r"(&(objectClass=person)(uid=\2a))"
        );
        assert_eq!(
            fill(template, &[("{username}", "a)(uid=*")]),
            r"(&(objectClass=person)(uid=a\29\28uid=\2a))"
        );
        assert_eq!(
            fill(template, &[("{username}", "back\\slash\0nul")]),
            r"(&(objectClass=person)(uid=back\5cslash\00nul))"
        );
        // Each still parses as the one equality it was.
        for name in ["*", ")(uid=*", "x)(|(uid=*", "\\", "\0", "(", ")"] {
            let filled = fill(template, &[("{username}", name)]);
            assert!(ldap3::parse_filter(&filled).is_ok(), "{filled}");
            assert_eq!(filled.matches("(uid=").count(), 1, "{filled}");
        }
    }

    #[test]
    fn groups_map_to_roles_by_dn_or_name_in_any_case() {
        let settings = Settings {
            url: "ldaps://x".into(),
            start_tls: false,
            tls: None,
            bind: None,
            user_base: "dc=x".into(),
            user_filter: "(uid={username})".into(),
            username_attribute: "uid".into(),
            active_directory: false,
            groups: LdapGroups::MemberOf,
            role_map: vec![
                ("cn=admins,ou=groups,dc=x".into(), vec!["admin".into()]),
                ("staff".into(), vec!["staff".into(), "reader".into()]),
            ],
            default_roles: vec!["member".into()],
            headers: vec![],
            timeout: Duration::from_secs(1),
            recheck: Duration::from_secs(60),
            connections: 1,
            order: None,
        };
        assert_eq!(
            roles_of(&settings, &["CN=Admins, OU=Groups, DC=x".into()]),
            ["admin", "member"]
        );
        assert_eq!(
            roles_of(&settings, &["cn=Staff,ou=elsewhere,dc=x".into()]),
            ["member", "reader", "staff"]
        );
        assert_eq!(roles_of(&settings, &["cn=other,dc=x".into()]), ["member"]);
    }
}

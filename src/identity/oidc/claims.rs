//! From a verified ID token's claims to the person the gateway lets in, by
//! the provider's rules: who they are (`username_claim`), whether they may
//! come in (`allowed_users`, `allowed_domains`, `require_email_verified`),
//! their roles (only what `role_map` maps, plus `default_roles`: a claim
//! is never a role by itself), the headers filled from claims, and whether
//! the sign-in counts as a second factor (`mfa_amr`).

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::OidcProvider;

/// Who came in.
#[derive(Debug)]
pub struct Person {
    pub name: String,
    pub roles: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub subject: String,
    pub sid: Option<String>,
    pub mfa: bool,
}

/// Longest username taken from a provider.
const MAX_NAME: usize = 256;

/// The person the claims describe, or why they may not come in (words for
/// the refusal page).
pub fn person(
    settings: &OidcProvider,
    claims: &Map<String, Value>,
) -> Result<Person, &'static str> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let subject = text("sub").ok_or("The sign-in service did not say who you are (no sub).")?;
    let name = match &settings.username_claim {
        Some(claim) => text(claim),
        None => text("preferred_username").or_else(|| text("email")),
    }
    .ok_or("The sign-in service did not give a username for you.")?;
    if name.len() > MAX_NAME || name.chars().any(char::is_control) || name != name.trim() {
        return Err("The sign-in service gave a name this gateway cannot use.");
    }
    let email = text("email");
    let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
        || claims.get("email_verified").and_then(Value::as_str) == Some("true");
    if settings.require_email_verified && !(email.is_some() && verified) {
        return Err("Your email address is not verified at the sign-in service.");
    }
    if !settings.allowed_users.is_empty()
        && !settings
            .allowed_users
            .contains(&crate::users::canonical(name))
    {
        return Err("You are not one of the people allowed in through this sign-in service.");
    }
    if !settings.allowed_domains.is_empty() {
        let domain = email
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        if !domain.is_some_and(|d| settings.allowed_domains.contains(&d)) {
            return Err("Your email domain is not one allowed in through this sign-in service.");
        }
    }
    let mut roles = settings.default_roles.clone();
    if let Some(claim) = &settings.roles_claim {
        for value in values(claims.get(claim)) {
            if let Some((_, mapped)) = settings.role_map.iter().find(|(v, _)| *v == value) {
                roles.extend(mapped.iter().cloned());
            }
        }
    }
    let headers = settings
        .headers
        .iter()
        .filter_map(|(header, claim)| {
            let value = values(claims.get(claim)).join(",");
            let value = HeaderValue::from_str(&value).ok()?;
            (!value.is_empty()).then(|| (header.clone(), value))
        })
        .collect();
    let mfa = values(claims.get("amr"))
        .iter()
        .any(|amr| settings.mfa_amr.contains(amr));
    Ok(Person {
        name: name.to_owned(),
        roles,
        headers,
        subject: subject.to_owned(),
        sid: text("sid").map(str::to_owned),
        mfa,
    })
}

/// A claim's values as text: a string, a number or a boolean, or an array
/// of them.
fn values(claim: Option<&Value>) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match claim {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

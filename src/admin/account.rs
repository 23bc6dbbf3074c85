//! `/.gateway/account`: a signed-in user's own page. It lists their
//! sessions (browser, address, started, last seen; this one marked), ends
//! any one of them or all but this one, and links the password and
//! second-factor pages. Every change is a CSRF-protected form.

use std::fmt::Write;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::identity::forms::checked_form;
use crate::identity::{rfc3339, Auth, SignedIn};
use crate::pages;
use crate::response::{escape_html, own_response, Body, GatewayError};
use crate::session;
use crate::store::stats::Ended;

pub async fn account(
    auth: &Auth,
    request: crate::body::GatewayRequest,
    host: Option<&HeaderValue>,
    logged_user: &mut Option<Arc<str>>,
) -> Result<Response<Body>, GatewayError> {
    let signed_in = auth
        .require_session(request.headers(), request.method(), "/.gateway/account")
        .await?;
    *logged_user = Some(signed_in.user.name.clone());
    let token = auth.csrf_token(&signed_in.session.key);
    let own = auth
        .store
        .sessions
        .list(Some(&signed_in.user.key))
        .await
        .map_err(|_| GatewayError::StoreUnavailable)?;
    if request.method() != Method::POST {
        return Ok(render(&signed_in, &own, &token));
    }
    let form = checked_form(request, host, &token).await?;
    let current = signed_in.session.key;
    let ending: Vec<session::Key> = match form.get("action") {
        // Only among the user's own sessions: a handle of someone
        // else's session names nothing here.
        "end" => own
            .iter()
            .filter(|s| session::handle(&s.key) == form.get("target"))
            .map(|s| s.key)
            .collect(),
        "end_others" => own
            .iter()
            .filter(|s| s.key != current)
            .map(|s| s.key)
            .collect(),
        _ => return Err(GatewayError::BadForm),
    };
    let mut ended = 0;
    for key in &ending {
        if auth
            .store
            .sessions
            .end(key)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
        {
            ended += 1;
        }
    }
    auth.store.sessions.stats().ended(Ended::Logout, ended);
    crate::security_event!(info, event = "sessions_ended_by_user", user = %signed_in.user.name, sessions_ended = ended, "a user ended sessions of their own");
    let mut response = own_response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "done\n");
    let location = if ending.contains(&current) {
        // This one too: signed out here.
        response
            .headers_mut()
            .insert(header::SET_COOKIE, auth.clear_cookie());
        "/.gateway/login"
    } else {
        "/.gateway/account"
    };
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    Ok(response)
}
fn end_button(token: &str, action: &str, target: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/.gateway/account\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"action\" value=\"{action}\"><input type=\"hidden\" name=\"target\" value=\"{}\">\
<button type=\"submit\" class=\"small\">{label}</button></form>",
        escape_html(token),
        escape_html(target),
    )
}

fn render(signed_in: &SignedIn, own: &[session::SessionInfo], token: &str) -> Response<Body> {
    let mut sessions: Vec<&session::SessionInfo> = own.iter().collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen_ms));
    let mut html = format!(
        "<h1>Your account</h1><p>Signed in as <strong>{}</strong>.</p>\
<p><a href=\"/.gateway/password\">Change your password</a> · <a href=\"/.gateway/totp\">Second factor</a> · \
<a href=\"/.gateway/logout\">Sign out</a></p><h2>Your sessions</h2><table><tr><th>Browser</th><th>Address</th>\
<th>Started</th><th>Last seen</th><th></th></tr>",
        escape_html(&signed_in.user.name)
    );
    for s in &sessions {
        let this = s.key == signed_in.session.key;
        let action = if this {
            "<strong>this one</strong>".to_owned()
        } else {
            end_button(token, "end", &session::handle(&s.key), "End")
        };
        let _ = write!(
            html,
            "<tr><td class=\"ua\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            escape_html(&s.user_agent),
            escape_html(&s.ip.to_string()),
            escape_html(&rfc3339(s.created_ms)),
            escape_html(&rfc3339(s.last_seen_ms)),
        );
    }
    html.push_str("</table>");
    if sessions.len() > 1 {
        html.push_str(&end_button(
            token,
            "end_others",
            "",
            "Sign out everywhere else",
        ));
    }
    let style = "<style>main{max-width:48rem!important}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #e2e5ea;vertical-align:top}\
td.ua{max-width:18rem;overflow-wrap:anywhere}button.small{width:auto;margin:.3rem 0;padding:.3rem .6rem;font-size:.85rem}</style>";
    own_response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        pages::document("Your account", &format!("{style}{html}")),
    )
}

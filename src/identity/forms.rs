//! The small urlencoded forms the gateway's own pages post (sign-in,
//! sign-out, password, admin), read with a size limit; a query's
//! parameters, and the redirect a form's answer often is.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{Auth, MAX_FORM_BYTES};
use crate::response::{own_response, Body, GatewayError};

/// The first value of each field of a small urlencoded form.
pub struct Form {
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// A urlencoded body's fields, in order (a repeated field keeps every
    /// value; [`Form::get`] reads the first).
    pub fn parse(body: &[u8]) -> Form {
        Form {
            fields: form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A form posted to one of the gateway's pages within a session (or a
/// pending sign-in): refused unless it comes from this site and carries
/// `token`. The one place that check is written.
pub async fn checked_form(
    request: crate::body::GatewayRequest,
    host: Option<&http::HeaderValue>,
    token: &str,
) -> Result<Form, GatewayError> {
    if !super::csrf::same_origin(request.headers(), host) {
        return Err(GatewayError::CsrfRejected);
    }
    let form = read_form(request).await?;
    if !super::csrf::matches(token, form.get("csrf")) {
        return Err(GatewayError::CsrfRejected);
    }
    Ok(form)
}

pub async fn read_form(request: crate::body::GatewayRequest) -> Result<Form, GatewayError> {
    read_form_within(request, MAX_FORM_BYTES).await
}

/// A urlencoded form of at most `limit` bytes.
pub async fn read_form_within(
    request: crate::body::GatewayRequest,
    limit: usize,
) -> Result<Form, GatewayError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(GatewayError::BadForm);
    }
    let body: Bytes = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(GatewayError::BodyTooLarge),
        Err(e) if crate::response::caused_by::<crate::body::BodyTimedOut>(&*e) => {
            return Err(GatewayError::BodyTimeout)
        }
        Err(_) => return Err(GatewayError::BadForm),
    };
    Ok(Form::parse(&body))
}

/// What the pages that would change the users file say when it is
/// read-only here.
pub const MANAGED_ELSEWHERE: &str = "Accounts are managed elsewhere: this gateway cannot change its users file. Ask your administrator. Nothing was changed.";

impl Auth {
    /// The `next` a page's query names, made safe.
    pub fn query_next(&self, query: Option<&str>) -> String {
        self.next_of(query_param(query, "next").as_deref())
    }
}

/// The value of one parameter of a URL's query.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// A `303 See Other` to `location` (dropped if it is no header value).
pub fn see_other(location: &str) -> Response<Body> {
    let mut response = own_response(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        "see other\n",
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

pub fn user_agent_of(headers: &http::HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

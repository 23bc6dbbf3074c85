//! The OIDC callback's query: `state`, `code` and `error` are the first
//! value of their name however the query is spelled, the provider's own
//! error words are cut to 300 characters, and on the page that shows them
//! they are text, never markup.
#![no_main]

use authgate::identity::forms::query_param;
use authgate::identity::oidc::provider_error;
use authgate::pages::sign_in::provider_failed;
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

fn markup(page: &str) -> usize {
    page.bytes().filter(|b| matches!(b, b'<' | b'>')).count()
}

fn shown(detail: &str) -> String {
    provider_failed(
        StatusCode::FORBIDDEN,
        "Example ID",
        "The sign-in service did not sign you in.",
        Some(detail),
    )
    .html
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let fields: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter())
        .finish();
    for name in ["state", "code", "error", "error_description"] {
        let first = fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        assert_eq!(
            query_param(Some(query), name).as_deref(),
            first,
            "{name} in {query:?}"
        );
        assert_eq!(
            query_param(Some(&encoded), name).as_deref(),
            first,
            "{name} in {encoded:?}"
        );
    }
    if let Some(detail) = provider_error(Some(query)) {
        assert!(detail.chars().count() <= 300);
        assert_eq!(
            markup(&shown(&detail)),
            markup(&shown("x")),
            "markup from {detail:?}"
        );
    }
});

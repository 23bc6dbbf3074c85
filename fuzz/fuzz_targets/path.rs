//! Path normalization: what it makes is a path it leaves alone (so the
//! path judged and the path forwarded are one), with no dot segments, no
//! empty segments but a trailing one, and no escaped slash or dot; the
//! lenient alias of a path is a normalized path too.
#![no_main]

use authgate::policy::path::{lenient_alias, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalize(raw) else { return };
    assert!(normal.starts_with('/'), "{raw:?} -> {normal:?}");
    assert_eq!(
        normalize(&normal).as_deref(),
        Ok(normal.as_str()),
        "{raw:?}"
    );
    let segments: Vec<&str> = normal[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(*segment != "." && *segment != "..", "{raw:?} -> {normal:?}");
        assert!(
            !segment.is_empty() || i + 1 == segments.len(),
            "{raw:?} -> {normal:?}"
        );
    }
    let lower = normal.to_ascii_lowercase();
    assert!(
        !lower.contains("%2f") && !lower.contains("%2e"),
        "{raw:?} -> {normal:?}"
    );
    if let Some(alias) = lenient_alias(&normal) {
        assert_eq!(normalize(&alias).as_deref(), Ok(alias.as_str()), "{raw:?}");
        assert_ne!(alias, normal);
        assert_eq!(
            lenient_alias(&alias),
            None,
            "{raw:?}: the alias of an alias"
        );
    }
});

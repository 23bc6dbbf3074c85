//! Host and authority: a host that parses is canonical (parsing its own
//! text gives it back), the shortcut for a header already in canonical
//! form agrees with the full parse, and the name never keeps a port,
//! userinfo, upper case or a trailing dot.
#![no_main]

use authgate::policy::host::Host;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = Host::parse(data);
    if let Ok(value) = HeaderValue::from_bytes(data) {
        assert_eq!(
            Host::parse_value(&value),
            parsed,
            "the header shortcut disagrees for {data:?}"
        );
    }
    let Ok(host) = parsed else { return };
    let again = Host::parse(host.value().as_bytes()).expect("a canonical host parses");
    assert_eq!(again, host, "{data:?}");
    let name = host.name();
    assert!(!name.is_empty(), "{data:?}");
    assert!(
        !name.contains('@') && !name.ends_with('.'),
        "{data:?} -> {name:?}"
    );
    assert_eq!(name, name.to_ascii_lowercase(), "{data:?}");
    if !name.starts_with('[') {
        assert!(!name.contains(':'), "{data:?} -> {name:?}");
    }
});

//! The gateway's urlencoded forms: every field is read once, in order,
//! and what is read is what the same fields encode to (no field can hide
//! in another's value); `get` answers the first value of a name.
#![no_main]

use authgate::identity::forms::Form;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let form = Form::parse(data);
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.fields.iter())
        .finish();
    let again = Form::parse(encoded.as_bytes());
    assert_eq!(
        again.fields, form.fields,
        "{data:?} re-encoded as {encoded:?}"
    );
    for (name, _) in &form.fields {
        let first = form.fields.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(form.get(name), first.1.as_str());
    }
    assert!(form.fields.len() <= data.iter().filter(|&&b| b == b'&').count() + 1);
});

//! TOTP codes as typed: a code is accepted only as the code of a step
//! within the drift window, later than the step last used, and then that
//! step is the answer (spaces ignored, nothing else forgiven).
#![no_main]

use authgate::users::totp::{code_at, verify, DRIFT_STEPS, STEP_SECS};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (head, typed) = data.split_at(9);
    let secs = u64::from_le_bytes(head[..8].try_into().unwrap()) % (1 << 40);
    let now = secs / STEP_SECS;
    // The step last used: none, or one near now.
    let after = (head[8] & 0x80 != 0).then(|| (now + u64::from(head[8] & 3)).saturating_sub(2));
    let Ok(typed) = std::str::from_utf8(typed) else {
        return;
    };
    let got = verify(SECRET, typed, secs, after);
    let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    let wanted = (now.saturating_sub(DRIFT_STEPS)..=now + DRIFT_STEPS)
        .filter(|step| after.is_none_or(|last| *step > last))
        .find(|step| code_at(SECRET, step * STEP_SECS).as_deref() == Some(digits.as_str()));
    assert_eq!(got, wanted, "{typed:?} at {secs} after {after:?}");
    // The code of now, spelled with spaces, is the code of now.
    let code = code_at(SECRET, secs).unwrap();
    let spaced = format!(" {} {} ", &code[..3], &code[3..]);
    if after.is_none_or(|last| now > last) {
        assert!(verify(SECRET, &spaced, secs, after).is_some());
    }
});

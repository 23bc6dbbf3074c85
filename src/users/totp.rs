//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): SHA-1,
//! 6 digits, 30-second steps, a code accepted from the step before to the
//! step after (clock drift) and only once per account. What every
//! authenticator app speaks. Also the enrollment's `otpauth://` URI, its QR
//! code as inline SVG, and one-time recovery codes (kept as SHA-256: they
//! carry 80 random bits, so a fast hash is enough).

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Steps either side of now a code may be from.
pub const DRIFT_STEPS: u64 = 1;
pub const DIGITS: u32 = 6;
/// Recovery codes shown at enrollment.
pub const RECOVERY_CODES: usize = 10;

/// A new secret: 160 random bits (RFC 4226 §4 recommends that length), as
/// the base32 text apps take.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    BASE32_NOPAD.encode(&bytes)
}

/// Whether `secret` is base32 text of at least 80 bits.
pub fn valid_secret(secret: &str) -> bool {
    decode(secret).is_some_and(|bytes| bytes.len() >= 10)
}

fn decode(secret: &str) -> Option<Vec<u8>> {
    let cleaned: String = secret
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    BASE32_NOPAD.decode(cleaned.as_bytes()).ok()
}

/// The HOTP value (RFC 4226 §5.3) of `key` at `counter`.
fn hotp(key: &[u8], counter: u64) -> u32 {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    binary % 10u32.pow(DIGITS)
}

/// The code for `secret` in the step holding Unix time `secs`.
pub fn code_at(secret: &str, secs: u64) -> Option<String> {
    let key = decode(secret)?;
    Some(format!(
        "{:0width$}",
        hotp(&key, secs / STEP_SECS),
        width = DIGITS as usize
    ))
}

/// The step `code` is from, if it is the code of `secret` within
/// [`DRIFT_STEPS`] of the step holding `secs`, and later than `after` (the
/// step last accepted for the account: a code works once). Spaces in the
/// code are ignored.
pub fn verify(secret: &str, code: &str, secs: u64, after: Option<u64>) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let key = decode(secret)?;
    let now = secs / STEP_SECS;
    (now.saturating_sub(DRIFT_STEPS)..=now + DRIFT_STEPS)
        .filter(|step| after.is_none_or(|last| *step > last))
        // Compared without an early exit on the first differing digit.
        .find(|step| constant_time_eq(hotp(&key, *step), wanted))
}

fn constant_time_eq(a: u32, b: u32) -> bool {
    (a ^ b) == 0
}

/// The `otpauth://` URI an authenticator app scans (Key Uri Format).
pub fn uri(issuer: &str, account: &str, secret: &str) -> String {
    let label = format!("{}:{}", escape(issuer), escape(account));
    format!(
        "otpauth://totp/{label}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        escape(issuer)
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` as a QR code in an inline `<svg>` (no script, no external asset).
pub fn qr_svg(text: &str) -> String {
    use qrcode::render::svg;
    match qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build()
            // The renderer's XML declaration does not belong inside HTML.
            .split_once("?>")
            .map_or_else(String::new, |(_, svg)| svg.trim().to_owned()),
        Err(_) => String::new(),
    }
}

/// New recovery codes (16 base32 characters in groups of four) and their
/// hashes, as the users file keeps them.
pub fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let mut bytes = [0u8; 10];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .expect("the OS random source works");
        let text = BASE32_NOPAD.encode(&bytes).to_ascii_lowercase();
        let grouped: Vec<&str> = (0..4).map(|i| &text[i * 4..i * 4 + 4]).collect();
        codes.push(grouped.join("-"));
    }
    let hashes = codes.iter().map(|c| recovery_hash(c)).collect();
    (codes, hashes)
}

/// What a recovery code is kept as: `sha256:` and the hex digest of its
/// 16 characters, lower case, without dashes or spaces.
pub fn recovery_hash(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!(
        "sha256:{}",
        crate::hex(&Sha256::digest(normalized.as_bytes()))
    )
}

/// Whether `text` has the form of a recovery code (rather than a TOTP code).
pub fn looks_like_recovery_code(text: &str) -> bool {
    let alnum = text.chars().filter(|c| c.is_ascii_alphanumeric()).count();
    alnum == 16
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ')
}

/// Whether `hash` is how a recovery code is kept.
pub fn valid_recovery_hash(hash: &str) -> bool {
    hash.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 column (the 8-digit values' last 6).
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = BASE32_NOPAD.encode(b"12345678901234567890");
        for (time, expected) in [
            (59, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(code_at(&secret, time).unwrap(), &expected[2..], "at {time}");
        }
    }

    #[test]
    fn drift_of_one_step_and_replay() {
        let secret = new_secret();
        let now = 1_700_000_000;
        let code = code_at(&secret, now).unwrap();
        let step = now / STEP_SECS;
        assert_eq!(verify(&secret, &code, now, None), Some(step));
        assert_eq!(verify(&secret, &code, now + 30, None), Some(step));
        assert_eq!(verify(&secret, &code, now - 30, None), Some(step));
        assert_eq!(verify(&secret, &code, now + 60, None), None);
        // Used once: not again.
        assert_eq!(verify(&secret, &code, now, Some(step)), None);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(verify(&secret, &spaced, now, None), Some(step));
        assert_eq!(verify(&secret, "12345", now, None), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_as_typed() {
        let (codes, hashes) = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        assert!(looks_like_recovery_code(&codes[0]));
        assert_eq!(
            recovery_hash(&codes[0].to_uppercase().replace('-', " ")),
            hashes[0]
        );
        assert!(valid_recovery_hash(&hashes[0]));
    }

    #[test]
    fn the_qr_code_is_an_inline_svg() {
        let svg = qr_svg(&uri("Acme Intranet", "alice", &new_secret()));
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(!svg.contains("<script"));
    }
}

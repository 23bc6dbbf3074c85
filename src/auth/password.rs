//! argon2id password hashes: making them, checking their parameters, and
//! verifying a password off the async threads with bounded concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::TryRngCore;
use tokio::sync::Semaphore;

/// The floor SPEC §2 sets: m=19456 KiB, t=2, p=1 (OWASP's argon2id minimum).
pub const MIN_MEMORY_KIB: u32 = 19_456;
pub const MIN_ITERATIONS: u32 = 2;
pub const MIN_PARALLELISM: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MIN_MEMORY_KIB, MIN_ITERATIONS, MIN_PARALLELISM, None)
        .expect("the floor parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A fresh argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .expect("the OS random source works");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("hashing with valid parameters succeeds")
        .to_string()
}

/// Accepts only argon2id PHC strings at or above the floor parameters.
pub fn check_phc(phc: &str) -> Result<(), String> {
    const WANTED: &str =
        "the password must be an argon2id hash ($argon2id$v=19$m=19456,t=2,p=1$...)";
    let hash = PasswordHash::new(phc).map_err(|_| WANTED.to_owned())?;
    if hash.algorithm.as_str() != "argon2id" || hash.hash.is_none() || hash.salt.is_none() {
        return Err(WANTED.to_owned());
    }
    if hash.version.is_some_and(|v| v != 0x13) {
        return Err("the argon2id hash must be version 19".to_owned());
    }
    let params = Params::try_from(&hash).map_err(|_| WANTED.to_owned())?;
    if params.m_cost() < MIN_MEMORY_KIB
        || params.t_cost() < MIN_ITERATIONS
        || params.p_cost() < MIN_PARALLELISM
    {
        return Err(format!(
            "the argon2id hash is weaker than m={MIN_MEMORY_KIB},t={MIN_ITERATIONS},p={MIN_PARALLELISM}"
        ));
    }
    Ok(())
}

fn verify_blocking(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Why a verification did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Runs argon2 on the blocking pool, a few at a time, so that a flood of
/// logins queues up instead of taking every core from proxied traffic.
pub struct Verifier {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Verified against when the user does not exist, so that the answer
    /// takes as long as for a real user.
    dummy_hash: String,
}

impl Verifier {
    pub fn new(concurrent: usize, max_waiting: usize) -> Verifier {
        let mut throwaway = [0u8; 24];
        rand::rngs::OsRng
            .try_fill_bytes(&mut throwaway)
            .expect("the OS random source works");
        Verifier {
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            dummy_hash: hash_password(&String::from_utf8_lossy(&throwaway)),
        }
    }

    /// One verification per core, at most half the cores.
    pub fn for_this_machine() -> Verifier {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier::new((cores / 2).max(1), 64)
    }

    /// A place on the pool: waits for a permit unless too many already wait.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Busy> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        Ok(permit.expect("the semaphore is never closed"))
    }

    /// Hashes a new password on the same bounded pool as verifications.
    pub async fn hash(&self, password: &str) -> Result<String, Busy> {
        let permit = self.permit().await?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_password(&password)
        })
        .await
        .map_err(|_| Busy)
    }

    /// True when `password` matches `phc`. With `phc` absent (no such user)
    /// the dummy hash is verified and the answer is false, in the same time.
    pub async fn verify(&self, phc: Option<&str>, password: &str) -> Result<bool, Busy> {
        let permit = self.permit().await?;
        let real = phc.is_some();
        let phc = phc.unwrap_or(&self.dummy_hash).to_owned();
        let password = password.to_owned();
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_blocking(&phc, &password)
        })
        .await
        .unwrap_or(false);
        Ok(real && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_meet_the_floor() {
        let long_unicode = "pässwörd-😀-".repeat(8);
        let hash = hash_password(&long_unicode);
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(check_phc(&hash), Ok(()));
        assert!(verify_blocking(&hash, &long_unicode));
        // Not truncated: the last character counts.
        let mut almost = long_unicode.clone();
        almost.pop();
        assert!(!verify_blocking(&hash, &almost));
    }

    #[test]
    fn other_schemes_and_plaintext_are_refused() {
        assert!(check_phc("hunter2").is_err());
        assert!(
            check_phc("$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err()
        );
        assert!(
            check_phc("$argon2id$v=19$m=19456,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_err()
        );
        assert!(
            check_phc("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").is_ok()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_run_a_few_at_a_time_and_a_flood_is_turned_away() {
        let verifier = Arc::new(Verifier::new(1, 2));
        let hash = hash_password("right");
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let verifier = verifier.clone();
                let hash = hash.clone();
                tokio::spawn(async move { verifier.verify(Some(&hash), "right").await })
            })
            .collect();
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(matched) => assert!(matched),
                Err(Busy) => busy += 1,
            }
        }
        assert_eq!(busy, 3, "one running and two waiting; the rest turned away");
        assert_eq!(
            verifier.verify(None, "right").await,
            Ok(false),
            "no user: never a match"
        );
    }
}

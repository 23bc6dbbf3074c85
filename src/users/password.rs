//! argon2id password hashes: making them, checking their parameters, and
//! verifying a password on a small fixed pool of hashing threads.
//!
//! Why a pool of its own rather than tokio's blocking pool: argon2 needs
//! 19 MiB of working memory per hash. Spread over the blocking pool's many
//! threads, a burst of sign-ins leaves that much in the allocator arena of
//! each thread it touched (60 sign-ins took the gateway from 27 MiB to over
//! 200 MiB, for good). Here as many threads as may hash at once each keep
//! one working area while there is work and give it back to the system when
//! the queue has been quiet for [`RELEASE_MEMORY_AFTER`].

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rand::TryRngCore;
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, Semaphore};

/// The floor SPEC §2 sets: m=19456 KiB, t=2, p=1 (OWASP's argon2id minimum).
pub const MIN_MEMORY_KIB: u32 = 19_456;
pub const MIN_ITERATIONS: u32 = 2;
pub const MIN_PARALLELISM: u32 = 1;

/// A hashing thread that has had nothing to do for this long frees its
/// working memory.
pub const RELEASE_MEMORY_AFTER: Duration = Duration::from_secs(1);

/// Working areas are reserved at least this large (in 1 KiB blocks; only
/// the part a hash uses is ever touched). glibc's malloc serves any request
/// of 32 MiB or more (its largest dynamic mmap threshold) with a mapping of
/// its own and unmaps it on free, so a freed area really goes back to the
/// system instead of staying in a thread's arena.
const RESERVE_BLOCKS: usize = 33 * 1024;

/// Called on a hashing thread each time it has freed its working area
/// after a burst (set once, by the binary, to hand the allocator's
/// leftovers back to the system).
static AFTER_BURST: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs after a burst of hashing has ended; the first call wins.
pub fn set_after_burst(hook: fn()) {
    let _ = AFTER_BURST.set(hook);
}

fn floor_params() -> Params {
    Params::new(MIN_MEMORY_KIB, MIN_ITERATIONS, MIN_PARALLELISM, None)
        .expect("the floor parameters are valid")
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    bytes
}

/// argon2id of `password` and `salt` into `out`, in `memory` (grown to fit,
/// and kept for the next call).
fn argon2id_into(
    params: Params,
    version: Version,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        // Free the old area before taking a bigger one.
        *memory = Vec::new();
        let mut area = Vec::with_capacity(blocks.max(RESERVE_BLOCKS));
        area.resize(blocks, Block::default());
        *memory = area;
    }
    Argon2::new(Algorithm::Argon2id, version, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory[..],
    )
}

fn hash_with(password: &str, memory: &mut Vec<Block>) -> String {
    let params = floor_params();
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes make a valid salt");
    let mut raw_salt = [0u8; 16];
    let raw_salt = salt
        .decode_b64(&mut raw_salt)
        .expect("a salt we encoded decodes");
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon2id_into(
            params.clone(),
            Version::V0x13,
            password.as_bytes(),
            raw_salt,
            out,
            memory,
        )
        .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .expect("hashing with valid parameters succeeds");
    phc_string(&params, &salt, output)
}

fn phc_string(params: &Params, salt: &SaltString, output: Output) -> String {
    PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).expect("valid parameters print"),
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// True when `password` matches the PHC string `phc` (argon2id only).
fn verify_with(phc: &str, password: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return false;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if argon2id_into(params, version, password.as_bytes(), salt, &mut out, memory).is_err() {
        return false;
    }
    out.ct_eq(expected.as_bytes()).into()
}

/// A fresh argon2id PHC string for `password`, with a random salt (for the
/// CLI; the gateway hashes on its pool with [`Verifier::hash`]).
pub fn hash_password(password: &str) -> String {
    hash_with(password, &mut Vec::new())
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

/// The cores this process may run on (its CPU affinity; cgroup quotas are
/// not counted).
pub fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The memory (KiB) of the most expensive hash among `hashes`, or of the
/// floor parameters when there is none: what one hashing thread holds.
pub fn strongest_memory_kib<'a>(hashes: impl IntoIterator<Item = &'a str>) -> u32 {
    hashes
        .into_iter()
        .filter_map(|phc| Params::try_from(&PasswordHash::new(phc).ok()?).ok())
        .map(|p| p.m_cost())
        .max()
        .unwrap_or_else(|| floor_params().m_cost())
        .max(floor_params().m_cost())
}

/// What the gateway needs besides its hashing threads' areas (measured:
/// about 10 MiB idle, under 30 MiB at the peak of keep-alive load; see
/// README "Performance").
pub const BASE_MEMORY_BYTES: u64 = 32 << 20;

/// A warning when a memory limit (`limit`, bytes, from the cgroup) cannot
/// hold the base and `threads` areas of `area_kib` each; `None` when it can
/// or there is no limit.
pub fn memory_warning(limit: Option<u64>, threads: usize, area_kib: u32) -> Option<String> {
    let limit = limit?;
    let needed = BASE_MEMORY_BYTES + threads as u64 * u64::from(area_kib) * 1024;
    (limit < needed).then(|| {
        format!(
            "the memory limit ({} MiB) cannot hold the gateway ({} MiB) and {threads} hashing thread(s) of {} MiB each (the strongest password hash's memory): sign-in floods could get it killed; lower [login] hashing_threads or raise the limit to at least {} MiB",
            limit >> 20,
            BASE_MEMORY_BYTES >> 20,
            area_kib.div_ceil(1024),
            needed.div_ceil(1 << 20)
        )
    })
}

/// The memory limit of this process's cgroup, when one is set (cgroup v2's
/// `memory.max`, else v1's `memory.limit_in_bytes`).
pub fn cgroup_memory_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    let limit: u64 = text.trim().parse().ok()?;
    // v1 says "no limit" with a huge number.
    (limit < 1 << 60).then_some(limit)
}

/// The cost of a hash's parameters, for picking the strongest: time grows
/// with memory times passes; lanes break ties.
fn cost(params: &Params) -> (u64, u32) {
    (
        u64::from(params.m_cost()) * u64::from(params.t_cost()),
        params.p_cost(),
    )
}

/// A PHC string that costs what a hash with `params` costs to verify and
/// matches no password: random salt, random output.
fn dummy_hash(params: &Params) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes make a valid salt");
    let output = Output::new(&random_bytes::<32>()).expect("32 bytes are a valid output");
    phc_string(params, &salt, output)
}

/// Why a verification did not happen: the hashing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// One piece of work for a hashing thread, given the thread's working area.
/// It owns its place in the queue (given back when the job is done or
/// dropped, whichever way: a cancelled sign-in cannot keep it) and skips
/// the hashing when whoever asked has gone.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Runs argon2 on a few threads of its own, so that a flood of sign-ins
/// queues up (a bounded queue: past it, [`Busy`]) instead of taking every
/// core from proxied traffic.
pub struct Verifier {
    jobs: Sender<Job>,
    /// Places for jobs running or waiting; a job holds one until it ends.
    places: Arc<Semaphore>,
    /// Verified against when the user does not exist, so that the answer
    /// takes as long as for a real user: it has the strongest parameters
    /// found in the users file.
    dummy_hash: ArcSwap<String>,
}

impl Verifier {
    /// `threads` hashes at once, and at most `max_waiting` more queued.
    pub fn new(threads: usize, max_waiting: usize) -> Verifier {
        let threads = threads.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded();
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("authgate-argon2-{i}"))
                .spawn(move || hashing_thread(queue))
                .expect("a thread can be started");
        }
        Verifier {
            jobs,
            places: Arc::new(Semaphore::new(threads + max_waiting)),
            dummy_hash: ArcSwap::from_pointee(dummy_hash(&floor_params())),
        }
    }

    /// `threads` hashing threads (`[login] hashing_threads`), but no more
    /// than the cores this process may use; 64 may wait.
    pub fn with_threads(threads: usize) -> Verifier {
        Verifier::new(threads.min(usable_cores()), 64)
    }

    /// Makes unknown users cost what the most expensive known one does
    /// (called at start and whenever the users change).
    pub fn match_strongest<'a>(&self, hashes: impl IntoIterator<Item = &'a str>) {
        let strongest = hashes
            .into_iter()
            .filter_map(|phc| Params::try_from(&PasswordHash::new(phc).ok()?).ok())
            .max_by_key(cost)
            .unwrap_or_else(floor_params);
        let current = self.dummy_params();
        if current.m_cost() != strongest.m_cost()
            || current.t_cost() != strongest.t_cost()
            || current.p_cost() != strongest.p_cost()
        {
            self.dummy_hash.store(Arc::new(dummy_hash(&strongest)));
        }
    }

    /// The parameters an unknown user's attempt is verified with.
    pub fn dummy_params(&self) -> Params {
        let dummy = self.dummy_hash.load();
        let hash = PasswordHash::new(&dummy).expect("the dummy hash parses");
        Params::try_from(&hash).expect("the dummy hash has valid parameters")
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let place = self.places.clone().try_acquire_owned().map_err(|_| Busy)?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _place = place;
            // Whoever asked is gone (the client hung up): skip the work.
            if !reply.is_closed() {
                let _ = reply.send(work(memory));
            }
        });
        self.jobs.send(job).map_err(|_| Busy)?;
        answer.await.map_err(|_| Busy)
    }

    /// Hashes a new password on the same bounded pool as verifications.
    pub async fn hash(&self, password: &str) -> Result<String, Busy> {
        let password = password.to_owned();
        self.run(move |memory| hash_with(&password, memory)).await
    }

    /// True when `password` matches `phc`. With `phc` absent (no such user)
    /// the dummy hash is verified and the answer is false, in the same time.
    pub async fn verify(&self, phc: Option<&str>, password: &str) -> Result<bool, Busy> {
        let real = phc.is_some();
        let phc = match phc {
            Some(phc) => phc.to_owned(),
            None => String::clone(&self.dummy_hash.load()),
        };
        let password = password.to_owned();
        let matched = self
            .run(move |memory| verify_with(&phc, &password, memory))
            .await?;
        Ok(real && matched)
    }
}

/// The nice value of the hashing threads: the lowest priority there is,
/// so that a flood of sign-ins takes only the CPU time proxied requests
/// leave over (on a busy core about 1/70 of it) instead of a fair share
/// of it per hashing thread. A hash then takes longer under load; proxied
/// latency does not move (measured by `bench/run.sh`, its point 5).
pub const HASHING_NICE: i32 = 19;

/// Puts the calling thread at [`HASHING_NICE`]. On Linux the nice value
/// is a thread's own (setpriority on the thread ID); elsewhere it would be
/// the whole process's, so nothing is done there.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICE)
    {
        tracing::warn!(error = %e, "cannot lower the hashing threads' priority");
    }
}

/// One hashing thread: takes jobs until the [`Verifier`] is dropped.
fn hashing_thread(queue: Receiver<Job>) {
    lower_own_priority();
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match queue.recv_timeout(RELEASE_MEMORY_AFTER) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if memory.capacity() > 0 {
                    memory = Vec::new();
                    if let Some(hook) = AFTER_BURST.get() {
                        hook();
                    }
                }
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        job(&mut memory);
    }
}

/// A new random password, easy to type: 96 bits as base64url (the demo's
/// users, `init`'s first admin, an admin's password reset).
pub fn random_password() -> String {
    use base64::Engine;
    use rand::TryRngCore;
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sign-in flood must not take CPU from proxied requests at equal
    /// priority: the hashing threads run at the lowest one.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_the_lowest_priority() {
        use rustix::process::getpriority_process;
        use rustix::thread::gettid;
        let verifier = Verifier::new(2, 0);
        let nice = verifier
            .run(|_| getpriority_process(Some(gettid())))
            .await
            .unwrap();
        assert_eq!(nice.unwrap(), HASHING_NICE);
        // Only the hashing threads: the caller's thread is as it was.
        assert_ne!(getpriority_process(Some(gettid())).unwrap(), HASHING_NICE);
    }

    #[test]
    fn hashes_verify_and_meet_the_floor() {
        let long_unicode = "pässwörd-😀-".repeat(8);
        let hash = hash_password(&long_unicode);
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(check_phc(&hash), Ok(()));
        assert!(verify_with(&hash, &long_unicode, &mut Vec::new()));
        // Not truncated: the last character counts.
        let mut almost = long_unicode.clone();
        almost.pop();
        assert!(!verify_with(&hash, &almost, &mut Vec::new()));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher_and_verifier() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("correct horse");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"correct horsE", &parsed)
            .is_err());
        // A stronger hash made elsewhere verifies here, in a reused area.
        let params = Params::new(32 * 1024, 3, 2, None).unwrap();
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_with(&ours, "correct horse", &mut memory));
        assert!(verify_with(&theirs, "battery staple", &mut memory));
        assert!(!verify_with(&theirs, "battery stapler", &mut memory));
        assert!(!verify_with(
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "x",
            &mut memory
        ));
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_verifications_give_their_places_back() {
        let verifier = Arc::new(Verifier::new(1, 4));
        let hash = hash_password("right");
        for _ in 0..200 {
            let verifier = verifier.clone();
            let hash = hash.clone();
            let waiting = tokio::spawn(async move { verifier.verify(Some(&hash), "wrong").await });
            tokio::time::sleep(Duration::from_micros(200)).await;
            waiting.abort();
        }
        // Within a few hashes' time the queue has drained what was cancelled.
        let mut answer = Err(Busy);
        for _ in 0..50 {
            answer = verifier.verify(Some(&hash), "right").await;
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(answer, Ok(true), "the queue stayed wedged");
    }

    #[test]
    fn a_memory_limit_too_small_for_the_hashing_threads_is_named() {
        let floor = floor_params().m_cost();
        assert_eq!(memory_warning(None, 8, floor), None);
        // 32 MiB + 2 x 19 MiB fits in 128 MiB; 8 threads do not.
        assert_eq!(memory_warning(Some(128 << 20), 2, floor), None);
        let said = memory_warning(Some(128 << 20), 8, floor).unwrap();
        assert!(said.contains("8 hashing thread(s) of 19 MiB"), "{said}");
        assert!(said.contains("at least 184 MiB"), "{said}");
        // The strongest hash decides the area.
        let strong = "$argon2id$v=19$m=65536,t=3,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert_eq!(strongest_memory_kib([strong, "not a hash"]), 65536);
        assert_eq!(strongest_memory_kib([]), floor);
    }

    #[test]
    fn unknown_users_cost_what_the_strongest_known_user_costs() {
        let verifier = Verifier::new(1, 1);
        assert_eq!(verifier.dummy_params().m_cost(), MIN_MEMORY_KIB);
        let strong =
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let floor = hash_password("x");
        verifier.match_strongest([floor.as_str(), strong, "not a hash"]);
        let params = verifier.dummy_params();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (65536, 3, 4)
        );
        // The strong user is gone again: back to the floor.
        verifier.match_strongest([floor.as_str()]);
        assert_eq!(verifier.dummy_params().m_cost(), MIN_MEMORY_KIB);
        assert!(
            !verify_with(&verifier.dummy_hash.load(), "", &mut Vec::new()),
            "the dummy hash matches nothing"
        );
    }
}

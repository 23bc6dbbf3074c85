//! The admin page's memory of this process's security events.

use crate::session;

/// How many administrative events the admin page shows.
pub const AUDIT_KEPT: usize = 50;
/// How many per-client sign-in summaries it shows.
pub const SIGN_IN_SUMMARIES_KEPT: usize = 50;
/// The window one summary covers.
const SIGN_IN_SUMMARY_MS: u64 = 60_000;

/// One security event as the admin page shows it: who did what to whom, when.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub event: &'static str,
    pub actor: String,
    pub user: String,
    pub detail: String,
}

/// Failed and throttled sign-ins from one client within a minute, as one
/// line: "N failed/throttled sign-ins from X in the last minute".
#[derive(Debug, Clone)]
pub struct SignInSummary {
    pub client: String,
    /// When the first and the last of them came.
    pub first_ms: u64,
    pub last_ms: u64,
    pub failed: u64,
    pub throttled: u64,
    /// The last username tried (truncated).
    pub last_user: String,
}

impl SignInSummary {
    pub fn text(&self) -> String {
        format!(
            "{} failed and {} throttled sign-ins from {} within a minute (last as {:?})",
            self.failed, self.throttled, self.client, self.last_user
        )
    }
}

/// The admin page's memory of this process's security events. The
/// administrative ones (users, roles, locks, sessions, config) are kept
/// apart from sign-in noise, which anyone can make: sixty anonymous
/// sign-in posts must not push a lock out of the list. Failed and
/// throttled sign-ins are summed per client and minute instead.
#[derive(Default)]
pub struct Audit {
    admin: std::sync::Mutex<std::collections::VecDeque<AuditEntry>>,
    sign_ins: std::sync::Mutex<std::collections::VecDeque<SignInSummary>>,
}

/// What a sign-in refusal was.
#[derive(Debug, Clone, Copy)]
pub enum SignInNoise {
    Failed,
    Throttled,
}

impl Audit {
    /// An administrative event.
    pub fn remember(&self, event: &'static str, actor: &str, user: &str, detail: String) {
        let mut entries = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == AUDIT_KEPT {
            entries.pop_front();
        }
        entries.push_back(AuditEntry {
            at_ms: session::now_ms(),
            event,
            actor: actor.to_owned(),
            user: user.to_owned(),
            detail,
        });
    }

    /// A failed or throttled sign-in from `client`, added to its summary
    /// of the minute.
    pub fn sign_in_refused(&self, client: &str, user: &str, noise: SignInNoise) {
        let now = session::now_ms();
        let mut summaries = self.sign_ins.lock().unwrap_or_else(|e| e.into_inner());
        let current = summaries
            .iter_mut()
            .rev()
            .find(|s| s.client == client && now.saturating_sub(s.first_ms) < SIGN_IN_SUMMARY_MS);
        let summary = match current {
            Some(summary) => summary,
            None => {
                if summaries.len() == SIGN_IN_SUMMARIES_KEPT {
                    summaries.pop_front();
                }
                summaries.push_back(SignInSummary {
                    client: client.to_owned(),
                    first_ms: now,
                    last_ms: now,
                    failed: 0,
                    throttled: 0,
                    last_user: String::new(),
                });
                summaries.back_mut().expect("just pushed")
            }
        };
        summary.last_ms = now;
        user.clone_into(&mut summary.last_user);
        match noise {
            SignInNoise::Failed => summary.failed += 1,
            SignInNoise::Throttled => summary.throttled += 1,
        }
    }

    /// Administrative events, newest first.
    pub fn recent(&self) -> Vec<AuditEntry> {
        let entries = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().rev().cloned().collect()
    }

    /// Sign-in summaries, newest first.
    pub fn sign_in_summaries(&self) -> Vec<SignInSummary> {
        let summaries = self.sign_ins.lock().unwrap_or_else(|e| e.into_inner());
        summaries.iter().rev().cloned().collect()
    }
}

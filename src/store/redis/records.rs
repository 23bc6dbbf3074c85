//! What Redis keeps besides sessions, users and counters: shared secrets,
//! short-lived records (pending sign-ins, secrets being enrolled), the last
//! accepted code step per account.

use super::*;

impl Redis {
    /// The secret `name` every replica shares: the first replica to ask
    /// makes it (SET NX), the others read that one.
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], Unavailable> {
        let key = self.key("secret", name);
        let fresh: [u8; 32] = rand::random();
        let _: Option<String> = self
            .call(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(crate::hex(&fresh))
                    .arg("NX"),
            )
            .await?;
        let kept: Option<String> = self.call(redis::cmd("GET").arg(&key)).await?;
        let bytes = kept
            .as_deref()
            .and_then(|hex| data_encoding::HEXLOWER.decode(hex.as_bytes()).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok());
        match bytes {
            Some(secret) => Ok(secret),
            None => {
                // Damaged or gone (a FLUSHALL between the two calls): make it again.
                self.call::<()>(redis::cmd("SET").arg(&key).arg(crate::hex(&fresh)))
                    .await?;
                Ok(fresh)
            }
        }
    }

    /// Keeps `value` under `kind:id` for `ttl_ms` (a pending sign-in, a
    /// secret being enrolled), for every replica.
    pub async fn put_temporary(
        &self,
        kind: &str,
        id: &str,
        value: &str,
        ttl_ms: u64,
    ) -> Result<(), Unavailable> {
        self.call::<()>(
            redis::cmd("SET")
                .arg(self.key(kind, id))
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.max(1)),
        )
        .await
    }

    /// Keeps an empty `kind:id` for `ttl_ms` unless it exists: true for
    /// the one caller that made it.
    pub async fn claim_temporary(
        &self,
        kind: &str,
        id: &str,
        ttl_ms: u64,
    ) -> Result<bool, Unavailable> {
        let made: Option<String> = self
            .call(
                redis::cmd("SET")
                    .arg(self.key(kind, id))
                    .arg("")
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms.max(1)),
            )
            .await?;
        Ok(made.is_some())
    }

    pub async fn get_temporary(&self, kind: &str, id: &str) -> Result<Option<String>, Unavailable> {
        self.call(redis::cmd("GET").arg(self.key(kind, id))).await
    }

    /// Removes `kind:id`; true for the one caller that removed it.
    /// Removes a temporary record and returns its value, to one caller
    /// (a GET and a DEL in one transaction: any Redis version).
    pub async fn take_temporary(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<String>, Unavailable> {
        let key = self.key(kind, id);
        let mut pipe = redis::pipe();
        pipe.atomic().get(&key).del(&key);
        let (value, removed): (Option<String>, i64) = self.call_all(&pipe).await?;
        Ok(value.filter(|_| removed == 1))
    }

    /// The step of the account's last accepted code.
    pub async fn last_step(&self, user: &str) -> Result<Option<u64>, Unavailable> {
        let last: Option<u64> = self
            .call(redis::cmd("GET").arg(self.key("totp-step", user)))
            .await?;
        Ok(last)
    }

    /// Records `step` as the account's last accepted code step unless an
    /// equal or later one is there: true if this call accepted it.
    pub async fn advance_step(
        &self,
        user: &str,
        step: u64,
        keep_ms: u64,
    ) -> Result<bool, Unavailable> {
        let mut invocation = self.scripts.advance_step.prepare_invoke();
        invocation
            .key(self.key("totp-step", user))
            .arg(step)
            .arg(keep_ms);
        let accepted: i64 = self.run(&invocation).await?;
        Ok(accepted == 1)
    }
}

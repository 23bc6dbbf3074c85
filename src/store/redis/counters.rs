//! The sign-in counters in Redis, shared by every replica: reserved
//! before hashing, refunded when nothing was learnt, cleared by a right
//! password.

use super::*;

impl Redis {
    /// Takes one attempt from each counter (`(key, allowance)`), or none:
    /// `Ok(None)` when taken, `Ok(Some(ms))` when one is used up for that
    /// much longer.
    pub async fn reserve(
        &self,
        counters: &[(String, u32)],
        window: Duration,
    ) -> Result<Option<u64>, Unavailable> {
        let mut invocation = self.scripts.reserve.prepare_invoke();
        invocation.arg(window.as_millis() as u64);
        for (key, allowance) in counters {
            invocation.key(self.key("throttle", key)).arg(*allowance);
        }
        let ttl: i64 = self.run(&invocation).await?;
        Ok((ttl > 0).then_some(ttl as u64))
    }

    /// Gives an attempt back to each counter.
    pub async fn refund(&self, counters: &[String]) -> Result<(), Unavailable> {
        let mut invocation = self.scripts.refund.prepare_invoke();
        for key in counters {
            invocation.key(self.key("throttle", key));
        }
        let _: i64 = self.run(&invocation).await?;
        Ok(())
    }

    /// Forgets an account's failures (after a right password).
    pub async fn clear(&self, counter: &str) -> Result<(), Unavailable> {
        let _: i64 = self
            .call(redis::cmd("DEL").arg(self.key("throttle", counter)))
            .await?;
        Ok(())
    }
}

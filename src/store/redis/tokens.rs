//! API tokens in Redis: one hash of records (field: the token's hash in
//! hex), one of last-use times, and the change counter replicas poll.

use std::collections::HashMap;

use super::*;
use crate::store::local::tokens::Stored;

impl Redis {
    fn tokens_keys(&self) -> (String, String, String) {
        (
            self.key("tokens", "all"),
            self.key("tokens", "used"),
            self.key("changes", "tokens"),
        )
    }

    pub async fn tokens_changes(&self) -> Result<u64, Unavailable> {
        let (_, _, changes) = self.tokens_keys();
        let count: Option<u64> = self.call(redis::cmd("GET").arg(changes)).await?;
        Ok(count.unwrap_or(0))
    }

    /// The change counter and every token, in one atomic read.
    pub async fn tokens_all(&self) -> Result<(u64, Vec<Stored>), Unavailable> {
        let (all, used, changes) = self.tokens_keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(&changes)
            .cmd("HGETALL")
            .arg(&all)
            .cmd("HGETALL")
            .arg(&used);
        let (count, records, uses): (Option<u64>, HashMap<String, String>, HashMap<String, u64>) =
            self.call_all(&pipe).await?;
        let rows = records
            .into_iter()
            .filter_map(|(hex, record)| {
                let hash = crate::unhex(&hex)?.try_into().ok()?;
                let used = uses.get(&hex).copied();
                Some((hash, record, used))
            })
            .collect();
        Ok((count.unwrap_or(0), rows))
    }

    pub async fn token_put(&self, hash: &Key, record: &str) -> Result<(), Unavailable> {
        let (all, _, changes) = self.tokens_keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&all)
            .arg(crate::hex(hash))
            .arg(record)
            .ignore()
            .cmd("INCR")
            .arg(&changes)
            .ignore();
        self.call_all::<()>(&pipe).await
    }

    /// Removes these tokens; how many there were.
    pub async fn token_delete(&self, hashes: &[Key]) -> Result<usize, Unavailable> {
        let (all, used, changes) = self.tokens_keys();
        let hexes: Vec<String> = hashes.iter().map(|h| crate::hex(h)).collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(&all)
            .arg(&hexes)
            .cmd("HDEL")
            .arg(&used)
            .arg(&hexes)
            .ignore()
            .cmd("INCR")
            .arg(&changes)
            .ignore();
        let (removed,): (usize,) = self.call_all(&pipe).await?;
        Ok(removed)
    }

    /// Writes last-use times (each only forward).
    pub async fn tokens_touch(&self, used: &[(Key, u64)]) -> Result<(), Unavailable> {
        let (_, used_key, _) = self.tokens_keys();
        let mut pipe = redis::pipe();
        for (hash, at) in used {
            // HSET then keep the larger: a replica's older note never wins.
            pipe.cmd("EVAL")
                .arg("local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 1")
                .arg(1)
                .arg(&used_key)
                .arg(crate::hex(hash))
                .arg(*at)
                .ignore();
        }
        self.call_all::<()>(&pipe).await
    }
}

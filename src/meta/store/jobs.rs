//! Who runs the background jobs (garbage collection, repair, verifier):
//! one server at a time holds a lease with an expiry in `config`, renewed
//! while it lives and taken over by another once it has lapsed.

use super::sql::params;
use super::{Db, DbResult};

const LEASE_KEY: &str = "jobs_lease";

impl Db {
    /// Takes or renews the jobs lease for `holder` until `until_ms` (Unix
    /// milliseconds) unless another holder's lease runs past `now_ms`.
    /// True when `holder` has it.
    pub fn lease_jobs(&self, holder: &str, now_ms: i64, until_ms: i64) -> DbResult<bool> {
        self.tx(|tx| {
            let current: Option<Vec<u8>> = tx.query_opt(
                "SELECT value FROM config WHERE key=?1",
                params![LEASE_KEY],
                |r| r.get(0),
            )?;
            let held_by_other = current
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok()?.rsplit_once(' '))
                .is_some_and(|(h, until)| {
                    h != holder && until.parse::<i64>().is_ok_and(|u| u > now_ms)
                });
            if held_by_other {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO config(key, value) VALUES(?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                params![LEASE_KEY, format!("{holder} {until_ms}").into_bytes()],
            )?;
            Ok(true)
        })
    }
}

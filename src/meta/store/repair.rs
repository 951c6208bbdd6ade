//! Durability bookkeeping: provider states (active, draining, retired),
//! shard copies found missing or corrupt, repair backoff, scrub reports,
//! and the health of every partition.
//!
//! A shard copy is *healthy* on an active provider heard from within the
//! provider timeout that nobody found bad; *lost* on a provider silent past
//! the repair delay, a draining or retired provider, a provider no longer
//! registered, or when found bad; otherwise (a provider briefly silent) it
//! is neither and is waited for.

use serde::{Deserialize, Serialize};

use super::sql::params;
use super::{unix_now, Db, DbResult};

/// Version 4's additions (run by the `durability` migration).
pub const SCHEMA: &str = r#"
ALTER TABLE providers ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
-- Shard copies found missing or corrupt (by a scrub, a reader, the verifier).
CREATE TABLE IF NOT EXISTS bad_shards(
  sha1 TEXT NOT NULL, provider TEXT NOT NULL, reason TEXT NOT NULL, since INTEGER NOT NULL,
  PRIMARY KEY(sha1, provider));
-- Partitions whose repair failed: not tried again before next_try.
CREATE TABLE IF NOT EXISTS repair_backoff(
  object INTEGER NOT NULL, partition INTEGER NOT NULL, failures INTEGER NOT NULL,
  next_try INTEGER NOT NULL, error TEXT NOT NULL, PRIMARY KEY(object, partition));
-- The last scrub pass each provider reported.
CREATE TABLE IF NOT EXISTS scrub_status(
  provider TEXT PRIMARY KEY, checked INTEGER NOT NULL, bad INTEGER NOT NULL,
  last_pass INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS shards_provider ON shards(provider);
"#;

pub const ACTIVE: &str = "active";
pub const DRAINING: &str = "draining";
pub const RETIRED: &str = "retired";

/// The horizons that classify shard copies (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Horizons {
    /// Heard from since: alive.
    pub alive_since: i64,
    /// Not heard from since: lost.
    pub lost_before: i64,
}

/// Per-copy classification, as SQL over `shards s` joined to `providers p`:
/// each flag 1 or 0 (integers, which both engines sum).
fn copy_flags(h: Horizons) -> String {
    let bad =
        "EXISTS (SELECT 1 FROM bad_shards b WHERE b.sha1 = s.sha1 AND b.provider = s.provider)";
    format!(
        "CASE WHEN p.id IS NULL OR p.state != 'active' OR p.last_seen < {lost} OR {bad}
              THEN 1 ELSE 0 END AS lost,
         CASE WHEN p.id IS NOT NULL AND p.state = 'active' AND p.last_seen >= {alive} AND NOT {bad}
              THEN 1 ELSE 0 END AS healthy,
         CASE WHEN p.id IS NOT NULL AND p.last_seen >= {alive} AND NOT {bad}
              THEN 1 ELSE 0 END AS readable",
        lost = h.lost_before,
        alive = h.alive_since,
    )
}

/// One partition's standing.
#[derive(Debug, Clone)]
pub struct PartitionHealth {
    pub object: i64,
    pub partition: u64,
    pub replicated: bool,
    pub k: usize,
    pub m: usize,
    /// Shard indexes with a healthy copy (replicas: healthy copies).
    pub healthy: usize,
    /// Shard indexes with a copy not lost (replicas: copies not lost).
    pub kept: usize,
    /// Copies that are lost.
    pub lost_copies: usize,
}

impl PartitionHealth {
    /// Shards (or copies) the partition has at full redundancy.
    pub fn full(&self, replicas: usize) -> usize {
        if self.replicated {
            replicas
        } else {
            self.k + self.m
        }
    }

    /// How many more losses it survives, by kept copies (negative: data lost).
    pub fn margin(&self) -> i64 {
        if self.replicated {
            self.kept as i64 - 1
        } else {
            self.kept as i64 - self.k as i64
        }
    }
}

/// A copy of a shard of one partition, and how it stands.
#[derive(Debug, Clone)]
pub struct CopyRow {
    pub index: usize,
    pub sha1: String,
    pub size: u64,
    pub provider: String,
    pub url: String,
    pub lost: bool,
    pub readable: bool,
}

/// A placed copy for the verifier: (rowid, sha1, size, provider, url).
pub type VerifyRow = (i64, String, u64, String, String);

/// What `tfsfs admin provider list` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderReport {
    pub id: String,
    pub url: String,
    pub state: String,
    pub alive: bool,
    pub capacity: u64,
    pub used: u64,
    /// Shard copies the metadata places on it.
    pub shards: u64,
    pub last_seen: u64,
    pub scrub: Option<ScrubRow>,
}

/// A provider's last scrub pass, as reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScrubRow {
    pub checked: u64,
    pub bad: u64,
    /// Unix seconds.
    pub last_pass: u64,
}

/// Partitions by redundancy, and the repair queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthReport {
    pub partitions: u64,
    /// Every shard (replicas: every copy) healthy.
    pub full: u64,
    /// Short of full, more than one loss from data loss.
    pub degraded: u64,
    /// One more loss loses data.
    pub one_from_loss: u64,
    /// Too few shards left to read.
    pub lost: u64,
    /// Partitions with a lost copy, waiting for repair.
    pub repair_queue: u64,
    /// Of those, how many wait out a backoff after a failed repair.
    pub repair_backoff: u64,
    /// Shards (or replica copies) repair stored since the server started
    /// (`GET /api/health` only).
    #[serde(default)]
    pub repaired_shards: u64,
    #[serde(default)]
    pub repaired_bytes: u64,
    /// The last repair round that stored anything: shard bytes stored, and
    /// how long the round took.
    #[serde(default)]
    pub last_round_bytes: u64,
    #[serde(default)]
    pub last_round_ms: u64,
    pub providers: Vec<ProviderReport>,
}

impl Db {
    /// Every partition's health; with `only_lost`, those holding a lost copy.
    pub fn partition_health(&self, h: Horizons, only_lost: bool) -> DbResult<Vec<PartitionHealth>> {
        // With `only_lost`, only partitions with a copy on a provider that
        // is not active or silent past the horizon, or a bad copy (found
        // through the provider and copy indexes, not a scan of `shards`).
        let restrict = if only_lost {
            format!(
                "WHERE (s.object, s.partition) IN (
                   SELECT s2.object, s2.partition FROM providers p2
                   JOIN shards s2 ON s2.provider = p2.id
                   WHERE p2.state != 'active' OR p2.last_seen < {lost}
                   UNION SELECT s3.object, s3.partition FROM bad_shards b
                   JOIN shards s3 ON s3.sha1 = b.sha1 AND s3.provider = b.provider)",
                lost = h.lost_before
            )
        } else {
            String::new()
        };
        let sql = format!(
            "WITH c AS (SELECT s.object, s.partition, s.idx, {flags}
                        FROM shards s LEFT JOIN providers p ON p.id = s.provider {restrict}),
                  i AS (SELECT object, partition, idx, SUM(lost) AS lost, SUM(1 - lost) AS kept,
                               SUM(healthy) AS healthy FROM c GROUP BY object, partition, idx)
             SELECT i.object, i.partition, o.scheme, COALESCE(pt.k, o.k), COALESCE(pt.m, o.m),
                    CAST(SUM(CASE WHEN i.healthy > 0 THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(CASE WHEN i.kept > 0 THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(SUM(i.healthy) AS BIGINT), CAST(SUM(i.kept) AS BIGINT),
                    CAST(SUM(i.lost) AS BIGINT)
             FROM i JOIN objects o ON o.id = i.object
             LEFT JOIN partitions pt ON pt.object = i.object AND pt.idx = i.partition
             GROUP BY i.object, i.partition, o.scheme, pt.k, o.k, pt.m, o.m {having}",
            flags = copy_flags(h),
            having = if only_lost {
                "HAVING SUM(i.lost) > 0"
            } else {
                ""
            },
        );
        self.read(|conn| {
            conn.query_map(&sql, params![], |r| {
                let replicated = r.get::<_, i64>(2)? == 1;
                let (hi, ki, hc, kc): (i64, i64, i64, i64) =
                    (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?);
                Ok(PartitionHealth {
                    object: r.get(0)?,
                    partition: r.get::<_, i64>(1)? as u64,
                    replicated,
                    k: r.get::<_, i64>(3)? as usize,
                    m: r.get::<_, i64>(4)? as usize,
                    healthy: if replicated { hc } else { hi } as usize,
                    kept: if replicated { kc } else { ki } as usize,
                    lost_copies: r.get::<_, i64>(9)? as usize,
                })
            })
        })
    }

    /// Partitions a repair round should take: a lost copy (a replicated one
    /// also when short of `replicas` copies kept), not in backoff; most at
    /// risk first. Copies on unregistered providers (rows `provider remove
    /// --force` did not drop) are not looked for here.
    pub fn repair_candidates(
        &self,
        h: Horizons,
        replicas: usize,
        limit: usize,
    ) -> DbResult<Vec<PartitionHealth>> {
        let backoff: std::collections::HashSet<(i64, u64)> = self
            .read(|conn| {
                conn.query_map(
                    "SELECT object, partition FROM repair_backoff WHERE next_try > ?1",
                    params![unix_now()],
                    |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
                )
            })?
            .into_iter()
            .collect();
        // A copy is lost only on a provider that is not active or silent
        // past the horizon, or when found bad: look no further when none is.
        let any_lost: bool = self.read(|conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM bad_shards) OR EXISTS (
                   SELECT 1 FROM providers p WHERE (p.state != 'active' OR p.last_seen < ?1)
                   AND EXISTS (SELECT 1 FROM shards s WHERE s.provider = p.id))",
                params![h.lost_before],
                |r| r.get(0),
            )
        })?;
        if !any_lost {
            return Ok(Vec::new());
        }
        let mut all: Vec<PartitionHealth> = self
            .partition_health(h, true)?
            .into_iter()
            .filter(|p| p.lost_copies > 0 || (p.replicated && p.kept < replicas))
            .filter(|p| !backoff.contains(&(p.object, p.partition)))
            .collect();
        all.sort_by_key(|p| p.margin());
        all.truncate(limit);
        Ok(all)
    }

    /// The copies of one partition's shards, classified.
    pub fn partition_copies(
        &self,
        h: Horizons,
        object: i64,
        partition: u64,
    ) -> DbResult<(u64, Vec<CopyRow>)> {
        let sql = format!(
            "SELECT s.idx, s.sha1, s.size, s.provider, COALESCE(p.url, ''), {flags}
             FROM shards s LEFT JOIN providers p ON p.id = s.provider
             WHERE s.object=?1 AND s.partition=?2 ORDER BY s.idx",
            flags = copy_flags(h)
        );
        self.read(|conn| {
            let size: Option<i64> = conn.query_opt(
                "SELECT size FROM partitions WHERE object=?1 AND idx=?2",
                params![object, partition as i64],
                |r| r.get(0),
            )?;
            let rows = conn.query_map(&sql, params![object, partition as i64], |r| {
                Ok(CopyRow {
                    index: r.get::<_, i64>(0)? as usize,
                    sha1: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    provider: r.get(3)?,
                    url: r.get(4)?,
                    lost: r.get(5)?,
                    readable: r.get(7)?,
                })
            })?;
            Ok((size.unwrap_or(0) as u64, rows))
        })
    }

    /// Switches one partition's placement in one transaction: adds the new
    /// copies (index, sha1, size, provider) and drops the `dropped` copies
    /// (index, provider), which become doomed unless referenced elsewhere.
    /// False when the object is gone meanwhile (nothing is changed).
    pub fn repair_commit(
        &self,
        object: i64,
        partition: u64,
        added: &[(usize, String, u64, String)],
        dropped: &[(usize, String)],
    ) -> DbResult<bool> {
        self.tx(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM partitions WHERE object=?1 AND idx=?2)",
                params![object, partition as i64],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(false);
            }
            for (idx, sha1, size, provider) in added {
                tx.execute(
                    "INSERT INTO shards(object, partition, idx, sha1, size, provider)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![
                        object,
                        partition as i64,
                        *idx as i64,
                        sha1,
                        *size as i64,
                        provider
                    ],
                )?;
            }
            let mut replaced: Vec<(String, String)> = Vec::new();
            for (idx, provider) in dropped {
                replaced.extend(tx.query_map(
                    "DELETE FROM shards WHERE object=?1 AND partition=?2 AND idx=?3 AND provider=?4
                     RETURNING sha1, provider",
                    params![object, partition as i64, *idx as i64, provider],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?);
            }
            super::trust::doom_copies(tx, &replaced)?;
            for (sha1, provider) in &replaced {
                // A bad copy no object places any more needs no more notice.
                tx.execute(
                    "DELETE FROM bad_shards WHERE sha1=?1 AND provider=?2
                     AND NOT EXISTS (SELECT 1 FROM shards s WHERE s.sha1 = bad_shards.sha1
                                     AND s.provider = bad_shards.provider)",
                    params![sha1, provider],
                )?;
            }
            tx.execute(
                "DELETE FROM repair_backoff WHERE object=?1 AND partition=?2",
                params![object, partition as i64],
            )?;
            Ok(true)
        })
    }

    /// A failed repair: not tried again for a while, longer each time.
    pub fn repair_failed(
        &self,
        object: i64,
        partition: u64,
        error: &str,
        base_secs: u64,
    ) -> DbResult<()> {
        self.tx(|tx| {
            let failures: i64 = tx
                .query_opt(
                    "SELECT failures FROM repair_backoff WHERE object=?1 AND partition=?2",
                    params![object, partition as i64],
                    |r| r.get(0),
                )?
                .unwrap_or(0)
                + 1;
            let wait = repair_backoff_secs(base_secs, failures);
            tx.execute(
                "INSERT INTO repair_backoff(object, partition, failures, next_try, error)
                 VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(object, partition) DO UPDATE SET failures=excluded.failures,
                   next_try=excluded.next_try, error=excluded.error",
                params![object, partition as i64, failures, unix_now() + wait, error],
            )?;
            Ok(())
        })
    }

    /// Records that `provider`'s copy of `sha1` is missing or corrupt.
    pub fn shard_bad(&self, sha1: &str, provider: &str, reason: &str) -> DbResult<bool> {
        let n = self.tx(|c| {
            c.execute(
                "INSERT INTO bad_shards(sha1, provider, reason, since)
                 SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS BIGINT)
                 WHERE EXISTS (SELECT 1 FROM shards WHERE sha1=?1 AND provider=?2)
                 ON CONFLICT DO NOTHING",
                params![sha1, provider, reason, unix_now()],
            )
        })?;
        Ok(n > 0)
    }

    /// Whether an object of namespace `ns` places `sha1` on `provider`.
    pub fn shard_placed_in(&self, ns: super::Ns, sha1: &str, provider: &str) -> DbResult<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM shards s JOIN objects o ON o.id = s.object
                                WHERE s.sha1=?1 AND s.provider=?2 AND o.appid=?3 AND o.uid=?4)",
                params![sha1, provider, ns.appid as i64, ns.uid as i64],
                |r| r.get(0),
            )
        })
    }

    /// Records a provider's finished scrub pass.
    pub fn scrub_report(&self, provider: &str, checked: u64, bad: u64) -> DbResult<()> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO scrub_status(provider, checked, bad, last_pass) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(provider) DO UPDATE SET checked=excluded.checked, bad=excluded.bad,
                   last_pass=excluded.last_pass",
                params![provider, checked as i64, bad as i64, unix_now()],
            )
        })?;
        Ok(())
    }

    /// Up to `limit` placed copies on providers alive since `alive_since`,
    /// after rowid `after` (wrapping to the start): the verifier's next batch
    /// as (rowid, sha1, size, provider, url).
    pub fn verify_batch(
        &self,
        alive_since: i64,
        after: i64,
        limit: usize,
    ) -> DbResult<Vec<VerifyRow>> {
        self.read(|conn| {
            conn.query_map(
                "SELECT s.rowid, s.sha1, s.size, s.provider, p.url FROM shards s
                 JOIN providers p ON p.id = s.provider
                 WHERE s.rowid > ?1 AND p.last_seen >= ?2 ORDER BY s.rowid LIMIT ?3",
                params![after, alive_since, limit as i64],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, i64>(2)? as u64,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                },
            )
        })
    }

    // ---- provider lifecycle ----

    /// Sets a provider's state; false if there is no such provider.
    pub fn provider_set_state(&self, id: &str, state: &str) -> DbResult<bool> {
        Ok(self.tx(|c| {
            c.execute(
                "UPDATE providers SET state=?2 WHERE id=?1",
                params![id, state],
            )
        })? > 0)
    }

    /// Draining providers that no object places anything on become retired;
    /// returns their ids.
    pub fn retire_drained(&self) -> DbResult<Vec<String>> {
        self.tx(|tx| {
            let ids: Vec<String> = tx.query_map(
                "SELECT id FROM providers WHERE state='draining'
                 AND NOT EXISTS (SELECT 1 FROM shards s WHERE s.provider = providers.id)",
                params![],
                |r| r.get(0),
            )?;
            for id in &ids {
                tx.execute(
                    "UPDATE providers SET state='retired' WHERE id=?1",
                    params![id],
                )?;
            }
            Ok(ids)
        })
    }

    /// Shard copies on `provider` that are the only kept copy of their
    /// shard (so removing the provider would lose redundancy or data).
    pub fn unique_on(&self, h: Horizons, provider: &str) -> DbResult<u64> {
        let sql = format!(
            "WITH c AS (SELECT s.object, s.partition, s.idx, s.provider, {flags}
                        FROM shards s LEFT JOIN providers p ON p.id = s.provider)
             SELECT COUNT(*) FROM c WHERE c.provider = ?1 AND NOT EXISTS (
               SELECT 1 FROM c o WHERE o.object = c.object AND o.partition = c.partition
               AND o.idx = c.idx AND o.provider != ?1 AND o.lost = 0)",
            flags = copy_flags(h)
        );
        Ok(
            self.read(|conn| conn.query_row(&sql, params![provider], |r| r.get::<_, i64>(0)))?
                as u64,
        )
    }

    /// Forgets a provider: its key (it cannot heartbeat or enroll again
    /// without a token), its registry row and every placement on it.
    pub fn provider_remove(&self, id: &str) -> DbResult<bool> {
        self.tx(|tx| {
            let n = tx.execute("DELETE FROM providers WHERE id=?1", params![id])?;
            let k = tx.execute("DELETE FROM provider_keys WHERE id=?1", params![id])?;
            tx.execute("DELETE FROM shards WHERE provider=?1", params![id])?;
            tx.execute("DELETE FROM doomed_shards WHERE provider=?1", params![id])?;
            tx.execute("DELETE FROM pending_shards WHERE provider=?1", params![id])?;
            tx.execute("DELETE FROM bad_shards WHERE provider=?1", params![id])?;
            tx.execute("DELETE FROM scrub_status WHERE provider=?1", params![id])?;
            Ok(n + k > 0)
        })
    }

    /// Every provider with its state, placement count and last scrub.
    pub fn provider_reports(&self, alive_since: i64) -> DbResult<Vec<ProviderReport>> {
        self.read(|conn| {
            conn.query_map(
                "SELECT p.id, p.url, p.state, p.last_seen >= ?1, p.capacity, p.used,
                    (SELECT COUNT(*) FROM shards s WHERE s.provider = p.id), p.last_seen,
                    c.checked, c.bad, c.last_pass
             FROM providers p LEFT JOIN scrub_status c ON c.provider = p.id ORDER BY p.id",
                params![alive_since],
                |r| {
                    let scrub = match r.get::<_, Option<i64>>(8)? {
                        Some(checked) => Some(ScrubRow {
                            checked: checked as u64,
                            bad: r.get::<_, i64>(9)? as u64,
                            last_pass: r.get::<_, i64>(10)? as u64,
                        }),
                        None => None,
                    };
                    Ok(ProviderReport {
                        id: r.get(0)?,
                        url: r.get(1)?,
                        state: r.get(2)?,
                        alive: r.get(3)?,
                        capacity: r.get::<_, i64>(4)? as u64,
                        used: r.get::<_, i64>(5)? as u64,
                        shards: r.get::<_, i64>(6)? as u64,
                        last_seen: r.get::<_, i64>(7)? as u64,
                        scrub,
                    })
                },
            )
        })
    }

    /// Partitions by redundancy, the repair queue and every provider.
    pub fn health_report(&self, h: Horizons, replicas: usize) -> DbResult<HealthReport> {
        let parts = self.partition_health(h, false)?;
        let backoff: i64 = self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM repair_backoff WHERE next_try > ?1",
                params![unix_now()],
                |r| r.get(0),
            )
        })?;
        let mut r = HealthReport {
            partitions: parts.len() as u64,
            repair_backoff: backoff as u64,
            providers: self.provider_reports(h.alive_since)?,
            ..Default::default()
        };
        for p in &parts {
            let full = p.full(replicas);
            let floor = if p.replicated { 1 } else { p.k };
            if p.healthy >= full {
                r.full += 1;
            } else if p.healthy < floor {
                r.lost += 1;
            } else if p.healthy == floor {
                r.one_from_loss += 1;
            } else {
                r.degraded += 1;
            }
            if p.lost_copies > 0 || (p.replicated && p.kept < replicas) {
                r.repair_queue += 1;
            }
        }
        Ok(r)
    }
}

/// The wait before repair attempt `failures + 1`: `base_secs` doubling per
/// failure up to an hour, less up to half at random, so partitions that
/// failed together (a provider down) do not all come back at once.
fn repair_backoff_secs(base_secs: u64, failures: i64) -> i64 {
    use rand::Rng;
    let full = (base_secs.max(1) << (failures - 1).clamp(0, 10) as u32).min(3600) as i64;
    full - rand::thread_rng().gen_range(0..=full / 2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repair_backoff_doubles_to_an_hour_with_jitter() {
        let waits: Vec<i64> = (0..200)
            .map(|_| super::repair_backoff_secs(10, 3))
            .collect();
        assert!(waits.iter().all(|w| (20..=40).contains(w)), "{waits:?}");
        assert!(
            waits.iter().collect::<std::collections::HashSet<_>>().len() > 5,
            "jittered"
        );
        assert!((1800..=3600).contains(&super::repair_backoff_secs(10, 30)));
        assert!((1..=1).contains(&super::repair_backoff_secs(0, 1)));
    }
}

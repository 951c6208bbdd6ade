//! Who may store, and what may be deleted: enrolled providers with their
//! keys and join tokens; shards promised to open upload sessions; and shard
//! copies no object references any more, waiting to be deleted.

use super::sql::{params, Conn, Params};
use super::{unix_now, Db, DbError, DbResult};

pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS provider_keys(
  id TEXT PRIMARY KEY, pubkey TEXT NOT NULL,
  last_beat_ms INTEGER NOT NULL DEFAULT 0, enrolled INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens(
  hash TEXT PRIMARY KEY, reusable INTEGER NOT NULL, expires INTEGER NOT NULL);
-- Shard copies an open session may still commit: never deleted meanwhile.
CREATE TABLE IF NOT EXISTS pending_shards(
  session TEXT NOT NULL, sha1 TEXT NOT NULL, provider TEXT NOT NULL,
  expires INTEGER NOT NULL, PRIMARY KEY(session, sha1, provider));
CREATE INDEX IF NOT EXISTS pending_copy ON pending_shards(sha1, provider);
CREATE INDEX IF NOT EXISTS pending_expiry ON pending_shards(expires);
-- Shard copies no object or session references: deleted on their provider
-- when it answers, unless referenced again first.
CREATE TABLE IF NOT EXISTS doomed_shards(
  sha1 TEXT NOT NULL, provider TEXT NOT NULL, since INTEGER NOT NULL,
  PRIMARY KEY(sha1, provider));
CREATE INDEX IF NOT EXISTS shards_copy ON shards(sha1, provider);
"#;

/// A shard copy waiting for deletion.
#[derive(Debug, Clone)]
pub struct DoomedShard {
    pub sha1: String,
    pub provider: String,
    pub url: String,
}

/// Dooms `(sha1, provider)` copies that no object and no open session
/// references; `copies` is a query yielding candidate (sha1, provider) rows.
pub(super) fn doom_unreferenced(tx: &Conn, copies: &str, args: Params) -> DbResult<()> {
    tx.execute(
        &format!(
            "INSERT INTO doomed_shards(sha1, provider, since)
             SELECT c.sha1, c.provider, {now} FROM ({copies}) c
             WHERE NOT EXISTS (SELECT 1 FROM shards s WHERE s.sha1 = c.sha1 AND s.provider = c.provider)
               AND NOT EXISTS (SELECT 1 FROM pending_shards p WHERE p.sha1 = c.sha1 AND p.provider = c.provider
                               AND p.expires >= {now})
             ON CONFLICT DO NOTHING",
            now = unix_now()
        ),
        args,
    )?;
    Ok(())
}

/// Dooms each of `copies` (sha1, provider) that nothing references.
pub(super) fn doom_copies(tx: &Conn, copies: &[(String, String)]) -> DbResult<()> {
    for (sha1, provider) in copies {
        doom_unreferenced(
            tx,
            "SELECT CAST(?1 AS TEXT) AS sha1, CAST(?2 AS TEXT) AS provider",
            params![sha1, provider],
        )?;
    }
    Ok(())
}

impl Db {
    // ---- enrollment ----

    pub fn join_token_add(&self, hash: &str, reusable: bool, expires: i64) -> DbResult<()> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO join_tokens(hash, reusable, expires) VALUES(?1, ?2, ?3)",
                params![hash, reusable, expires],
            )
        })?;
        Ok(())
    }

    /// Enrolls provider `id` with `pubkey`: free for the key it already has,
    /// otherwise only with a valid join token (spent unless reusable).
    pub fn enroll(&self, id: &str, pubkey: &str, token_hash: Option<&str>) -> DbResult<()> {
        self.tx(|tx| {
            let known: Option<String> = tx.query_opt(
                "SELECT pubkey FROM provider_keys WHERE id=?1",
                params![id],
                |r| r.get(0),
            )?;
            match known {
                Some(k) if k == pubkey => return Ok(()),
                Some(_) => {
                    return Err(DbError::Forbidden(format!(
                        "provider {id} is enrolled with another key"
                    )))
                }
                None => {}
            }
            let refused = || DbError::Forbidden("no valid join token".into());
            let hash = token_hash.ok_or_else(refused)?;
            let reusable: bool = tx
                .query_opt(
                    "SELECT reusable FROM join_tokens WHERE hash=?1 AND expires >= ?2",
                    params![hash, unix_now()],
                    |r| r.get(0),
                )?
                .ok_or_else(refused)?;
            if !reusable {
                tx.execute("DELETE FROM join_tokens WHERE hash=?1", params![hash])?;
            }
            tx.execute(
                "INSERT INTO provider_keys(id, pubkey, enrolled) VALUES(?1, ?2, ?3)",
                params![id, pubkey, unix_now()],
            )?;
            Ok(())
        })
    }

    /// Enrolled providers' public keys (hex) by id.
    pub fn provider_keys(&self) -> DbResult<std::collections::HashMap<String, String>> {
        let rows = self.read(|conn| {
            conn.query_map("SELECT id, pubkey FROM provider_keys", params![], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })?;
        Ok(rows.into_iter().collect())
    }

    /// Records a verified heartbeat of an enrolled provider; refuses one not
    /// newer than the last (a replay).
    pub fn heartbeat(
        &self,
        id: &str,
        url: &str,
        capacity: u64,
        used: u64,
        beat_ms: u64,
    ) -> DbResult<()> {
        self.tx(|tx| {
            let newer = tx.execute(
                "UPDATE provider_keys SET last_beat_ms=?2 WHERE id=?1 AND last_beat_ms < ?2",
                params![id, beat_ms as i64],
            )?;
            if newer == 0 {
                return Err(DbError::Forbidden(
                    "heartbeat is not newer than the last one".into(),
                ));
            }
            tx.execute(
                "INSERT INTO providers(id, url, capacity, used, last_seen) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET url=excluded.url, capacity=excluded.capacity,
                   used=excluded.used, last_seen=excluded.last_seen",
                params![id, url, capacity as i64, used as i64, unix_now()],
            )?;
            Ok(())
        })
    }

    // ---- shards of open sessions ----

    /// Promises `copies` (sha1, provider) to `session` until `expires`.
    pub fn pending_add(
        &self,
        session: &str,
        copies: &[(&str, &str)],
        expires: i64,
    ) -> DbResult<()> {
        self.tx(|tx| {
            for (sha1, provider) in copies {
                tx.execute(
                    "INSERT INTO pending_shards(session, sha1, provider, expires) VALUES(?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                    params![session, sha1, provider, expires],
                )?;
            }
            Ok(())
        })
    }

    /// Ends an upload session: what it stored and did not commit is garbage.
    pub fn session_end(&self, session: &str) -> DbResult<()> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE pending_shards SET expires = 0 WHERE session=?1",
                params![session],
            )?;
            doom_unreferenced(
                tx,
                "SELECT sha1, provider FROM pending_shards WHERE session=?1",
                params![session],
            )?;
            tx.execute(
                "DELETE FROM pending_shards WHERE session=?1",
                params![session],
            )?;
            tx.execute("DELETE FROM sessions WHERE id=?1", params![session])?;
            Ok(())
        })
    }

    /// Sessions that expired: their uncommitted shards become garbage.
    pub fn pending_expire(&self) -> DbResult<()> {
        self.tx(|tx| {
            let now = unix_now();
            doom_unreferenced(
                tx,
                "SELECT sha1, provider FROM pending_shards WHERE expires < ?1",
                params![now],
            )?;
            tx.execute(
                "DELETE FROM pending_shards WHERE expires < ?1",
                params![now],
            )?;
            Ok(())
        })
    }

    // ---- garbage shards ----

    /// Deletes an unused object's rows; the shard copies no other object
    /// uses become doomed. Returns whether the object was forgotten.
    pub fn forget_object(&self, id: i64) -> DbResult<bool> {
        self.tx(|tx| {
            let unused: bool = tx
                .query_opt(
                    "SELECT refs = 0 FROM objects WHERE id=?1",
                    params![id],
                    |r| r.get(0),
                )?
                .unwrap_or(false);
            if !unused {
                return Ok(false);
            }
            let forgotten: Vec<(String, String)> = tx.query_map(
                "DELETE FROM shards WHERE object=?1 RETURNING sha1, provider",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute("DELETE FROM partitions WHERE object=?1", params![id])?;
            tx.execute("DELETE FROM objects WHERE id=?1", params![id])?;
            doom_copies(tx, &forgotten)?;
            Ok(true)
        })
    }

    /// Doomed copies on providers heard from since `horizon` (Unix
    /// seconds), oldest first, with their provider's URL.
    pub fn doomed(&self, horizon: u64, limit: usize) -> DbResult<Vec<DoomedShard>> {
        self.read(|conn| {
            conn.query_map(
                "SELECT d.sha1, d.provider, p.url FROM doomed_shards d
                 JOIN providers p ON p.id = d.provider WHERE p.last_seen >= ?1
                 ORDER BY d.since LIMIT ?2",
                params![horizon as i64, limit as i64],
                |r| {
                    Ok(DoomedShard {
                        sha1: r.get(0)?,
                        provider: r.get(1)?,
                        url: r.get(2)?,
                    })
                },
            )
        })
    }

    /// Whether a doomed copy is still garbage; one referenced again is
    /// pardoned (its row goes).
    pub fn still_doomed(&self, sha1: &str, provider: &str) -> DbResult<bool> {
        self.tx(|tx| {
            let used: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM shards WHERE sha1=?1 AND provider=?2)
                     OR EXISTS (SELECT 1 FROM pending_shards WHERE sha1=?1 AND provider=?2 AND expires >= ?3)",
                params![sha1, provider, unix_now()],
                |r| r.get(0),
            )?;
            if used {
                tx.execute(
                    "DELETE FROM doomed_shards WHERE sha1=?1 AND provider=?2",
                    params![sha1, provider],
                )?;
            }
            Ok(!used)
        })
    }

    /// A doomed copy is gone from its provider.
    pub fn doomed_deleted(&self, sha1: &str, provider: &str) -> DbResult<()> {
        self.tx(|c| {
            c.execute(
                "DELETE FROM doomed_shards WHERE sha1=?1 AND provider=?2",
                params![sha1, provider],
            )
        })?;
        Ok(())
    }
}

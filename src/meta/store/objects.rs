//! Objects, their partitions and shard placements, providers, upload sessions.

use super::sql::{params, Conn};
use super::{
    object_at, scheme_code, sql_id, unix_now, Db, DbResult, NewObject, Ns, ObjectRow, PartitionRow,
    ProviderRow, ShardRow, OBJECT_COLS,
};

impl Db {
    // ---- objects ----

    pub fn find_object(&self, ns: Ns, sha1: &str) -> DbResult<Option<ObjectRow>> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {OBJECT_COLS} FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3"),
                params![sql_id(ns.appid), sql_id(ns.uid), sha1],
                |r| object_at(r, 0),
            )
        })
    }

    /// An unused object the account named again (stored it again, or was
    /// told it need not): its grace period starts over, so GC leaves it to
    /// the commit that is coming.
    pub fn renew_unused(&self, ns: Ns, sha1: &str) -> DbResult<()> {
        self.tx(|tx| renew(tx, ns, sha1))?;
        Ok(())
    }

    /// Records an object with its partitions and shard placements; returns
    /// the id of the object (an existing one when it is already known,
    /// renewed when unused).
    pub fn insert_object(&self, ns: Ns, o: &NewObject) -> DbResult<i64> {
        self.tx(|tx| insert_object_in(tx, ns, o))
    }

    /// The partitions of an object and its shards with the (id, url) of
    /// each provider holding them.
    pub fn object_shards(&self, object: i64) -> DbResult<(Vec<PartitionRow>, Vec<ShardRow>)> {
        self.read(|conn| {
            let parts = conn.query_map("SELECT p.idx, p.size, COALESCE(p.k, o.k), COALESCE(p.m, o.m)
                 FROM partitions p JOIN objects o ON o.id = p.object WHERE p.object=?1 ORDER BY p.idx", params![object], |r| {
                    Ok(PartitionRow {
                        index: r.get::<_, i64>(0)? as u64,
                        size: r.get::<_, i64>(1)? as u64,
                        k: r.get::<_, i64>(2)? as usize,
                        m: r.get::<_, i64>(3)? as usize,
                    })
                })?;
            let mut shards: Vec<ShardRow> = Vec::new();
            let rows = conn.query_map("SELECT s.partition, s.idx, s.sha1, s.size, s.provider, COALESCE(p.url, '')
                 FROM shards s LEFT JOIN providers p ON p.id = s.provider
                 WHERE s.object=?1 ORDER BY s.partition, s.idx", params![object], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as usize,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            for row in rows {
                let (partition, index, sha1, size, prov, url) = row;
                match shards.last_mut() {
                    Some(s) if s.partition == partition && s.index == index => {
                        s.providers.push((prov, url))
                    }
                    _ => shards.push(ShardRow {
                        partition,
                        index,
                        sha1,
                        size,
                        providers: vec![(prov, url)],
                    }),
                }
            }
            Ok((parts, shards))
        })
    }

    // ---- garbage ----

    /// Objects no file has used for at least `grace_secs`, oldest first.
    pub fn unused_objects(&self, grace_secs: i64, limit: usize) -> DbResult<Vec<i64>> {
        self.read(|conn| {
            let ids = conn.query_map("SELECT id FROM objects WHERE refs = 0 AND released <= ?1 ORDER BY released LIMIT ?2", params![unix_now() - grace_secs, limit as i64], |r| r.get(0))?;
            Ok(ids)
        })
    }

    // ---- providers ----

    pub fn providers(&self) -> DbResult<Vec<ProviderRow>> {
        self.read(|conn| {
            let rows = conn.query_map(
                "SELECT id, url, capacity, used, last_seen, state FROM providers ORDER BY id",
                params![],
                |r| {
                    Ok(ProviderRow {
                        id: r.get(0)?,
                        url: r.get(1)?,
                        capacity: r.get::<_, i64>(2)? as u64,
                        used: r.get::<_, i64>(3)? as u64,
                        last_seen: r.get::<_, i64>(4)? as u64,
                        state: r.get(5)?,
                    })
                },
            )?;
            Ok(rows)
        })
    }

    // ---- upload sessions ----

    pub fn session_put(&self, id: &str, ns: Ns, expires: i64, state: &str) -> DbResult<()> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO sessions(id, appid, uid, expires, state) VALUES(?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET state=excluded.state, expires=excluded.expires",
                params![id, sql_id(ns.appid), sql_id(ns.uid), expires, state],
            )
        })?;
        Ok(())
    }

    /// A session's state if it exists, belongs to `ns` and has not expired.
    pub fn session_get(&self, id: &str, ns: Ns) -> DbResult<Option<String>> {
        self.tx(|conn| {
            conn.execute(
                "DELETE FROM sessions WHERE expires < ?1",
                params![unix_now()],
            )?;
            conn.query_opt(
                "SELECT state FROM sessions WHERE id=?1 AND appid=?2 AND uid=?3",
                params![id, sql_id(ns.appid), sql_id(ns.uid)],
                |r| r.get(0),
            )
        })
    }
}

/// `Db::insert_object` in the transaction `tx`.
pub(super) fn insert_object_in(tx: &Conn, ns: Ns, o: &NewObject) -> DbResult<i64> {
    let existing: Option<i64> = tx.query_opt(
        "SELECT id FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3",
        params![sql_id(ns.appid), sql_id(ns.uid), o.sha1],
        |r| r.get(0),
    )?;
    if let Some(id) = existing {
        renew(tx, ns, o.sha1)?;
        return Ok(id);
    }
    let id: i64 = tx.query_row(
        "INSERT INTO objects(appid, uid, sha1, scheme, plain_size, stored_size, partition_size, k, m, data, created, released)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING id",
        params![
            sql_id(ns.appid),
            sql_id(ns.uid),
            o.sha1,
            scheme_code(o.scheme),
            o.plain_size as i64,
            o.stored_size as i64,
            o.partition_size as i64,
            o.k as i64,
            o.m as i64,
            o.data,
            unix_now()
        ],
        |r| r.get(0),
    )?;
    for p in o.partitions {
        tx.execute(
            "INSERT INTO partitions(object, idx, size, k, m) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![id, p.index as i64, p.size as i64, p.k as i64, p.m as i64],
        )?;
        for (i, s) in p.shards.iter().enumerate() {
            for prov in &s.providers {
                tx.execute(
                    "INSERT INTO shards(object, partition, idx, sha1, size, provider)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![id, p.index as i64, i as i64, s.sha1, s.size as i64, prov],
                )?;
            }
        }
    }
    Ok(id)
}

/// Starts an unused object's grace period over.
fn renew(tx: &Conn, ns: Ns, sha1: &str) -> DbResult<usize> {
    tx.execute(
        "UPDATE objects SET released=?4 WHERE appid=?1 AND uid=?2 AND sha1=?3 AND refs=0",
        params![sql_id(ns.appid), sql_id(ns.uid), sha1, unix_now()],
    )
}

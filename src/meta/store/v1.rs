//! The store of TFS v1 files (named by TFS file names, no path): a block
//! table that allocates (block id, sequence id) pairs, and one row per file.
//! A submodule of `db`, so it shares its connection and object rows.

use super::sql::{params, Conn, Row};

use super::{sql_id, unix_now, Db, DbError, DbResult, ObjectRow, OBJECT_COLS};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS v1_blocks(
  block_id INTEGER PRIMARY KEY,
  next_seq INTEGER NOT NULL, used INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS v1_files(
  block_id INTEGER NOT NULL, seq_id INTEGER NOT NULL,
  appid INTEGER NOT NULL, large INTEGER NOT NULL,
  suffix TEXT NOT NULL, simple INTEGER NOT NULL,
  object INTEGER NOT NULL, size INTEGER NOT NULL, crc INTEGER NOT NULL,
  "offset" INTEGER NOT NULL, status INTEGER NOT NULL,
  create_time INTEGER NOT NULL, modify_time INTEGER NOT NULL,
  PRIMARY KEY(block_id, seq_id));
"#;

/// TFS's block size: a block takes new files until this many bytes are used.
pub const V1_BLOCK_BYTES: u64 = 64 << 20;
/// Bytes of TFS's per-file header (`FileInfo`) counted in OCCUPY_SIZE.
pub const V1_FILE_HEADER: u64 = 36;

/// A v1 file's STATUS bits, as TFS's `FileInfo.flag`.
pub const V1_DELETED: u32 = 1;
pub const V1_HIDDEN: u32 = 4;

/// A v1 file as stored.
#[derive(Debug, Clone)]
pub struct V1File {
    pub block_id: u32,
    pub seq_id: u32,
    pub appid: u64,
    pub large: bool,
    pub suffix: String,
    pub simple: bool,
    pub size: u64,
    pub crc: u32,
    pub offset: u64,
    pub status: u32,
    pub create_time: i64,
    pub modify_time: i64,
    pub object: ObjectRow,
}

/// What a new v1 file is made of.
pub struct NewV1File<'a> {
    pub appid: u64,
    pub large: bool,
    pub suffix: &'a str,
    pub simple: bool,
    pub object: i64,
    pub size: u64,
    pub crc: u32,
}

/// A change of a v1 file's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Unlink {
    Delete,
    Undelete,
    Hide,
    Reveal,
}

const FILE_COLS: &str = "f.block_id, f.seq_id, f.appid, f.large, f.suffix, f.simple, f.size, \
     f.crc, f.\"offset\", f.status, f.create_time, f.modify_time";

fn file_of(r: &Row) -> DbResult<V1File> {
    // The object columns follow the 12 file columns.
    let object = ObjectRow {
        id: r.get(12)?,
        sha1: r.get(13)?,
        scheme: super::scheme_of(r.get(14)?),
        plain_size: r.get::<_, i64>(15)? as u64,
        stored_size: r.get::<_, i64>(16)? as u64,
        partition_size: r.get::<_, i64>(17)? as u64,
        k: r.get::<_, i64>(18)? as usize,
        m: r.get::<_, i64>(19)? as usize,
        data: r.get(20)?,
    };
    Ok(V1File {
        block_id: r.get::<_, i64>(0)? as u32,
        seq_id: r.get::<_, i64>(1)? as u32,
        appid: r.get::<_, i64>(2)? as u64,
        large: r.get::<_, i64>(3)? != 0,
        suffix: r.get(4)?,
        simple: r.get::<_, i64>(5)? != 0,
        size: r.get::<_, i64>(6)? as u64,
        crc: r.get::<_, i64>(7)? as u32,
        offset: r.get::<_, i64>(8)? as u64,
        status: r.get::<_, i64>(9)? as u32,
        create_time: r.get(10)?,
        modify_time: r.get(11)?,
        object,
    })
}

fn select_file(tx: &Conn, block_id: u32, seq_id: u32) -> DbResult<Option<V1File>> {
    // Keeps the object columns in OBJECT_COLS's order, after the file's.
    debug_assert!(OBJECT_COLS.starts_with("id, sha1, scheme"));
    let q = format!(
        "SELECT {FILE_COLS}, {} FROM v1_files f JOIN objects o ON o.id = f.object
         WHERE f.block_id=?1 AND f.seq_id=?2",
        OBJECT_COLS
            .split(", ")
            .map(|c| format!("o.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    tx.query_opt(&q, params![i64::from(block_id), i64::from(seq_id)], file_of)
}

/// Takes `bytes` (plus the header) at the end of a block: the current one
/// for a new file (`block` None), opening a new one when it is full, or the
/// given block for an update. Returns (block id, sequence id, offset); the
/// sequence id is only taken for new files.
fn allocate(tx: &Conn, block: Option<u32>, bytes: u64) -> DbResult<(u32, u32, u64)> {
    let occupy = bytes.saturating_add(V1_FILE_HEADER) as i64;
    if let Some(b) = block {
        let used: i64 = tx
            .query_opt(
                "SELECT used FROM v1_blocks WHERE block_id=?1",
                params![i64::from(b)],
                |r| r.get(0),
            )?
            .unwrap_or(0);
        tx.execute(
            "UPDATE v1_blocks SET used=used+?1 WHERE block_id=?2",
            params![occupy, i64::from(b)],
        )?;
        return Ok((b, 0, used as u64));
    }
    let current: Option<(i64, i64, i64)> = tx.query_opt(
        "SELECT block_id, next_seq, used FROM v1_blocks ORDER BY block_id DESC LIMIT 1",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (block_id, seq, used) = match current {
        Some((b, s, u)) if (u as u64) < V1_BLOCK_BYTES && s <= i64::from(u32::MAX) => (b, s, u),
        Some((b, _, _)) => {
            let next = b + 1;
            if next > i64::from(u32::MAX) {
                return Err(DbError::Forbidden("no TFS block ids left".into()));
            }
            tx.execute(
                "INSERT INTO v1_blocks(block_id, next_seq, used) VALUES(?1, 1, 0)",
                params![next],
            )?;
            (next, 1, 0)
        }
        None => {
            tx.execute(
                "INSERT INTO v1_blocks(block_id, next_seq, used) VALUES(1, 1, 0)",
                params![],
            )?;
            (1, 1, 0)
        }
    };
    tx.execute(
        "UPDATE v1_blocks SET next_seq=next_seq+1, used=used+?1 WHERE block_id=?2",
        params![occupy, block_id],
    )?;
    Ok((block_id as u32, seq as u32, used as u64))
}

impl Db {
    /// Records a new v1 file under fresh (block id, sequence id).
    pub fn v1_create(&self, f: &NewV1File) -> DbResult<V1File> {
        self.tx(|tx| {
            let (block_id, seq_id, offset) = allocate(tx, None, f.size)?;
            let now = unix_now();
            tx.execute(
                "INSERT INTO v1_files(block_id, seq_id, appid, large, suffix, simple, object,
                   size, crc, \"offset\", status, create_time, modify_time)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?11)",
                params![
                    i64::from(block_id),
                    i64::from(seq_id),
                    sql_id(f.appid),
                    f.large as i64,
                    f.suffix,
                    f.simple as i64,
                    f.object,
                    f.size as i64,
                    i64::from(f.crc),
                    offset as i64,
                    now
                ],
            )?;
            // A v1 file keeps its object while its row lives (deleted files
            // can be undeleted).
            super::fs::reference(tx, f.object)?;
            select_file(tx, block_id, seq_id)?.ok_or(DbError::NotFound)
        })
    }

    /// A v1 file of `appid`, whatever its status.
    pub fn v1_get(&self, appid: u64, block_id: u32, seq_id: u32) -> DbResult<Option<V1File>> {
        Ok(self
            .read(|conn| select_file(conn, block_id, seq_id))?
            .filter(|f| f.appid == appid))
    }

    /// Replaces a live v1 file's content; the new data goes at the end of
    /// its block, as TFS writes an update.
    pub fn v1_update(
        &self,
        appid: u64,
        block_id: u32,
        seq_id: u32,
        object: i64,
        size: u64,
        crc: u32,
    ) -> DbResult<V1File> {
        self.tx(|tx| {
            let f = select_file(tx, block_id, seq_id)?
                .filter(|f| f.appid == appid && f.status == 0)
                .ok_or(DbError::NotFound)?;
            let (_, _, offset) = allocate(tx, Some(f.block_id), size)?;
            super::fs::reference(tx, object)?;
            super::fs::release(tx, f.object.id)?;
            tx.execute(
                "UPDATE v1_files SET object=?1, size=?2, crc=?3, \"offset\"=?4, modify_time=?5
                 WHERE block_id=?6 AND seq_id=?7",
                params![
                    object,
                    size as i64,
                    i64::from(crc),
                    offset as i64,
                    unix_now(),
                    i64::from(block_id),
                    i64::from(seq_id)
                ],
            )?;
            select_file(tx, block_id, seq_id)?.ok_or(DbError::NotFound)
        })
    }

    /// Changes a v1 file's status as TFS's unlink does: delete a file not
    /// deleted; undelete a deleted one; hide a normal one; reveal a hidden
    /// one that is not deleted. Otherwise the file is not found.
    pub fn v1_unlink(&self, appid: u64, block_id: u32, seq_id: u32, op: V1Unlink) -> DbResult<u32> {
        self.tx(|tx| {
            let f = select_file(tx, block_id, seq_id)?
                .filter(|f| f.appid == appid)
                .ok_or(DbError::NotFound)?;
            let s = f.status;
            let status = match op {
                V1Unlink::Delete if s & V1_DELETED == 0 => s | V1_DELETED,
                V1Unlink::Undelete if s & V1_DELETED != 0 => s & !V1_DELETED,
                V1Unlink::Hide if s == 0 => V1_HIDDEN,
                V1Unlink::Reveal if s == V1_HIDDEN => 0,
                _ => return Err(DbError::NotFound),
            };
            tx.execute(
                "UPDATE v1_files SET status=?1 WHERE block_id=?2 AND seq_id=?3",
                params![i64::from(status), i64::from(block_id), i64::from(seq_id)],
            )?;
            Ok(status)
        })
    }
}

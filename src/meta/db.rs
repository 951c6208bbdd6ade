//! The metadata store: SQLite in WAL mode, one transaction per change. This
//! module is the only one that speaks SQL, so another backend can replace it.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sha2::Digest;

use super::path::{TfsPath, MAX_DEPTH};
use crate::proto::{FileAttrs, PlacedPartition, StoreScheme};

#[path = "db_accounts.rs"]
mod accounts;
#[path = "db_fs.rs"]
mod fs;
#[path = "db_repair.rs"]
mod repair;
#[path = "db_store.rs"]
mod store;
#[path = "db_trust.rs"]
mod trust;
#[path = "db_v1.rs"]
mod v1;
pub use accounts::{OrderRow, PackageFields, PackageRow, Registration, ORDER_CANCELED, ORDER_PAID};
pub use fs::NewNode;
pub use repair::{
    CopyRow, HealthReport, Horizons, PartitionHealth, ProviderReport, ScrubRow, ACTIVE, DRAINING,
    RETIRED,
};
pub use store::SortKey;
pub use trust::DoomedShard;
pub use v1::{NewV1File, V1File, V1Unlink, V1_DELETED, V1_FILE_HEADER, V1_HIDDEN};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("name too long")]
    NameTooLong,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("write overlaps existing data")]
    Overlap,
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub type DbResult<T> = Result<T, DbError>;

/// One account's namespace: (appid, uid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ns {
    pub appid: u64,
    pub uid: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir = 0,
    File = 1,
    /// A symbolic link (an extension for the drive; a file to v2 listings).
    Symlink = 2,
    /// Special files of the drive (like symlinks to v2 listings): only
    /// the node is kept, and a device's number.
    Fifo = 3,
    Socket = 4,
    CharDevice = 5,
    BlockDevice = 6,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: i64,
    pub parent: i64,
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub ver_no: u64,
    pub create_time: i64,
    pub modify_time: i64,
    pub attrs: FileAttrs,
    pub owner: u32,
    pub group: u32,
    pub atime_ns: Option<i64>,
    pub ctime_ns: Option<i64>,
    pub target: Option<String>,
    /// Directories directly below (a directory's link count is 2 + this).
    pub subdirs: u64,
    /// A device node's device number.
    pub rdev: u32,
}

/// Per-directory limits (TFS refuses past them with 403).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_subdirs: u64,
    pub max_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_subdirs: 100_000,
            max_files: 1_000_000,
        }
    }
}

/// A stored object as the store keeps it.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    pub id: i64,
    pub sha1: String,
    pub scheme: StoreScheme,
    pub plain_size: u64,
    pub stored_size: u64,
    pub partition_size: u64,
    pub k: usize,
    pub m: usize,
    pub data: Option<Vec<u8>>,
}

/// A new object to record.
pub struct NewObject<'a> {
    pub sha1: &'a str,
    pub scheme: StoreScheme,
    pub plain_size: u64,
    pub stored_size: u64,
    pub partition_size: u64,
    pub k: usize,
    pub m: usize,
    pub data: Option<&'a [u8]>,
    pub partitions: &'a [PlacedPartition],
}

#[derive(Debug, Clone)]
pub struct FragmentRow {
    pub offset: u64,
    pub length: u64,
    pub key: Option<String>,
    pub object: ObjectRow,
}

#[derive(Debug, Clone)]
pub struct ShardRow {
    pub partition: u64,
    pub index: usize,
    pub sha1: String,
    pub size: u64,
    pub providers: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub id: String,
    pub url: String,
    pub capacity: u64,
    pub used: u64,
    pub last_seen: u64,
    /// `active`, `draining` or `retired`.
    pub state: String,
}

/// A partition of a stored object.
#[derive(Debug, Clone, Copy)]
pub struct PartitionRow {
    pub index: u64,
    /// Stored bytes.
    pub size: u64,
    pub k: usize,
    pub m: usize,
}

pub struct Db {
    conn: Mutex<Connection>,
    limits: Limits,
}

/// A step from one schema version to the next, run in one transaction.
type Migration = fn(&Transaction) -> DbResult<()>;

/// `MIGRATIONS[i]` takes a store from version `i + 1` to `i + 2`. A new
/// store is made at version 1 (`SCHEMA` and the submodules' `SCHEMA`, never
/// changed) and migrated like an old one, so every step is run by every
/// test. Append only.
const MIGRATIONS: &[Migration] = &[hide_secrets, trust_model, durability];

const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Version 1's shape.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS config(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS apps(
  appid INTEGER PRIMARY KEY AUTOINCREMENT,
  appkey TEXT NOT NULL UNIQUE,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  appid INTEGER NOT NULL, uid INTEGER NOT NULL,
  parent INTEGER NOT NULL, name TEXT NOT NULL,
  kind INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0,
  ver_no INTEGER NOT NULL DEFAULT 0,
  create_time INTEGER NOT NULL, modify_time INTEGER NOT NULL,
  mode INTEGER, mtime_ns INTEGER,
  owner INTEGER NOT NULL DEFAULT 0, grp INTEGER NOT NULL DEFAULT 0,
  atime_ns INTEGER, ctime_ns INTEGER, target TEXT, rdev INTEGER NOT NULL DEFAULT 0,
  UNIQUE(appid, uid, parent, name));
CREATE INDEX IF NOT EXISTS nodes_parent ON nodes(parent, name);
-- Counts of a directory's subdirectories and files (nlink, limits) read
-- this index alone.
CREATE INDEX IF NOT EXISTS nodes_parent_kind ON nodes(parent, kind);
CREATE TABLE IF NOT EXISTS objects(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  appid INTEGER NOT NULL, uid INTEGER NOT NULL, sha1 TEXT NOT NULL,
  scheme INTEGER NOT NULL, plain_size INTEGER NOT NULL, stored_size INTEGER NOT NULL,
  partition_size INTEGER NOT NULL, k INTEGER NOT NULL, m INTEGER NOT NULL,
  data BLOB, created INTEGER NOT NULL,
  refs INTEGER NOT NULL DEFAULT 0, released INTEGER NOT NULL DEFAULT 0,
  UNIQUE(appid, uid, sha1));
CREATE INDEX IF NOT EXISTS objects_unused ON objects(released) WHERE refs = 0;
CREATE TABLE IF NOT EXISTS usage(
  appid INTEGER NOT NULL, uid INTEGER NOT NULL, bytes INTEGER NOT NULL,
  PRIMARY KEY(appid, uid));
CREATE TABLE IF NOT EXISTS partitions(
  object INTEGER NOT NULL, idx INTEGER NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY(object, idx));
CREATE TABLE IF NOT EXISTS shards(
  object INTEGER NOT NULL, partition INTEGER NOT NULL, idx INTEGER NOT NULL,
  sha1 TEXT NOT NULL, size INTEGER NOT NULL, provider TEXT NOT NULL,
  PRIMARY KEY(object, partition, idx, provider));
CREATE TABLE IF NOT EXISTS fragments(
  node INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
  object INTEGER NOT NULL, key TEXT,
  PRIMARY KEY(node, offset));
CREATE INDEX IF NOT EXISTS fragments_object ON fragments(object);
CREATE TABLE IF NOT EXISTS providers(
  id TEXT PRIMARY KEY, url TEXT NOT NULL, capacity INTEGER NOT NULL,
  used INTEGER NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(
  id TEXT PRIMARY KEY, appid INTEGER NOT NULL, uid INTEGER NOT NULL,
  expires INTEGER NOT NULL, state TEXT NOT NULL);
"#;

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

// appid and uid are up to 19 decimal digits: they fit u64, and SQLite keeps
// them as the same 64 bits.
fn sql_id(v: u64) -> i64 {
    v as i64
}

fn scheme_code(s: StoreScheme) -> i64 {
    match s {
        StoreScheme::Inline => 0,
        StoreScheme::Replica => 1,
        StoreScheme::Erasure => 2,
    }
}

fn scheme_of(code: i64) -> StoreScheme {
    match code {
        0 => StoreScheme::Inline,
        1 => StoreScheme::Replica,
        _ => StoreScheme::Erasure,
    }
}

const NODE_COLS: &str =
    "id, parent, name, kind, size, ver_no, create_time, modify_time, mode, mtime_ns, \
     owner, grp, atime_ns, ctime_ns, target, \
     CASE WHEN kind=0 THEN (SELECT COUNT(*) FROM nodes s WHERE s.parent=nodes.id AND s.kind=0) ELSE 0 END, \
     rdev";

fn node_of(r: &rusqlite::Row) -> rusqlite::Result<Node> {
    Ok(Node {
        id: r.get(0)?,
        parent: r.get(1)?,
        name: r.get(2)?,
        kind: match r.get::<_, i64>(3)? {
            0 => Kind::Dir,
            2 => Kind::Symlink,
            3 => Kind::Fifo,
            4 => Kind::Socket,
            5 => Kind::CharDevice,
            6 => Kind::BlockDevice,
            _ => Kind::File,
        },
        size: r.get::<_, i64>(4)? as u64,
        ver_no: r.get::<_, i64>(5)? as u64,
        create_time: r.get(6)?,
        modify_time: r.get(7)?,
        attrs: FileAttrs {
            mode: r.get::<_, Option<i64>>(8)?.map(|m| m as u32),
            mtime_ns: r.get(9)?,
        },
        owner: r.get::<_, i64>(10)? as u32,
        group: r.get::<_, i64>(11)? as u32,
        atime_ns: r.get(12)?,
        ctime_ns: r.get(13)?,
        target: r.get(14)?,
        subdirs: r.get::<_, i64>(15)? as u64,
        rdev: r.get::<_, i64>(16)? as u32,
    })
}

const OBJECT_COLS: &str = "id, sha1, scheme, plain_size, stored_size, partition_size, k, m, data";

fn object_of(r: &rusqlite::Row) -> rusqlite::Result<ObjectRow> {
    object_at(r, 0)
}

/// An object from the `OBJECT_COLS` that start at column `at` of a row.
fn object_at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<ObjectRow> {
    Ok(ObjectRow {
        id: r.get(at)?,
        sha1: r.get(at + 1)?,
        scheme: scheme_of(r.get(at + 2)?),
        plain_size: r.get::<_, i64>(at + 3)? as u64,
        stored_size: r.get::<_, i64>(at + 4)? as u64,
        partition_size: r.get::<_, i64>(at + 5)? as u64,
        k: r.get::<_, i64>(at + 6)? as usize,
        m: r.get::<_, i64>(at + 7)? as usize,
        data: r.get(at + 8)?,
    })
}

impl Db {
    /// Opens the store in `dir`, creating it at first: the dir 0700, the
    /// database and its WAL files 0600 (it holds the grant-signing key).
    /// The database file is made before SQLite opens it because SQLite
    /// gives `-wal` and `-shm` the database's mode.
    pub fn open(dir: &Path) -> DbResult<Self> {
        let io =
            |e: std::io::Error| DbError::Invalid(format!("cannot prepare {}: {e}", dir.display()));
        crate::private::dir(dir).map_err(io)?;
        let path = dir.join("meta.sqlite");
        crate::private::touch(&path).map_err(io)?;
        for wal in ["meta.sqlite-wal", "meta.sqlite-shm"] {
            crate::private::restrict(&dir.join(wal)).map_err(io)?;
        }
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn, dir)?;
        Ok(Db {
            conn: Mutex::new(conn),
            limits: Limits::default(),
        })
    }

    /// Sets the per-directory limits that creation and moves enforce.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one transaction, committed only when it succeeds.
    fn tx<T>(&self, f: impl FnOnce(&Transaction) -> DbResult<T>) -> DbResult<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    // ---- config and apps ----

    pub fn config_get(&self, key: &str) -> DbResult<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM config WHERE key=?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn config_set(&self, key: &str, value: &[u8]) -> DbResult<()> {
        self.lock().execute(
            "INSERT INTO config(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Records a new app; `Exists` if the appkey is taken.
    pub fn create_app(&self, appkey: &str) -> DbResult<u64> {
        self.tx(|tx| insert_app(tx, appkey))
    }

    pub fn appid_of(&self, appkey: &str) -> DbResult<Option<u64>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT appid FROM apps WHERE key_hash=?1",
                [appkey_hash(appkey)],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|id| id as u64))
    }

    // ---- namespace ----

    pub fn stat(&self, ns: Ns, path: &TfsPath) -> DbResult<Node> {
        let conn = self.lock();
        resolve(&conn, ns, path)?.ok_or(DbError::NotFound)
    }

    /// A directory's entries: directories first, then files, each by name.
    pub fn list(&self, ns: Ns, path: &TfsPath) -> DbResult<(Node, Vec<Node>)> {
        let conn = self.lock();
        let dir = resolve(&conn, ns, path)?.ok_or(DbError::NotFound)?;
        if dir.kind != Kind::Dir {
            return Err(DbError::NotFound);
        }
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE parent=?1 ORDER BY kind, name"
        ))?;
        let rows = stmt
            .query_map([dir.id], node_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((dir, rows))
    }

    pub fn create(&self, ns: Ns, path: &TfsPath, kind: Kind, recursive: bool) -> DbResult<Node> {
        self.tx(|tx| create_in(tx, ns, path, kind, recursive, self.limits))
    }

    pub fn remove(&self, ns: Ns, path: &TfsPath, kind: Kind) -> DbResult<()> {
        if path.is_root() {
            return Err(DbError::Invalid("the root cannot be removed".into()));
        }
        self.tx(|tx| {
            let node = resolve(tx, ns, path)?
                .filter(|n| n.kind == kind)
                .ok_or(DbError::NotFound)?;
            if kind == Kind::Dir {
                let children: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM nodes WHERE parent=?1",
                    [node.id],
                    |r| r.get(0),
                )?;
                if children > 0 {
                    return Err(DbError::NotEmpty);
                }
            }
            drop_fragments(tx, node.id)?;
            tx.execute("DELETE FROM nodes WHERE id=?1", [node.id])?;
            touch(tx, node.parent)?;
            Ok(())
        })
    }

    /// Moves a dir or file. `overwrite` (an extension) replaces an existing
    /// file at the destination, as POSIX rename does.
    pub fn rename(
        &self,
        ns: Ns,
        src: &TfsPath,
        dst: &TfsPath,
        kind: Kind,
        recursive: bool,
        overwrite: bool,
    ) -> DbResult<()> {
        let limits = self.limits;
        if src.is_root() || dst.is_root() {
            return Err(DbError::Invalid("the root cannot be moved".into()));
        }
        if src == dst {
            return Err(DbError::Invalid(
                "source and destination are the same".into(),
            ));
        }
        if kind == Kind::Dir && dst.starts_with(src) {
            return Err(DbError::Forbidden(
                "cannot move a directory into itself".into(),
            ));
        }
        if dst.depth() > MAX_DEPTH {
            return Err(DbError::Forbidden(format!(
                "more than {MAX_DEPTH} levels deep"
            )));
        }
        self.tx(|tx| {
            let node = resolve(tx, ns, src)?
                .filter(|n| n.kind == kind)
                .ok_or(DbError::NotFound)?;
            if kind == Kind::Dir && dst.depth() + subtree_height(tx, node.id)? > MAX_DEPTH {
                return Err(DbError::Forbidden(format!(
                    "the moved tree would be more than {MAX_DEPTH} levels deep"
                )));
            }
            let parent = match resolve(tx, ns, &dst.parent())? {
                Some(p) if p.kind == Kind::Dir => p,
                Some(_) => return Err(DbError::NotFound),
                None if recursive => create_in(tx, ns, &dst.parent(), Kind::Dir, true, limits)?,
                None => return Err(DbError::NotFound),
            };
            let name = dst.name().expect("not root");
            if let Some(existing) = child(tx, parent.id, name)? {
                if !(overwrite && existing.kind == Kind::File && kind == Kind::File) {
                    // The TFS document answers 404 when the destination exists.
                    return Err(DbError::NotFound);
                }
                drop_fragments(tx, existing.id)?;
                tx.execute("DELETE FROM nodes WHERE id=?1", [existing.id])?;
            } else if parent.id != node.parent {
                check_limits(tx, parent.id, kind, limits)?;
            }
            tx.execute(
                "UPDATE nodes SET parent=?1, name=?2 WHERE id=?3",
                params![parent.id, name, node.id],
            )?;
            touch(tx, node.parent)?;
            touch(tx, parent.id)?;
            Ok(())
        })
    }

    /// Records a pwrite: a fragment at `offset` that must not overlap any
    /// existing one. Bumps the version.
    pub fn add_fragment(
        &self,
        ns: Ns,
        path: &TfsPath,
        offset: Option<u64>,
        length: u64,
        object: i64,
    ) -> DbResult<u64> {
        self.tx(|tx| {
            let node = resolve(tx, ns, path)?.filter(|n| n.kind == Kind::File).ok_or(DbError::NotFound)?;
            let offset = offset.unwrap_or(node.size);
            // Offsets are signed 64-bit, in TFS as in SQLite.
            let end = offset
                .checked_add(length)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| DbError::Invalid("a file must end before byte 2^63".into()))?;
            let overlaps: i64 = tx.query_row(
                "SELECT COUNT(*) FROM fragments WHERE node=?1 AND offset < ?2 AND offset + length > ?3",
                params![node.id, end as i64, offset as i64],
                |r| r.get(0),
            )?;
            if overlaps > 0 {
                return Err(DbError::Overlap);
            }
            tx.execute(
                "INSERT INTO fragments(node, offset, length, object, key) VALUES(?1, ?2, ?3, ?4, NULL)",
                params![node.id, offset as i64, length as i64, object],
            )?;
            reference(tx, object)?;
            let size = node.size.max(end);
            tx.execute(
                "UPDATE nodes SET size=?1, ver_no=ver_no+1, modify_time=?2, mtime_ns=NULL WHERE id=?3",
                params![size as i64, unix_now(), node.id],
            )?;
            Ok(node.ver_no + 1)
        })
    }

    /// Makes an uploaded object the whole content of the file at `path`
    /// (created with its parents if missing), as one new version, if the
    /// file is still at `base_ver` (when given; a missing file is not).
    /// None (nothing changed) when it is not.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_file(
        &self,
        ns: Ns,
        path: &TfsPath,
        object: i64,
        size: u64,
        key: Option<&str>,
        attrs: &FileAttrs,
        base_ver: Option<u64>,
    ) -> DbResult<Option<u64>> {
        let limits = self.limits;
        self.tx(|tx| {
            let found = resolve(tx, ns, path)?;
            if base_ver.is_some() && base_ver != found.as_ref().map(|n| n.ver_no) {
                return Ok(None);
            }
            // A file made by this upload starts at version 1; an existing one
            // gets the next version.
            let (node, bump) = match found {
                Some(n) if n.kind == Kind::File => (n, 1),
                Some(_) => return Err(DbError::Exists),
                None => (create_in(tx, ns, path, Kind::File, true, limits)?, 0),
            };
            replace_content(tx, &node, object, size, key, attrs, bump).map(Some)
        })
    }

    pub fn fragments(&self, node: i64) -> DbResult<Vec<FragmentRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT f.offset, f.length, f.key, {} FROM fragments f JOIN objects o ON o.id = f.object
             WHERE f.node=?1 ORDER BY f.offset",
            OBJECT_COLS.split(", ").map(|c| format!("o.{c}")).collect::<Vec<_>>().join(", ")
        ))?;
        let rows = stmt
            .query_map([node], |r| {
                Ok(FragmentRow {
                    offset: r.get::<_, i64>(0)? as u64,
                    length: r.get::<_, i64>(1)? as u64,
                    key: r.get(2)?,
                    object: object_at(r, 3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ---- objects ----

    pub fn find_object(&self, ns: Ns, sha1: &str) -> DbResult<Option<ObjectRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {OBJECT_COLS} FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3"),
                params![sql_id(ns.appid), sql_id(ns.uid), sha1],
                object_of,
            )
            .optional()?)
    }

    /// Records an object with its partitions and shard placements; returns
    /// the id of the object (an existing one when it is already known).
    pub fn insert_object(&self, ns: Ns, o: &NewObject) -> DbResult<i64> {
        self.tx(|tx| {
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM objects WHERE appid=?1 AND uid=?2 AND sha1=?3",
                    params![sql_id(ns.appid), sql_id(ns.uid), o.sha1],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            tx.execute(
                "INSERT INTO objects(appid, uid, sha1, scheme, plain_size, stored_size, partition_size, k, m, data, created, released)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
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
            )?;
            let id = tx.last_insert_rowid();
            for p in o.partitions {
                tx.execute(
                    "INSERT INTO partitions(object, idx, size, k, m) VALUES(?1, ?2, ?3, ?4, ?5)",
                    params![id, p.index as i64, p.size as i64, p.k as i64, p.m as i64],
                )?;
                for (i, s) in p.shards.iter().enumerate() {
                    for prov in &s.providers {
                        tx.execute(
                            "INSERT OR IGNORE INTO shards(object, partition, idx, sha1, size, provider)
                             VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                            params![id, p.index as i64, i as i64, s.sha1, s.size as i64, prov],
                        )?;
                    }
                }
            }
            Ok(id)
        })
    }

    /// The partitions of an object and its shards with the (id, url) of
    /// each provider holding them.
    pub fn object_shards(&self, object: i64) -> DbResult<(Vec<PartitionRow>, Vec<ShardRow>)> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT p.idx, p.size, COALESCE(p.k, o.k), COALESCE(p.m, o.m)
             FROM partitions p JOIN objects o ON o.id = p.object WHERE p.object=?1 ORDER BY p.idx",
        )?;
        let parts = stmt
            .query_map([object], |r| {
                Ok(PartitionRow {
                    index: r.get::<_, i64>(0)? as u64,
                    size: r.get::<_, i64>(1)? as u64,
                    k: r.get::<_, i64>(2)? as usize,
                    m: r.get::<_, i64>(3)? as usize,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.partition, s.idx, s.sha1, s.size, s.provider, COALESCE(p.url, '')
             FROM shards s LEFT JOIN providers p ON p.id = s.provider
             WHERE s.object=?1 ORDER BY s.partition, s.idx",
        )?;
        let mut shards: Vec<ShardRow> = Vec::new();
        let rows = stmt.query_map([object], |r| {
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
            let (partition, index, sha1, size, prov, url) = row?;
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
    }

    // ---- garbage ----

    /// Objects no file has used for at least `grace_secs`, oldest first.
    pub fn unused_objects(&self, grace_secs: i64, limit: usize) -> DbResult<Vec<i64>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM objects WHERE refs = 0 AND released <= ?1 ORDER BY released LIMIT ?2",
        )?;
        let ids = stmt
            .query_map(params![unix_now() - grace_secs, limit as i64], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    // ---- providers ----

    pub fn providers(&self) -> DbResult<Vec<ProviderRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, url, capacity, used, last_seen, state FROM providers ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ProviderRow {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    capacity: r.get::<_, i64>(2)? as u64,
                    used: r.get::<_, i64>(3)? as u64,
                    last_seen: r.get::<_, i64>(4)? as u64,
                    state: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ---- upload sessions ----

    pub fn session_put(&self, id: &str, ns: Ns, expires: i64, state: &str) -> DbResult<()> {
        self.lock().execute(
            "INSERT INTO sessions(id, appid, uid, expires, state) VALUES(?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET state=excluded.state, expires=excluded.expires",
            params![id, sql_id(ns.appid), sql_id(ns.uid), expires, state],
        )?;
        Ok(())
    }

    /// A session's state if it exists, belongs to `ns` and has not expired.
    pub fn session_get(&self, id: &str, ns: Ns) -> DbResult<Option<String>> {
        let conn = self.lock();
        conn.execute("DELETE FROM sessions WHERE expires < ?1", [unix_now()])?;
        Ok(conn
            .query_row(
                "SELECT state FROM sessions WHERE id=?1 AND appid=?2 AND uid=?3",
                params![id, sql_id(ns.appid), sql_id(ns.uid)],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// What `apps` keeps of an appkey: its SHA-256 (hex), so a copy of the
/// store holds no credential. Appkeys are random (24 bytes from
/// `create_app` or a registration), so a fast unsalted hash cannot be
/// reversed; lookups compare hashes, so their timing tells nothing of a key.
fn appkey_hash(appkey: &str) -> String {
    hex::encode(sha2::Sha256::digest(appkey.as_bytes()))
}

/// Adds an app with `appkey` in `tx`; returns its appid.
fn insert_app(tx: &Connection, appkey: &str) -> DbResult<u64> {
    let n = tx.execute(
        "INSERT OR IGNORE INTO apps(key_hash, created) VALUES(?1, ?2)",
        params![appkey_hash(appkey), unix_now()],
    )?;
    if n == 0 {
        return Err(DbError::Exists);
    }
    Ok(tx.last_insert_rowid() as u64)
}

/// Makes an empty database a store of schema version 1.
fn create_version_1(conn: &mut Connection) -> DbResult<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(v1::SCHEMA)?;
    tx.execute_batch(accounts::SCHEMA)?;
    tx.pragma_update(None, "user_version", 1)?;
    tx.commit()?;
    Ok(())
}

/// Brings the store in `conn` to `SCHEMA_VERSION`: an empty file gets
/// version 1, then each missing migration runs in its own transaction.
fn migrate(conn: &mut Connection, dir: &Path) -> DbResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let empty: bool = conn.query_row("SELECT COUNT(*) = 0 FROM sqlite_master", [], |r| r.get(0))?;
    let from = match version {
        0 if empty => {
            create_version_1(conn)?;
            1
        }
        v if (1..=SCHEMA_VERSION).contains(&v) => v,
        v if v > SCHEMA_VERSION => {
            return Err(DbError::Invalid(format!(
                "{} holds a store of schema version {v}, made by a newer tfsfs; this one reads \
                 versions up to {SCHEMA_VERSION}",
                dir.display()
            )))
        }
        v => {
            return Err(DbError::Invalid(format!(
                "{} holds a database of schema version {v}, not a tfsfs store",
                dir.display()
            )))
        }
    };
    if from == SCHEMA_VERSION {
        return Ok(());
    }
    for v in from..SCHEMA_VERSION {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        MIGRATIONS[(v - 1) as usize](&tx)?;
        tx.pragma_update(None, "user_version", v + 1)?;
        tx.commit()?;
        tracing::info!(store = %dir.display(), version = v + 1, "store migrated");
    }
    // What a migration replaced (clear appkeys) lingers in free and unused
    // page space, and in old WAL frames: rewrite the file, empty the WAL.
    conn.execute_batch("VACUUM")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// 3 → 4: providers have a state (active, draining, retired); bad shard
/// copies, repair backoff and scrub reports are kept.
fn durability(tx: &Transaction) -> DbResult<()> {
    tx.execute_batch(repair::SCHEMA)?;
    Ok(())
}

/// 2 → 3: partitions keep their own erasure scheme (NULL: the object's),
/// providers enroll with keys, sessions promise their shard copies, and
/// unreferenced copies wait in `doomed_shards` for deletion.
fn trust_model(tx: &Transaction) -> DbResult<()> {
    tx.execute_batch(
        "ALTER TABLE partitions ADD COLUMN k INTEGER; ALTER TABLE partitions ADD COLUMN m INTEGER;",
    )?;
    tx.execute_batch(trust::SCHEMA)?;
    Ok(())
}

/// 1 → 2: `apps` keeps each appkey's hash, not the key; pending codes
/// hashed without a key (reversible) are dropped: those accounts ask again.
fn hide_secrets(tx: &Transaction) -> DbResult<()> {
    tx.execute("DELETE FROM registrations", [])?;
    tx.execute_batch("ALTER TABLE apps RENAME COLUMN appkey TO key_hash")?;
    let keys: Vec<(i64, String)> = tx
        .prepare("SELECT appid, key_hash FROM apps")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (appid, key) in keys {
        tx.execute(
            "UPDATE apps SET key_hash=?1 WHERE appid=?2",
            params![appkey_hash(&key), appid],
        )?;
    }
    Ok(())
}

fn root(conn: &Connection, ns: Ns) -> DbResult<Node> {
    let q =
        format!("SELECT {NODE_COLS} FROM nodes WHERE appid=?1 AND uid=?2 AND parent=0 AND name=''");
    if let Some(n) = conn
        .query_row(&q, params![sql_id(ns.appid), sql_id(ns.uid)], node_of)
        .optional()?
    {
        return Ok(n);
    }
    let now = unix_now();
    conn.execute(
        "INSERT INTO nodes(appid, uid, parent, name, kind, create_time, modify_time) VALUES(?1, ?2, 0, '', 0, ?3, ?3)",
        params![sql_id(ns.appid), sql_id(ns.uid), now],
    )?;
    Ok(conn.query_row(&q, params![sql_id(ns.appid), sql_id(ns.uid)], node_of)?)
}

fn child(conn: &Connection, parent: i64, name: &str) -> DbResult<Option<Node>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE parent=?1 AND name=?2"
    ))?;
    Ok(stmt.query_row(params![parent, name], node_of).optional()?)
}

fn resolve(conn: &Connection, ns: Ns, path: &TfsPath) -> DbResult<Option<Node>> {
    let mut node = root(conn, ns)?;
    for seg in path.segments() {
        if node.kind != Kind::Dir {
            return Ok(None);
        }
        match child(conn, node.id, seg)? {
            Some(n) => node = n,
            None => return Ok(None),
        }
    }
    Ok(Some(node))
}

/// How many levels lie below a directory (0 when it is empty), counted no
/// further than MAX_DEPTH.
fn subtree_height(conn: &Connection, dir: i64) -> DbResult<usize> {
    let h: i64 = conn.query_row(
        "WITH RECURSIVE sub(id, kind, depth) AS (
           SELECT ?1, 0, 0
           UNION ALL
           SELECT n.id, n.kind, sub.depth + 1 FROM nodes n JOIN sub ON n.parent = sub.id
           WHERE sub.kind = 0 AND sub.depth < ?2)
         SELECT MAX(depth) FROM sub",
        params![dir, MAX_DEPTH as i64],
        |r| r.get(0),
    )?;
    Ok(h as usize)
}

/// A fragment now uses `object`: an object's first user makes its bytes
/// count in its account's usage (each object once, however many files use it).
fn reference(tx: &Connection, object: i64) -> DbResult<()> {
    // The object may have been collected since it was found: then the
    // caller's upload fails rather than point at nothing.
    if tx.execute("UPDATE objects SET refs = refs + 1 WHERE id=?1", [object])? == 0 {
        return Err(DbError::NotFound);
    }
    tx.execute(
        "INSERT INTO usage(appid, uid, bytes) SELECT appid, uid, stored_size FROM objects WHERE id=?1 AND refs=1
         ON CONFLICT(appid, uid) DO UPDATE SET bytes = bytes + excluded.bytes",
        [object],
    )?;
    Ok(())
}

/// Deletes a node's fragments; an object no fragment uses stops counting.
fn drop_fragments(tx: &Connection, node: i64) -> DbResult<()> {
    let objects: Vec<i64> = tx
        .prepare_cached("SELECT object FROM fragments WHERE node=?1")?
        .query_map([node], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tx.execute("DELETE FROM fragments WHERE node=?1", [node])?;
    for object in objects {
        release(tx, object)?;
    }
    Ok(())
}

/// One user of `object` is gone; the last one takes its bytes out of the
/// account's usage and leaves it to the garbage collector.
fn release(tx: &Connection, object: i64) -> DbResult<()> {
    tx.execute(
        "UPDATE objects SET refs = refs - 1, released = CASE WHEN refs = 1 THEN ?2 ELSE released END WHERE id=?1",
        params![object, unix_now()],
    )?;
    tx.execute(
        "UPDATE usage SET bytes = bytes - (SELECT stored_size FROM objects WHERE id=?1)
         WHERE (appid, uid) = (SELECT appid, uid FROM objects WHERE id=?1 AND refs=0)",
        [object],
    )?;
    Ok(())
}

/// Makes `object` the whole content of a file: one fragment, version
/// bumped by `bump`, times and mode from the upload.
fn replace_content(
    tx: &Connection,
    node: &Node,
    object: i64,
    size: u64,
    key: Option<&str>,
    attrs: &FileAttrs,
    bump: i64,
) -> DbResult<u64> {
    let whole = [(0, size, object, key)];
    let fragments = if size > 0 { &whole[..] } else { &[] };
    replace_fragments(tx, node, fragments, size, attrs, bump)
}

/// Makes `fragments` (offset, length, object, wrapped key) the content of
/// file `node`, `size` bytes long, as its version + `bump`.
fn replace_fragments(
    tx: &Connection,
    node: &Node,
    fragments: &[(u64, u64, i64, Option<&str>)],
    size: u64,
    attrs: &FileAttrs,
    bump: i64,
) -> DbResult<u64> {
    drop_fragments(tx, node.id)?;
    for &(offset, length, object, key) in fragments {
        tx.execute(
            "INSERT INTO fragments(node, offset, length, object, key) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![node.id, offset as i64, length as i64, object, key],
        )?;
        reference(tx, object)?;
    }
    let now = now_ns();
    let mtime = attrs.mtime_ns.unwrap_or(now);
    tx.execute(
        "UPDATE nodes SET size=?1, ver_no=ver_no+?2, modify_time=?3, mode=COALESCE(?4, mode), mtime_ns=?5,
           ctime_ns=?6 WHERE id=?7",
        params![size as i64, bump, mtime.div_euclid(1_000_000_000), attrs.mode.map(i64::from), mtime, now, node.id],
    )?;
    Ok(node.ver_no + bump as u64)
}

/// A directory's entries changed: its modification and change times move.
fn touch(conn: &Connection, id: i64) -> DbResult<()> {
    let now = now_ns();
    conn.execute(
        "UPDATE nodes SET modify_time=?1, mtime_ns=?2, ctime_ns=?2 WHERE id=?3",
        params![now.div_euclid(1_000_000_000), now, id],
    )?;
    Ok(())
}

fn check_limits(conn: &Connection, parent: i64, kind: Kind, limits: Limits) -> DbResult<()> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM nodes WHERE parent=?1 AND kind=?2",
        params![parent, kind as i64],
        |r| r.get(0),
    )?;
    let (max, what) = match kind {
        Kind::Dir => (limits.max_subdirs, "subdirectories"),
        _ => (limits.max_files, "files"),
    };
    if count as u64 >= max {
        return Err(DbError::Forbidden(format!(
            "a directory holds at most {max} {what}"
        )));
    }
    Ok(())
}

fn create_in(
    tx: &Connection,
    ns: Ns,
    path: &TfsPath,
    kind: Kind,
    recursive: bool,
    limits: Limits,
) -> DbResult<Node> {
    if path.is_root() {
        return Err(DbError::Exists);
    }
    if path.depth() > MAX_DEPTH {
        return Err(DbError::Forbidden(format!(
            "more than {MAX_DEPTH} levels deep"
        )));
    }
    let mut node = root(tx, ns)?;
    let segs = path.segments();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if let Some(existing) = child(tx, node.id, seg)? {
            if last {
                return Err(DbError::Exists);
            }
            if existing.kind != Kind::Dir {
                return Err(DbError::NotFound);
            }
            node = existing;
            continue;
        }
        if !last && !recursive {
            return Err(DbError::NotFound);
        }
        let this_kind = if last { kind } else { Kind::Dir };
        check_limits(tx, node.id, this_kind, limits)?;
        let now = unix_now();
        // A new file starts at version 1 (directories stay 0), as TFS does.
        let ver_no = if this_kind == Kind::File { 1 } else { 0 };
        tx.execute(
            "INSERT INTO nodes(appid, uid, parent, name, kind, ver_no, create_time, modify_time)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                sql_id(ns.appid),
                sql_id(ns.uid),
                node.id,
                seg,
                this_kind as i64,
                ver_no,
                now
            ],
        )?;
        touch(tx, node.id)?;
        node = child(tx, node.id, seg)?.expect("just inserted");
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_of_a_newer_or_unknown_schema_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        Db::open(dir.path()).unwrap();
        Db::open(dir.path()).expect("the same version opens again");
        let set_version = |v: i64| {
            let conn = Connection::open(dir.path().join("meta.sqlite")).unwrap();
            conn.pragma_update(None, "user_version", v).unwrap();
        };
        set_version(SCHEMA_VERSION + 1);
        let err = Db::open(dir.path())
            .err()
            .expect("a newer store is refused");
        assert!(err.to_string().contains("made by a newer tfsfs"), "{err}");
        set_version(0);
        let err = Db::open(dir.path())
            .err()
            .expect("a foreign database is refused");
        assert!(err.to_string().contains("not a tfsfs store"), "{err}");
    }

    /// Every byte of every file in `dir`.
    fn raw_files(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(e.unwrap().path()).unwrap());
        }
        all
    }

    #[test]
    fn a_version_1_store_is_migrated_and_its_clear_appkeys_still_work() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let appkey = "5f0c3b4e9a7d21c8e6f1a0b2c4d6e8f0a1b3c5d7e9f1";
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            create_version_1(&mut conn).unwrap();
            // Enough apps to fill pages, so replaced keys are not merely
            // compacted away.
            for i in 0..200 {
                conn.execute(
                    "INSERT INTO apps(appkey, created) VALUES(?1, 0)",
                    [format!("{appkey}{i:03}")],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO registrations VALUES('a@example.com', 'unkeyed', 0, 0, 0, 1, 0)",
                [],
            )
            .unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        let db = Db::open(dir.path()).unwrap();
        for i in [0, 99, 199] {
            let key = format!("{appkey}{i:03}");
            assert_eq!(
                db.appid_of(&key).unwrap(),
                Some(i + 1),
                "old appkey {i} still works"
            );
        }
        assert_eq!(db.appid_of("another").unwrap(), None);
        assert!(matches!(
            db.create_app(&format!("{appkey}007")),
            Err(DbError::Exists)
        ));
        assert_eq!(db.create_app("another").unwrap(), 201);
        assert!(db.registration("a@example.com").unwrap().is_none());
        let version: i64 = db
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let raw = raw_files(dir.path());
        assert!(
            !raw.windows(appkey.len()).any(|w| w == appkey.as_bytes()),
            "the clear appkey is still in the store's files"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("meta.sqlite-wal")), 0o600);
    }
}

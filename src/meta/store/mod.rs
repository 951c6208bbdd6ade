//! The metadata store: the only module that speaks SQL. Each concern's
//! queries are written once against the neutral layer in `sql`, and run on
//! either engine: SQLite (`sqlite`, the default, one file under `--data`)
//! or PostgreSQL (`postgres`, `--db postgres://...`, shared by several
//! metadata servers). One transaction per change.

use std::path::Path;
use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ExponentialBuilder};

use crate::proto::{FileAttrs, PlacedPartition, StoreScheme};
use sql::{Conn, Row};

mod accounts;
mod fs;
mod jobs;
mod migrations;
mod objects;
mod paged;
mod postgres;
mod repair;
pub(crate) mod sql;
mod sqlite;
mod trust;
mod v1;
mod xattrs;
pub(crate) use accounts::appkey_hash;
pub use accounts::{OrderRow, PackageFields, PackageRow, Registration, ORDER_CANCELED, ORDER_PAID};
pub use fs::{CommitObject, CommitTarget, NewNode};
pub use paged::SortKey;
pub use repair::{
    CopyRow, HealthReport, Horizons, PartitionHealth, ProviderReport, ScrubRow, ACTIVE, DRAINING,
    RETIRED,
};
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
    /// An extended attribute the node does not have (ENODATA).
    #[error("no such attribute")]
    NoAttr,
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("write overlaps existing data")]
    Overlap,
    /// A commit names objects the account does not store (any more): their
    /// SHA-1s.
    #[error("objects not stored: {}", .0.join(" "))]
    Missing(Vec<String>),
    #[error("database error: {0}")]
    Sql(String),
    /// A transaction lost to a concurrent one (PostgreSQL's serialization
    /// failures and deadlocks): run it again.
    #[error("database conflict: {0}")]
    Conflict(String),
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
    /// Its link count: a directory's 2 + its subdirectories, another
    /// node's names.
    pub nlink: u64,
    /// A device node's device number.
    pub rdev: u32,
    /// A directory with a default ACL.
    pub default_acl: bool,
}

impl Node {
    /// Its mtime as the drive sees it (nodes made through REST have whole seconds).
    pub fn mtime_ns(&self) -> i64 {
        self.attrs
            .mtime_ns
            .unwrap_or(self.modify_time.saturating_mul(1_000_000_000))
    }
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
    engine: Engine,
    limits: Limits,
}

enum Engine {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// How often and how patiently a conflicting transaction is run again.
const RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(2))
    .with_max_delay(Duration::from_millis(200))
    .with_max_times(30)
    .with_jitter();

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

/// A node's columns after its id and name (any table joined with `nodes`
/// may precede them: they name no column of `entries` or `links`).
macro_rules! node_body {
    () => {
        "kind, size, ver_no, create_time, modify_time, mode, mtime_ns, \
         owner, grp, atime_ns, ctime_ns, target, \
         CASE WHEN kind=0 THEN 2 + (SELECT COUNT(*) FROM nodes s WHERE s.parent=nodes.id AND s.kind=0) \
           ELSE 1 + (SELECT COUNT(*) FROM links x WHERE x.node=nodes.id) END, \
         rdev, \
         CASE WHEN kind=0 AND EXISTS(SELECT 1 FROM xattrs a /* acl::DEFAULT */ \
           WHERE a.node=nodes.id AND a.name='system.posix_acl_default') THEN 1 ELSE 0 END"
    };
}

/// A node by its row: named by the name its row keeps.
const NODE_COLS: &str = concat!("id, parent, name, ", node_body!());

/// A node by one of its names: `FROM entries e JOIN nodes ON nodes.id = e.node`.
const ENTRY_COLS: &str = concat!("nodes.id, e.parent, e.name, ", node_body!());

fn node_of(r: &Row) -> DbResult<Node> {
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
        nlink: r.get::<_, i64>(15)? as u64,
        rdev: r.get::<_, i64>(16)? as u32,
        default_acl: r.get::<_, i64>(17)? != 0,
    })
}

const OBJECT_COLS: &str = "id, sha1, scheme, plain_size, stored_size, partition_size, k, m, data";

/// An object from the `OBJECT_COLS` that start at column `at` of a row.
fn object_at(r: &Row, at: usize) -> DbResult<ObjectRow> {
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
    /// Opens the SQLite store in `dir`, creating it at first: the dir 0700,
    /// the database and its WAL files 0600 (it holds the grant-signing
    /// key). The database file is made before SQLite opens it because
    /// SQLite gives `-wal` and `-shm` the database's mode.
    pub fn open(dir: &Path) -> DbResult<Self> {
        let io =
            |e: std::io::Error| DbError::Invalid(format!("cannot prepare {}: {e}", dir.display()));
        crate::private::dir(dir).map_err(io)?;
        let path = dir.join("meta.sqlite");
        crate::private::touch(&path).map_err(io)?;
        for wal in ["meta.sqlite-wal", "meta.sqlite-shm"] {
            crate::private::restrict(&dir.join(wal)).map_err(io)?;
        }
        Self::opened(
            Engine::Sqlite(sqlite::Store::open(&path)?),
            &dir.display().to_string(),
        )
    }

    /// Connects to the PostgreSQL store at `url`, creating or migrating its
    /// schema.
    pub fn connect(url: &str) -> DbResult<Self> {
        Self::opened(
            Engine::Postgres(postgres::Store::connect(url)?),
            "the database",
        )
    }

    /// Opens the store at `--db` when given, else the SQLite one in `dir`.
    pub fn open_or_connect(db: Option<&str>, dir: &Path) -> DbResult<Self> {
        match db {
            Some(url) => Self::connect(url),
            None => Self::open(dir),
        }
    }

    fn opened(engine: Engine, what: &str) -> DbResult<Self> {
        let db = Db {
            engine,
            limits: Limits::default(),
        };
        if migrations::migrate(&db, what)? {
            if let Engine::Sqlite(s) = &db.engine {
                s.compact()?;
            }
        }
        Ok(db)
    }

    /// Sets the per-directory limits that creation and moves enforce.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether a read is of a local file (SQLite), not a network round trip.
    pub fn reads_locally(&self) -> bool {
        matches!(self.engine, Engine::Sqlite(_))
    }

    /// Whether a write would find the SQLite writer free now (never on
    /// PostgreSQL, where a write is a network round trip).
    pub fn writer_free(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(s) => s.writer_free(),
            Engine::Postgres(_) => false,
        }
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match &self.engine {
            Engine::Sqlite(_) => sqlite::NAME,
            Engine::Postgres(_) => postgres::NAME,
        }
    }

    /// Runs `f` in one transaction, committed only when it succeeds; run
    /// again (with backoff) while it conflicts with concurrent ones.
    fn tx<T>(&self, f: impl Fn(&Conn) -> DbResult<T>) -> DbResult<T> {
        self.measured(|| match &self.engine {
            Engine::Sqlite(s) => s.tx(&f),
            Engine::Postgres(p) => p.tx(|t| f(&Conn::Postgres(t))),
        })
    }

    /// `tx` for a schema change under `Conn::lock_schema`: on PostgreSQL at
    /// READ COMMITTED, so that statements after the lock see what a server
    /// that held it before committed (a serializable snapshot is taken by
    /// the lock statement itself, before the wait).
    fn schema_tx<T>(&self, f: impl Fn(&Conn) -> DbResult<T>) -> DbResult<T> {
        self.measured(|| match &self.engine {
            Engine::Sqlite(s) => s.tx(&f),
            Engine::Postgres(p) => p.schema_tx(|t| f(&Conn::Postgres(t))),
        })
    }

    /// Runs the reads of `f` on one consistent view.
    fn read<T>(&self, f: impl Fn(&Conn) -> DbResult<T>) -> DbResult<T> {
        self.measured(|| match &self.engine {
            Engine::Sqlite(s) => s.read(&f),
            Engine::Postgres(p) => p.read(|t| f(&Conn::Postgres(t))),
        })
    }

    fn measured<T>(&self, attempt: impl FnMut() -> DbResult<T>) -> DbResult<T> {
        let started = Instant::now();
        let out = attempt
            .retry(RETRY)
            .sleep(std::thread::sleep)
            .when(|e| matches!(e, DbError::Conflict(_)))
            .notify(|_, _| metrics::counter!(crate::metrics::DB_TX_RETRIES).increment(1))
            .call();
        metrics::histogram!(crate::metrics::DB_TX_SECONDS, "engine" => self.engine())
            .record(started.elapsed().as_secs_f64());
        out
    }
}

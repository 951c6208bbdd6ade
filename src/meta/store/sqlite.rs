//! The SQLite engine: one file in WAL mode under `--data`; writes go
//! through one connection in IMMEDIATE transactions (so they never meet a
//! busy error mid-way), reads through a pool of reader connections.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode};

use super::sql::{values, Conn, Params, Row, Value};
use super::{DbError, DbResult};

pub const NAME: &str = "sqlite";

/// Reader connections: enough for the handlers of a busy server.
const READERS: u32 = 8;
/// Distinct statements kept prepared per connection.
const STATEMENT_CACHE: usize = 256;

pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: r2d2::Pool<SqliteConnectionManager>,
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            // SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE.
            Some(ErrorCode::ConstraintViolation)
                if matches!(
                    &e,
                    rusqlite::Error::SqliteFailure(f, _) if f.extended_code == 1555 || f.extended_code == 2067
                ) =>
            {
                DbError::Exists
            }
            _ => DbError::Sql(e.to_string()),
        }
    }
}

fn configure(c: &mut Connection) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_secs(10))?;
    // FULL: in WAL mode NORMAL lets the last answered commits roll back at
    // a power cut, leaving a client told "stored" with no file (and the
    // providers' fsynced shards to GC). FULL syncs the WAL at each commit.
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

impl Store {
    /// Opens (creating) the database file at `path`, which must exist.
    pub fn open(path: &Path) -> DbResult<Self> {
        let mut writer = Connection::open(path)?;
        configure(&mut writer)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        let manager = SqliteConnectionManager::file(path).with_init(configure);
        let readers = r2d2::Pool::builder()
            .max_size(READERS)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| DbError::Sql(format!("cannot open {}: {e}", path.display())))?;
        Ok(Store {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers,
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no write holds the writer now.
    pub fn writer_free(&self) -> bool {
        self.writer.try_lock().is_ok()
    }

    /// Runs `f` in one IMMEDIATE transaction, committed only when it succeeds.
    pub fn tx<T>(&self, f: impl FnOnce(&Conn) -> DbResult<T>) -> DbResult<T> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&Conn::Sqlite(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on a reader connection.
    pub fn read<T>(&self, f: impl FnOnce(&Conn) -> DbResult<T>) -> DbResult<T> {
        let conn = self
            .readers
            .get()
            .map_err(|e| DbError::Sql(format!("no reader for {}: {e}", self.path.display())))?;
        f(&Conn::Sqlite(&conn))
    }

    /// After migrations: what a migration replaced (clear appkeys) lingers in
    /// free and unused page space, and in old WAL frames: rewrite the file,
    /// empty the WAL.
    pub fn compact(&self) -> DbResult<()> {
        let conn = self.writer();
        conn.execute_batch("VACUUM")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// The schema version (`user_version`); None for an empty file.
pub fn schema_version(conn: &Connection) -> DbResult<Option<i64>> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let empty: bool = conn.query_row("SELECT COUNT(*) = 0 FROM sqlite_master", [], |r| r.get(0))?;
    Ok(if version == 0 && empty {
        None
    } else {
        Some(version)
    })
}

/// AUTOINCREMENT gives a new row an id above `sqlite_sequence`'s, which
/// moving it up reserves the ids passed (the writer is alone: atomic).
pub fn reserve_node_ids(c: &Connection, count: i64) -> DbResult<i64> {
    c.execute(
        "INSERT INTO sqlite_sequence(name, seq)
         SELECT 'nodes', COALESCE(MAX(id), 0) FROM nodes
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'nodes')",
        [],
    )?;
    Ok(c.query_row(
        "UPDATE sqlite_sequence SET seq = seq + ?1 WHERE name = 'nodes' RETURNING seq",
        [count],
        |r| r.get(0),
    )?)
}

pub fn set_schema_version(conn: &Connection, version: i64) -> DbResult<()> {
    Ok(conn.pragma_update(None, "user_version", version)?)
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn column(v: ValueRef) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        // No column holds a real: SQLite makes one only of arithmetic on
        // integers that overflowed, read as its integer part.
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

pub fn execute(c: &Connection, sql: &str, params: Params) -> DbResult<usize> {
    let mut stmt = c.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(values(params)))?)
}

pub fn query(c: &Connection, sql: &str, params: Params) -> DbResult<Vec<Row>> {
    let mut stmt = c.prepare_cached(sql)?;
    let width = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(values(params)))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(Row((0..width)
            .map(|i| r.get_ref(i).map(column))
            .collect::<Result<_, _>>()?));
    }
    Ok(out)
}

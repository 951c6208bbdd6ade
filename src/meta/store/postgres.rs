//! The PostgreSQL engine: a pool of connections shared by any number of
//! metadata servers' handlers; changes run SERIALIZABLE (so two servers
//! never both create one name, nor let a rename and a delete cross), reads
//! in REPEATABLE READ snapshots. The neutral SQL is adapted here: `?N`
//! placeholders become `$N` (once per statement, prepared and cached per
//! connection), and schema text gets PostgreSQL's types.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, IsolationLevel, NoTls, Statement, Transaction};
use regex::Regex;

use super::sql::{values, Params, Row, Value};
use super::{DbError, DbResult};

pub const NAME: &str = "postgres";

/// Connections per server.
const POOL: u32 = 16;

/// One pooled connection with the statements prepared on it.
pub struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

struct Manager(postgres::Config);

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConn, postgres::Error> {
        Ok(PgConn {
            client: self.0.connect(NoTls)?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, c: &mut PgConn) -> Result<(), postgres::Error> {
        c.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, c: &mut PgConn) -> bool {
        c.client.is_closed()
    }
}

pub struct Store {
    /// Taken only by `drop`.
    pool: Option<r2d2::Pool<Manager>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // The sync client closes a connection by blocking on a runtime of
        // its own, which cannot run on an async runtime's thread.
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// Runs `f`, which blocks on the sync client's own runtime, where that may
/// run: on an async worker thread only after handing its tasks over.
fn outside_runtime<T>(f: impl FnOnce() -> DbResult<T>) -> DbResult<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => Err(DbError::Sql(
            "the PostgreSQL store needs a multi-threaded async runtime".into(),
        )),
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => DbError::Exists,
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                DbError::Conflict(e.to_string())
            }
            _ => DbError::Sql(match e.source() {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            }),
        }
    }
}

impl Store {
    /// Connects to the database at `url` (`postgres://user@host:port/db`).
    pub fn connect(url: &str) -> DbResult<Self> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| DbError::Invalid(format!("bad --db URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(10));
        let pool = r2d2::Pool::builder()
            .max_size(POOL)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(Manager(config))
            .map_err(|e| DbError::Sql(format!("cannot connect to the database: {e}")))?;
        Ok(Store { pool: Some(pool) })
    }

    fn run<T>(
        &self,
        level: IsolationLevel,
        read_only: bool,
        f: impl FnOnce(&Tx) -> DbResult<T>,
    ) -> DbResult<T> {
        let pool = self.pool.as_ref().expect("the pool lives until drop");
        outside_runtime(|| {
            let mut conn = pool
                .get()
                .map_err(|e| DbError::Sql(format!("no database connection: {e}")))?;
            let PgConn { client, statements } = &mut *conn;
            let tx = client
                .build_transaction()
                .isolation_level(level)
                .read_only(read_only)
                .start()?;
            let tx = Tx {
                tx: RefCell::new(tx),
                statements: RefCell::new(statements),
            };
            let out = f(&tx)?;
            tx.tx.into_inner().commit()?;
            Ok(out)
        })
    }

    /// One SERIALIZABLE transaction (the caller retries on `Conflict`).
    pub fn tx<T>(&self, f: impl FnOnce(&Tx) -> DbResult<T>) -> DbResult<T> {
        self.run(IsolationLevel::Serializable, false, f)
    }

    /// One READ COMMITTED transaction (see `Db::schema_tx`).
    pub fn schema_tx<T>(&self, f: impl FnOnce(&Tx) -> DbResult<T>) -> DbResult<T> {
        self.run(IsolationLevel::ReadCommitted, false, f)
    }

    /// One snapshot for reads. Not read-only: a namespace's root is made
    /// when first seen.
    pub fn read<T>(&self, f: impl FnOnce(&Tx) -> DbResult<T>) -> DbResult<T> {
        self.run(IsolationLevel::RepeatableRead, false, f)
    }
}

/// A transaction on a pooled connection.
pub struct Tx<'a> {
    tx: RefCell<Transaction<'a>>,
    statements: RefCell<&'a mut HashMap<String, Statement>>,
}

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\?(\d+)").expect("regex"));

/// The schema's SQLite words and their PostgreSQL equivalents (every
/// integer is 64-bit; text sorts bytewise, as in SQLite).
static DDL: LazyLock<[(Regex, &str); 4]> = LazyLock::new(|| {
    let word = |w: &str| Regex::new(&format!(r"\b{w}\b")).expect("regex");
    [
        (
            word("INTEGER PRIMARY KEY AUTOINCREMENT"),
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        ),
        (word("INTEGER"), "BIGINT"),
        (word("BLOB"), "BYTEA"),
        (word("TEXT"), "TEXT COLLATE \"C\""),
    ]
});

/// A table's definition up to its end: given a `rowid` as SQLite gives
/// every table without an integer key, so queries may order by insertion.
static ROWID_TABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)(CREATE TABLE IF NOT EXISTS \w+\()([^;]*)").expect("regex"));

impl Tx<'_> {
    fn statement(&self, sql: &str) -> DbResult<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .tx
            .borrow_mut()
            .prepare(&PLACEHOLDER.replace_all(sql, "$$$1"))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub fn execute(&self, sql: &str, params: Params) -> DbResult<usize> {
        let stmt = self.statement(sql)?;
        let vals = values(params);
        let refs: Vec<&(dyn ToSql + Sync)> = vals.iter().map(|v| v as _).collect();
        Ok(self.tx.borrow_mut().execute(&stmt, &refs)? as usize)
    }

    pub fn query(&self, sql: &str, params: Params) -> DbResult<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let vals = values(params);
        let refs: Vec<&(dyn ToSql + Sync)> = vals.iter().map(|v| v as _).collect();
        let rows = self.tx.borrow_mut().query(&stmt, &refs)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| column(r, i))
                    .collect::<DbResult<_>>()
                    .map(Row)
            })
            .collect()
    }

    pub fn execute_batch(&self, ddl: &str) -> DbResult<()> {
        let ddl = DDL.iter().fold(ddl.to_owned(), |s, (from, to)| {
            from.replace_all(&s, *to).into_owned()
        });
        let ddl = ROWID_TABLE.replace_all(&ddl, |c: &regex::Captures| {
            if c[2].contains("IDENTITY") {
                c[0].to_owned()
            } else {
                format!(
                    "{}rowid BIGINT GENERATED ALWAYS AS IDENTITY, {}",
                    &c[1], &c[2]
                )
            }
        });
        Ok(self.tx.borrow_mut().batch_execute(&ddl)?)
    }

    /// Moves the identity sequence of `nodes` past `count` ids. Inserts
    /// draw from it outside any transaction, so they are held off (the
    /// table lock) between the read and the move.
    pub fn reserve_node_ids(&self, count: i64) -> DbResult<i64> {
        let mut tx = self.tx.borrow_mut();
        tx.batch_execute("LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE")?;
        let high: i64 = tx
            .query_one(
                "SELECT setval(pg_get_serial_sequence('nodes', 'id'),
                   nextval(pg_get_serial_sequence('nodes', 'id')) + $1 - 1)",
                &[&count],
            )?
            .get(0);
        Ok(high)
    }

    /// Serializes schema changes of servers starting together.
    pub fn lock_schema(&self) -> DbResult<()> {
        self.tx
            .borrow_mut()
            .execute("SELECT pg_advisory_xact_lock(7046338151)", &[])?;
        Ok(())
    }

    /// The schema version; None for an empty database.
    pub fn schema_version(&self) -> DbResult<Option<i64>> {
        let mut tx = self.tx.borrow_mut();
        let tables: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                &[],
            )?
            .get(0);
        if tables == 0 {
            return Ok(None);
        }
        let versioned: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = 'schema_version'",
                &[],
            )?
            .get(0);
        if versioned == 0 {
            return Ok(Some(0));
        }
        Ok(Some(
            tx.query_one("SELECT version FROM schema_version", &[])?
                .get(0),
        ))
    }

    pub fn set_schema_version(&self, version: i64) -> DbResult<()> {
        let mut tx = self.tx.borrow_mut();
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version(version BIGINT NOT NULL); DELETE FROM schema_version;",
        )?;
        tx.execute(
            "INSERT INTO schema_version(version) VALUES($1)",
            &[&version],
        )?;
        Ok(())
    }
}

fn column(r: &postgres::Row, i: usize) -> DbResult<Value> {
    let ty = r.columns()[i].type_();
    Ok(match *ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        _ => {
            return Err(DbError::Sql(format!(
                "column {} is of type {ty}: cast it to BIGINT or TEXT",
                r.columns()[i].name()
            )))
        }
    }
    .unwrap_or(Value::Null))
}

fn mismatch(v: &Value, ty: &Type) -> Box<dyn std::error::Error + Sync + Send> {
    format!("cannot pass {v:?} as {ty}").into()
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::NAME | &Type::BPCHAR) => {
                s.as_str().to_sql(ty, out)
            }
            (Value::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (v, ty) => Err(mismatch(v, ty)),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

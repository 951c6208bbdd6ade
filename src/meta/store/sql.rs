//! The engine-neutral layer the concern files write their queries against:
//! every query is written once, with `?N` placeholders, and run by either
//! engine through a `Conn`. Rows come back as `Value`s.

use super::{postgres, sqlite, DbError, DbResult};

/// A parameter or a column value, as both engines can hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// What can be bound to a placeholder.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}

impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_value)
    }
}

/// The parameters of one query, in placeholder order.
pub type Params<'a> = &'a [&'a dyn ToValue];

/// `params![a, b]`: the parameters of a query.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$(&$p as &dyn $crate::meta::store::sql::ToValue),*] as $crate::meta::store::sql::Params
    };
}
pub(crate) use params;

pub(super) fn values(params: Params) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(v: Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b),
            Value::Text(s) => Some(s.into_bytes()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column's position (a trait only so `get::<_, T>(0)` reads as usual).
pub trait RowIndex {
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One result row.
pub struct Row(pub(super) Vec<Value>);

impl Row {
    pub fn get<I: RowIndex, T: FromValue>(&self, at: I) -> DbResult<T> {
        let at = at.index();
        let v = self
            .0
            .get(at)
            .cloned()
            .ok_or_else(|| DbError::Sql(format!("no column {at}")))?;
        // The value's kind only: formatting every value read (a blob of
        // inline data among them) cost the server a tenth of its CPU.
        let shown = match v {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        };
        T::from_value(v).ok_or_else(|| {
            DbError::Sql(format!(
                "column {at} holds {shown}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A connection (in a transaction) of either engine.
pub enum Conn<'a, 't> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a postgres::Tx<'t>),
}

impl Conn<'_, '_> {
    /// Runs a statement; returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: Params) -> DbResult<usize> {
        match self {
            Conn::Sqlite(c) => sqlite::execute(c, sql, params),
            Conn::Postgres(t) => t.execute(sql, params),
        }
    }

    /// Every row of a query, each made into a `T` by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: Params,
        f: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        let rows = match self {
            Conn::Sqlite(c) => sqlite::query(c, sql, params)?,
            Conn::Postgres(t) => t.query(sql, params)?,
        };
        rows.iter().map(f).collect()
    }

    /// The first row of a query, if any.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: Params,
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        let rows = match self {
            Conn::Sqlite(c) => sqlite::query(c, sql, params)?,
            Conn::Postgres(t) => t.query(sql, params)?,
        };
        rows.first().map(f).transpose()
    }

    /// The first row of a query that always yields one (an aggregate, a
    /// `RETURNING`).
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: Params,
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<T> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| DbError::Sql(format!("no row from {sql}")))
    }

    /// Runs schema statements (DDL), which the engine adapts to its types.
    pub fn execute_batch(&self, ddl: &str) -> DbResult<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(ddl)?),
            Conn::Postgres(t) => t.execute_batch(ddl),
        }
    }

    /// The schema version; None for an empty database.
    pub fn schema_version(&self) -> DbResult<Option<i64>> {
        match self {
            Conn::Sqlite(c) => sqlite::schema_version(c),
            Conn::Postgres(t) => t.schema_version(),
        }
    }

    pub fn set_schema_version(&self, version: i64) -> DbResult<()> {
        match self {
            Conn::Sqlite(c) => sqlite::set_schema_version(c, version),
            Conn::Postgres(t) => t.set_schema_version(version),
        }
    }

    /// Takes `count` node ids from the sequence `nodes` draws its ids from,
    /// so no node made later gets one; returns the highest.
    pub fn reserve_node_ids(&self, count: i64) -> DbResult<i64> {
        match self {
            Conn::Sqlite(c) => sqlite::reserve_node_ids(c, count),
            Conn::Postgres(t) => t.reserve_node_ids(count),
        }
    }

    /// Makes servers starting on one database migrate it in turn (SQLite's
    /// IMMEDIATE transaction already does).
    pub fn lock_schema(&self) -> DbResult<()> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Postgres(t) => t.lock_schema(),
        }
    }
}

//! The one small SQL interface the store's modules are written against, so
//! that the same queries run on the embedded SQLite database and on a shared
//! PostgreSQL server (issue 14).
//!
//! The store's columns hold integers and text only, so a [`Value`] is one of
//! those or NULL; a [`Row`] is read eagerly into values (PostgreSQL's
//! booleans become 0 or 1). Statements are written in SQLite's dialect with
//! numbered `?N` placeholders, which [`Conn`] turns into PostgreSQL's `$N`;
//! the rest of the SQL must mean the same on both: quote `"user"` (a
//! reserved word in PostgreSQL), cast a parameter whose type the query does
//! not fix (`CAST(?1 AS TEXT)`), prefer `ON CONFLICT` to `INSERT OR`.
//!
//! Why by hand rather than an ORM or sqlx: the store already is a thin layer
//! of hand-written SQL over rusqlite, and both drivers are the field's own
//! (rusqlite, the `postgres` crate); this file only lets one query text and
//! one row type serve both.

use std::cell::RefCell;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// A bound parameter or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Integer(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Integer(i64::from(b))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Text(s.clone())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// `values![a, b]`: the parameters of a statement, each converted with
/// `Value::from`.
macro_rules! values {
    ($($value:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($value)),*][..]
    };
}
pub(crate) use values;

/// Why a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    /// No connection could be had from the pool in time (the server is
    /// down or unreachable, or every connection is busy); says the last
    /// connection error.
    #[error("no database connection within {}s: {reason}", crate::store::postgres::CONNECT_TIMEOUT.as_secs())]
    NoConnection { reason: String },
    /// A column holds another type than the code reads.
    #[error("column {column} is {found}, not {expected}")]
    Type {
        column: usize,
        expected: &'static str,
        found: &'static str,
    },
    /// A query that must return a row returned none.
    #[error("the query returned no row")]
    NoRow,
}

/// PostgreSQL's own message and detail (`postgres::Error`'s Display says
/// only "db error" for a server error).
fn postgres_message(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => error.to_string(),
    }
}

impl DbError {
    /// True when the database could not be reached or the connection broke,
    /// as opposed to a statement the database refused: the action may work
    /// once the server is back (`store_unavailable`).
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::NoConnection { .. } => true,
            DbError::Postgres(error) => {
                error.is_closed()
                    || error.as_db_error().is_none()
                    || error.code().is_some_and(|code| {
                        // Class 08 (connection exception), 57P0x (the
                        // server is shutting down or starting), 57014 (a
                        // statement ran past statement_timeout), 55P03 (a
                        // lock not had within lock_timeout).
                        let c = code.code();
                        c.starts_with("08") || c.starts_with("57P") || c == "57014" || c == "55P03"
                    })
            }
            DbError::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => matches!(
                error.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// One row of a result, read eagerly.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

/// A column's value in a Rust type: `i64`, `u64`, `bool`, `String`, or an
/// `Option` of one for a nullable column.
pub trait FromValue: Sized {
    fn from_value(value: &Value, column: usize) -> Result<Self, DbError>;
}

fn found(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Text(_) => "text",
    }
}

fn wrong(value: &Value, column: usize, expected: &'static str) -> DbError {
    DbError::Type {
        column,
        expected,
        found: found(value),
    }
}

impl FromValue for i64 {
    fn from_value(value: &Value, column: usize) -> Result<i64, DbError> {
        match value {
            Value::Integer(n) => Ok(*n),
            other => Err(wrong(other, column, "an integer")),
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value, column: usize) -> Result<u64, DbError> {
        let n = i64::from_value(value, column)?;
        u64::try_from(n).map_err(|_| DbError::Type {
            column,
            expected: "a non-negative integer",
            found: "a negative integer",
        })
    }
}

impl FromValue for bool {
    fn from_value(value: &Value, column: usize) -> Result<bool, DbError> {
        Ok(i64::from_value(value, column)? != 0)
    }
}

impl FromValue for String {
    fn from_value(value: &Value, column: usize) -> Result<String, DbError> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => Err(wrong(other, column, "text")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value, column: usize) -> Result<Option<T>, DbError> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other, column).map(Some),
        }
    }
}

impl Row {
    /// Column `column` (from 0) as a `T`.
    pub fn get<T: FromValue>(&self, column: usize) -> Result<T, DbError> {
        let value = self.0.get(column).unwrap_or(&Value::Null);
        T::from_value(value, column)
    }

    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        use rusqlite::types::ValueRef;
        let count = row.as_ref().column_count();
        let mut values = Vec::with_capacity(count);
        for i in 0..count {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::Integer(n),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                // Never written by the store (STRICT tables of INTEGER and
                // TEXT); read as text so a hand-edited row still reads.
                ValueRef::Real(f) => Value::Text(f.to_string()),
                ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
            });
        }
        Ok(Row(values))
    }

    fn from_postgres(row: &postgres::Row) -> Result<Row, DbError> {
        let mut values = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            let ty = column.type_();
            let value = if *ty == Type::INT8 {
                row.try_get::<_, Option<i64>>(i)?.map(Value::Integer)
            } else if *ty == Type::INT4 {
                row.try_get::<_, Option<i32>>(i)?
                    .map(|n| Value::Integer(n.into()))
            } else if *ty == Type::INT2 {
                row.try_get::<_, Option<i16>>(i)?
                    .map(|n| Value::Integer(n.into()))
            } else if *ty == Type::BOOL {
                row.try_get::<_, Option<bool>>(i)?
                    .map(|b| Value::Integer(b.into()))
            } else {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            };
            values.push(value.unwrap_or(Value::Null));
        }
        Ok(Row(values))
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(n) if *ty == Type::INT8 => n.to_sql(ty, out),
            Value::Integer(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Value::Integer(n) if *ty == Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
            Value::Integer(n) if *ty == Type::BOOL => (*n != 0).to_sql(ty, out),
            Value::Integer(n) if *ty == Type::TEXT => n.to_string().as_str().to_sql(ty, out),
            Value::Text(s) if *ty != Type::INT8 && *ty != Type::BOOL => s.as_str().to_sql(ty, out),
            other => Err(format!("cannot bind {} as {ty}", found(other)).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A connection inside (or, for the audit files' catch-up, outside) a
/// transaction, on either database.
pub(crate) enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(RefCell<postgres::Transaction<'a>>),
}

impl Conn<'_> {
    /// Runs a statement; returns how many rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[Value]) -> Result<usize, DbError> {
        match self {
            Conn::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
            Conn::Postgres(tx) => {
                let changed = tx
                    .borrow_mut()
                    .execute(&postgres_sql(sql), &pg_params(params))?;
                Ok(usize::try_from(changed).unwrap_or(usize::MAX))
            }
        }
    }

    /// Every row a query returns.
    pub(crate) fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        match self {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(params), Row::from_sqlite)?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Conn::Postgres(tx) => tx
                .borrow_mut()
                .query(&postgres_sql(sql), &pg_params(params))?
                .iter()
                .map(Row::from_postgres)
                .collect(),
        }
    }

    /// The first row a query returns, if any.
    pub(crate) fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query that always returns one (`count(*)`,
    /// `EXISTS`).
    pub(crate) fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row, DbError> {
        self.query_opt(sql, params)?.ok_or(DbError::NoRow)
    }
}

fn pg_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// `?N` placeholders as `$N`, outside quoted strings and identifiers.
pub(crate) fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' => {
                out.push('$');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            postgres_sql("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"d?\" = ?10"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"d?\" = $10"
        );
    }

    #[test]
    fn values_read_back_in_their_rust_types() {
        let row = Row(vec![
            Value::Integer(7),
            Value::Null,
            Value::Text("x".into()),
            Value::Integer(1),
        ]);
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<Option<i64>>(1).unwrap(), None);
        assert_eq!(row.get::<String>(2).unwrap(), "x");
        assert!(row.get::<bool>(3).unwrap());
        let err = row.get::<i64>(2).unwrap_err();
        assert_eq!(err.to_string(), "column 2 is text, not an integer");
        assert!(row.get::<String>(1).is_err(), "NULL is not text");
    }
}

//! The PostgreSQL error codes (SQLSTATE) tenantctl branches on, named once
//! (<https://www.postgresql.org/docs/current/errcodes-appendix.html>). Part
//! of `error`, which imports no other module: code that asks "was it
//! this error?" needs nothing else for it.

/// `unique_violation`: another row (or a concurrent `CREATE DATABASE`) got there first.
pub const UNIQUE_VIOLATION: &str = "23505";
/// `check_violation`.
pub const CHECK_VIOLATION: &str = "23514";
/// `not_null_violation`.
pub const NOT_NULL_VIOLATION: &str = "23502";
/// `string_data_right_truncation`: a value longer than a `varchar(n)` column.
pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
/// `invalid_text_representation`: a value the column's type does not accept.
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// `numeric_value_out_of_range`.
pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
/// `invalid_datetime_format`.
pub const INVALID_DATETIME_FORMAT: &str = "22007";
/// `datetime_field_overflow`.
pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
/// `undefined_table`.
pub const UNDEFINED_TABLE: &str = "42P01";
/// `insufficient_privilege`.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `invalid_catalog_name`: no database of that name.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// `protocol_violation`.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `duplicate_database`.
pub const DUPLICATE_DATABASE: &str = "42P04";
/// `object_in_use`: a database other sessions are still connected to.
pub const OBJECT_IN_USE: &str = "55006";
/// `lock_not_available`: `lock_timeout` ran out.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `query_canceled`: a cancel request or `statement_timeout`.
pub const QUERY_CANCELED: &str = "57014";
/// `active_sql_transaction`: a statement that cannot run inside a transaction block.
pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
/// `invalid_sql_statement_name`: a prepared statement the server connection does not have.
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
/// `duplicate_prepared_statement`.
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
/// `object_not_in_prerequisite_state`.
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// Whether any cause of `err` is a PostgreSQL error with this SQLSTATE.
pub fn is(err: &anyhow::Error, code: &str) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .and_then(sqlx::error::DatabaseError::code)
            .is_some_and(|c| c == code)
    })
}

/// Whether `err` says the connection itself is gone: a broken socket or
/// stream, or the server ending the session (class 08, connection
/// exception; 57P01-57P05, an administrator's or a timeout's termination).
pub fn connection_lost(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Io(_) | sqlx::Error::Protocol(_)) => true,
            Some(other) => other
                .as_database_error()
                .and_then(sqlx::error::DatabaseError::code)
                .is_some_and(|c| {
                    c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "57P05")
                }),
            None => cause.downcast_ref::<std::io::Error>().is_some(),
        })
}

//! Databases for tests: a fresh SQLite file, or a fresh schema in the PostgreSQL that
//! `SPARK_TEST_POSTGRES_URL` names (default: this machine's, `postgres://postgres@127.0.0.1:5432/test`,
//! which `.ci/run` starts when it does not answer). A PostgreSQL that cannot be reached fails the
//! test: it is never skipped.

#![allow(dead_code)]

use sqlx::Connection;

/// The server the PostgreSQL tests use.
pub fn postgres_base() -> String {
    std::env::var("SPARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A URL whose connections see only a new, empty schema of their own.
pub async fn postgres_url() -> String {
    let base = postgres_base();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is needed by this test: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// A URL for a new SQLite file in a new temporary directory.
pub fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join(format!("spark-test-{}", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}", dir.join("spark.db").display())
}

/// Both backends, for test bodies that must hold on each.
pub async fn both() -> Vec<(&'static str, String)> {
    vec![("sqlite", sqlite_url()), ("postgres", postgres_url().await)]
}

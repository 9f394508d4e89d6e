//! The schema, written once for both backends. Each change is a template in `schema/`,
//! rendered for PostgreSQL or SQLite and run by sqlx's migrator (which records what it ran
//! in `_sqlx_migrations` and refuses a database whose applied migrations have changed).
//!
//! Template syntax, line by line:
//! - `--pg: <sql>` is a line only PostgreSQL gets, `--sqlite: <sql>` one only SQLite gets
//!   (`--pg:` or `--sqlite:` alone: an empty line);
//! - in any other line `{int}` is a 64-bit integer (`BIGINT` / `INTEGER`), `{real}` a double
//!   (`DOUBLE PRECISION` / `REAL`), `{serial}` an auto-increment key (`BIGSERIAL PRIMARY KEY`
//!   / `INTEGER PRIMARY KEY AUTOINCREMENT`), `{without_rowid}` SQLite's ` WITHOUT ROWID`
//!   (nothing on PostgreSQL).
//!
//! A migration that has been released is never edited: the rendered text is what databases
//! recorded the checksum of (the test below pins every checksum). A change is a new template
//! and a new row in [`MIGRATIONS`].

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::error::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn tag(self) -> &'static str {
        match self {
            Backend::Postgres => "--pg:",
            Backend::Sqlite => "--sqlite:",
        }
    }

    fn other(self) -> Backend {
        match self {
            Backend::Postgres => Backend::Sqlite,
            Backend::Sqlite => Backend::Postgres,
        }
    }

    /// What each type token of a template is on this backend.
    fn tokens(self) -> [(&'static str, &'static str); 4] {
        match self {
            Backend::Postgres => [
                ("{serial}", "BIGSERIAL PRIMARY KEY"),
                ("{real}", "DOUBLE PRECISION"),
                ("{int}", "BIGINT"),
                ("{without_rowid}", ""),
            ],
            Backend::Sqlite => [
                ("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT"),
                ("{real}", "REAL"),
                ("{int}", "INTEGER"),
                ("{without_rowid}", " WITHOUT ROWID"),
            ],
        }
    }
}

/// One schema change: its description, its version on PostgreSQL and on SQLite (the two
/// numbered their first changes in different orders), and its template.
struct Change {
    description: &'static str,
    postgres: i64,
    sqlite: i64,
    template: &'static str,
}

impl Change {
    const fn new(
        description: &'static str,
        postgres: i64,
        sqlite: i64,
        template: &'static str,
    ) -> Self {
        Self {
            description,
            postgres,
            sqlite,
            template,
        }
    }
}

/// Every schema change in order: (description, PostgreSQL version, SQLite version, template).
const MIGRATIONS: &[Change] = &[
    Change::new("tasks", 1, 1, include_str!("../schema/tasks.sql")),
    Change::new(
        "arm instances",
        2,
        3,
        include_str!("../schema/arm_instances.sql"),
    ),
    Change::new("task trace", 3, 4, include_str!("../schema/task_trace.sql")),
    Change::new("knowledge", 4, 2, include_str!("../schema/knowledge.sql")),
    Change::new("api keys", 5, 5, include_str!("../schema/api_keys.sql")),
    Change::new("audit log", 6, 6, include_str!("../schema/audit_log.sql")),
    Change::new(
        "plan in its unit",
        7,
        7,
        include_str!("../schema/plan_in_its_unit.sql"),
    ),
];

/// `template` as `backend` runs it.
fn render(template: &str, backend: Backend) -> String {
    let mut sql = String::with_capacity(template.len());
    for line in template.lines() {
        let line = if let Some(own) = line.strip_prefix(backend.tag()) {
            own.strip_prefix(' ').unwrap_or(own).to_owned()
        } else if line.starts_with(backend.other().tag()) {
            continue;
        } else {
            backend
                .tokens()
                .iter()
                .fold(line.to_owned(), |line, (token, sql)| {
                    line.replace(token, sql)
                })
        };
        sql.push_str(&line);
        sql.push('\n');
    }
    sql
}

fn migrator(backend: Backend) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|change| {
                let version = match backend {
                    Backend::Postgres => change.postgres,
                    Backend::Sqlite => change.sqlite,
                };
                Migration::new(
                    version,
                    Cow::Borrowed(change.description),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(render(change.template, backend)).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Creates or upgrades the schema. On PostgreSQL sqlx holds an advisory lock meanwhile, so
/// several replicas may run it at once.
pub(crate) async fn run<'a, A>(backend: Backend, pool: A) -> Result<(), StoreError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    migrator(backend).run(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SHA-384 of every released migration as databases recorded it (from the files sqlx
    /// read before the schema was written once): a template edit that changes what either
    /// backend runs fails here, not on a user's database.
    #[test]
    fn released_migrations_keep_their_checksums() {
        let pinned: [(Backend, i64, &str); 14] = [
            (
                Backend::Postgres,
                1,
                "431934db4d6a58c35397446ea30e8dcab0a31573a944abdca99a9ccc9668fd037cb1e56c2a747b563103547fc6aa8410",
            ),
            (
                Backend::Postgres,
                2,
                "31a12b5602e104407e3f16400bfe91e7ec0fd9c1f9aff45612b73da4402c5cc30ee16ba06a1d315e971467bc99d54fe7",
            ),
            (
                Backend::Postgres,
                3,
                "b6c5dce40a514f7bca0ba9b0f5a679e85bc1cceaeef0a6bce3de80ad279e3fb59627c8aa6eb61c22d2e9f5fd70458803",
            ),
            (
                Backend::Postgres,
                4,
                "ecd50c8639e4a7df95b39f094bdaabcae5bd5789b40ed0f5a859f4944df18fd86557a8d56dcc86c62ee90a68f3f159f6",
            ),
            (
                Backend::Postgres,
                5,
                "931aa6dc040640cb7564dbfce4e8fafc92e3dc12f77dd5ade835899753a0a33e65e7b39f048d1ff505640c08cd038fc3",
            ),
            (
                Backend::Postgres,
                6,
                "2ac54d66c05e5f3bac8761f60ab3c35f522611eb498dace7be91f8f2f4b9adcdd79c0e1b0c2e419da450d15049c65e18",
            ),
            (
                Backend::Postgres,
                7,
                "15fefcbf5ddf857626ea7c2a642ccf1a29e3e9242cb5aaf7c260a1e162e8bb527b6c4b938edfcd21e47bae4f3b03ae9f",
            ),
            (
                Backend::Sqlite,
                1,
                "3ddccaa7fda4d451acd513f81d50a8d06998204a6bf47cb0b091ec4f6680e15f98d17f3309b3a0326cbef7499becf044",
            ),
            (
                Backend::Sqlite,
                2,
                "3487e331aa957e74575d4fc233bf37f5d383b98d653698f2f6b34e25cac9919eb5a90fffc1d503d13013384f39df64ee",
            ),
            (
                Backend::Sqlite,
                3,
                "7414e40915fcab00609f9e6c3af08b82b259a45adb0029589b1e7f30ad0f96fd174dc7c0137d709b84074856dbf6c391",
            ),
            (
                Backend::Sqlite,
                4,
                "b6c5dce40a514f7bca0ba9b0f5a679e85bc1cceaeef0a6bce3de80ad279e3fb59627c8aa6eb61c22d2e9f5fd70458803",
            ),
            (
                Backend::Sqlite,
                5,
                "525eba2690a2dd7439a3c084c24ddcbcd07532be9c5e795d06adf7a57dbe5d0cfce9d75512c42360f64c9e0691ff2437",
            ),
            (
                Backend::Sqlite,
                6,
                "95509f7c1e7f9fd211ffad1b02124f2c5b7114bc50bfbbfbc3bf4486833659b83985315fcfd5a8ba7b7ea736147b3a29",
            ),
            (
                Backend::Sqlite,
                7,
                "15fefcbf5ddf857626ea7c2a642ccf1a29e3e9242cb5aaf7c260a1e162e8bb527b6c4b938edfcd21e47bae4f3b03ae9f",
            ),
        ];
        for backend in [Backend::Postgres, Backend::Sqlite] {
            let migrator = migrator(backend);
            let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
            assert_eq!(versions, (1..=7).collect::<Vec<_>>(), "{backend:?}");
            for migration in migrator.iter() {
                let (_, _, expected) = pinned
                    .iter()
                    .find(|(b, v, _)| *b == backend && *v == migration.version)
                    .unwrap();
                assert_eq!(
                    hex(&migration.checksum),
                    *expected,
                    "{backend:?} migration {} ({}) changed:\n{}",
                    migration.version,
                    migration.description,
                    migration.sql.as_str()
                );
            }
        }
    }

    #[test]
    fn templates_render_lines_and_tokens_per_backend() {
        let template = "CREATE TABLE t (\n    id {serial},\n    n  {int} NOT NULL,\n--pg:     v  BYTEA,\n--sqlite:     v  BLOB,\n    x  {real}\n){without_rowid};\n--sqlite:\n";
        assert_eq!(
            render(template, Backend::Postgres),
            "CREATE TABLE t (\n    id BIGSERIAL PRIMARY KEY,\n    n  BIGINT NOT NULL,\n    v  BYTEA,\n    x  DOUBLE PRECISION\n);\n"
        );
        assert_eq!(
            render(template, Backend::Sqlite),
            "CREATE TABLE t (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n    n  INTEGER NOT NULL,\n    v  BLOB,\n    x  REAL\n) WITHOUT ROWID;\n\n"
        );
        // Braces that are not tokens are SQL.
        assert_eq!(
            render("payload TEXT DEFAULT '{}'\n", Backend::Sqlite),
            "payload TEXT DEFAULT '{}'\n"
        );
    }
}

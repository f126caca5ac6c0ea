//! The SQLite and PostgreSQL migrations describe the same schema: the same tables, the
//! same columns with the same kind of type and nullability, the same primary keys,
//! foreign keys (with their `ON DELETE` action), unique constraints, indexes and checks.
//!
//! Each backend has its own migration files, so a column added to one and forgotten in
//! the other would otherwise surface only as a runtime error on the backend nobody ran.
//! Both schemas are read back from the database catalogues after the migrations ran and
//! reduced to one backend-neutral description, which must be equal.

use crate::support::{Backend, TestDb};
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};

/// One column: its type class, whether it may be null, and whether it is in the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    kind: &'static str,
    nullable: bool,
    primary_key: bool,
}

/// One table, in terms both backends share.
#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    columns: BTreeMap<String, Column>,
    /// (columns, referenced table, referenced columns, on delete).
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>, String)>,
    /// The column lists of unique constraints and unique indexes, not the primary key.
    unique: BTreeSet<Vec<String>>,
    /// The column lists of the other indexes.
    indexes: BTreeSet<Vec<String>>,
    /// For each check constraint, the columns it reads.
    checks: BTreeSet<Vec<String>>,
}

type Schema = BTreeMap<String, Table>;

/// An index key that is an expression, not a column: both backends name it so (the
/// expression's text differs between dialects; partial-index predicates are not compared).
const EXPRESSION: &str = "<expression>";

fn sqlite_kind(declared: &str) -> &'static str {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" | "BIGINT" | "INT" => "integer",
        "TEXT" => "text",
        "BLOB" => "bytes",
        "BOOLEAN" => "boolean",
        "REAL" | "DOUBLE" => "real",
        other => panic!("sqlite column type {other} has no class in this test; add it"),
    }
}

fn postgres_kind(data_type: &str) -> &'static str {
    match data_type {
        "bigint" | "integer" | "smallint" => "integer",
        "text" | "character varying" => "text",
        "bytea" => "bytes",
        "boolean" => "boolean",
        "double precision" | "real" => "real",
        other => panic!("postgres column type {other} has no class in this test; add it"),
    }
}

/// The text of each `CHECK (...)` in a `CREATE TABLE` statement.
fn check_expressions(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = upper[from..].find("CHECK") {
        let start = from + at + "CHECK".len();
        let Some(open) = sql[start..].find('(') else { break };
        let mut depth = 0;
        let mut end = start + open;
        for (i, c) in sql[start + open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push(sql[start + open + 1..end].to_string());
        from = end;
    }
    out
}

/// The columns of `columns` that `expression` names, as whole words.
fn referenced<'a>(expression: &str, columns: impl Iterator<Item = &'a String>) -> Vec<String> {
    let words: BTreeSet<&str> = expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let mut out: Vec<String> = columns.filter(|c| words.contains(c.as_str())).cloned().collect();
    out.sort();
    out
}

async fn sqlite_schema(url: &str) -> Schema {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table'
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name, sql) in tables {
        let mut table = Table::default();
        for row in sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)")
            .bind(&name)
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            let primary_key = row.get::<i64, _>("pk") > 0;
            table.columns.insert(
                row.get("name"),
                Column {
                    kind: sqlite_kind(&row.get::<String, _>("type")),
                    // A primary key column is never null on either backend, whatever the
                    // pragma says of SQLite's rowid alias.
                    nullable: row.get::<i64, _>("notnull") == 0 && !primary_key,
                    primary_key,
                },
            );
        }
        let mut foreign: BTreeMap<i64, (Vec<String>, String, Vec<String>, String)> = BTreeMap::new();
        for row in sqlx::query(
            "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(&pool)
        .await
        .unwrap()
        {
            let entry = foreign.entry(row.get("id")).or_insert_with(|| {
                (
                    Vec::new(),
                    row.get("table"),
                    Vec::new(),
                    row.get::<String, _>("on_delete"),
                )
            });
            entry.0.push(row.get("from"));
            // A reference without a column list means the parent's primary key.
            entry
                .2
                .push(row.get::<Option<String>, _>("to").unwrap_or_else(|| "id".into()));
        }
        table.foreign_keys = foreign.into_values().collect();
        for row in sqlx::query("SELECT name, \"unique\", origin FROM pragma_index_list(?)")
            .bind(&name)
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            if row.get::<String, _>("origin") == "pk" {
                continue;
            }
            let columns: Vec<String> =
                sqlx::query_scalar::<_, Option<String>>("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(row.get::<String, _>("name"))
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|name| name.unwrap_or_else(|| EXPRESSION.into()))
                    .collect();
            if row.get::<i64, _>("unique") == 1 {
                table.unique.insert(columns);
            } else {
                table.indexes.insert(columns);
            }
        }
        table.checks = check_expressions(&sql)
            .iter()
            .map(|e| referenced(e, table.columns.keys()))
            .collect();
        schema.insert(name, table);
    }
    pool.close().await;
    schema
}

async fn postgres_schema(url: &str) -> Schema {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut schema = Schema::new();
    for row in sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d, is_nullable::text AS n
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx\\_%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        schema.entry(row.get("t")).or_default().columns.insert(
            row.get("c"),
            Column {
                kind: postgres_kind(&row.get::<String, _>("d")),
                nullable: row.get::<String, _>("n") == "YES",
                primary_key: false,
            },
        );
    }
    // Constraints: the columns of each, in key order, and for foreign keys the parent's.
    let constraints = sqlx::query(
        "SELECT c.conrelid::regclass::text AS t, c.contype::text AS kind,
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
                c.confrelid::regclass::text AS parent,
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS parent_cols,
                c.confdeltype::text AS on_delete
         FROM pg_constraint c JOIN pg_namespace s ON s.oid = c.connamespace
         WHERE s.nspname = 'public' AND c.conrelid <> 0",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for row in constraints {
        let Some(table) = schema.get_mut(&row.get::<String, _>("t")) else {
            continue;
        };
        let mut cols: Vec<String> = row.get("cols");
        match row.get::<String, _>("kind").as_str() {
            "p" => {
                for c in &cols {
                    if let Some(column) = table.columns.get_mut(c) {
                        column.primary_key = true;
                    }
                }
            }
            "f" => {
                let on_delete = match row.get::<String, _>("on_delete").as_str() {
                    "c" => "CASCADE",
                    "n" => "SET NULL",
                    "d" => "SET DEFAULT",
                    "r" => "RESTRICT",
                    _ => "NO ACTION",
                };
                table
                    .foreign_keys
                    .insert((cols, row.get("parent"), row.get("parent_cols"), on_delete.into()));
            }
            "c" => {
                cols.sort();
                table.checks.insert(cols);
            }
            // Unique constraints are read below with the unique indexes that back them.
            _ => {}
        }
    }
    for row in sqlx::query(
        "SELECT t.relname::text AS t, x.indisunique AS is_unique,
                ARRAY(SELECT COALESCE(a.attname::text, '<expression>') FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, i)
                      LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n ORDER BY k.i) AS cols
         FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace s ON s.oid = t.relnamespace
         WHERE s.nspname = 'public' AND NOT x.indisprimary",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        let Some(table) = schema.get_mut(&row.get::<String, _>("t")) else {
            continue;
        };
        let cols: Vec<String> = row.get("cols");
        if row.get::<bool, _>("is_unique") {
            table.unique.insert(cols);
        } else {
            table.indexes.insert(cols);
        }
    }
    pool.close().await;
    schema
}

#[tokio::test]
async fn sqlite_and_postgres_schemas_match() {
    let Some(pg) = TestDb::fresh(Backend::Postgres).await else {
        return;
    };
    let sqlite = TestDb::fresh(Backend::Sqlite).await.unwrap();
    // Opening a store runs its backend's migrations.
    pg.open("schema").await.close().await;
    sqlite.open("schema").await.close().await;
    let lite = sqlite_schema(&sqlite.url).await;
    let post = postgres_schema(&pg.url).await;
    pg.cleanup().await;
    assert!(
        lite.len() > 10,
        "the sqlite schema has too few tables to be real: {lite:?}"
    );
    let names = |s: &Schema| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&lite), names(&post), "the two schemas have different tables");
    for (name, table) in &lite {
        let other = &post[name];
        assert_eq!(
            table.columns, other.columns,
            "columns of `{name}`: sqlite, then postgres"
        );
        assert_eq!(
            table.foreign_keys, other.foreign_keys,
            "foreign keys of `{name}`: sqlite, then postgres"
        );
        assert_eq!(
            table.unique, other.unique,
            "unique constraints of `{name}`: sqlite, then postgres"
        );
        assert_eq!(
            table.indexes, other.indexes,
            "indexes of `{name}`: sqlite, then postgres"
        );
        assert_eq!(table.checks, other.checks, "checks of `{name}`: sqlite, then postgres");
    }
}

#[test]
fn check_expressions_are_found_with_nested_parentheses() {
    let sql = "CREATE TABLE t (a INTEGER CHECK (a IN (1, 2)), b TEXT, CHECK (length(b) > 0 AND a > 0))";
    assert_eq!(check_expressions(sql), ["a IN (1, 2)", "length(b) > 0 AND a > 0"]);
    let columns = ["a".to_string(), "b".to_string(), "ab".to_string()];
    assert_eq!(referenced("length(b) > 0 AND a > 0", columns.iter()), ["a", "b"]);
}

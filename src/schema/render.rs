//! Rendering the model into a dialect's target script (`sql_scripts/update_target_gim_db_<dialect>.sql`).
//!
//! The checked-in scripts are this renderer's output; a unit test fails when they differ (run it with
//! `GIM_EXPORT_BLESS=1` to rewrite them after changing the model).

use std::fmt::Write as _;

use super::{GimTable, Model};
use crate::db::Dialect;

/// Key words that cannot be a bare column or table name in PostgreSQL or SQLite.
const RESERVED: &[&str] = &[
    "abort",
    "action",
    "add",
    "after",
    "all",
    "alter",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "attach",
    "autoincrement",
    "before",
    "begin",
    "between",
    "both",
    "by",
    "cascade",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "commit",
    "conflict",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "database",
    "default",
    "deferrable",
    "deferred",
    "delete",
    "desc",
    "detach",
    "distinct",
    "do",
    "drop",
    "each",
    "else",
    "end",
    "escape",
    "except",
    "exclusive",
    "exists",
    "explain",
    "fail",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "full",
    "glob",
    "grant",
    "group",
    "having",
    "if",
    "ignore",
    "immediate",
    "in",
    "index",
    "indexed",
    "initially",
    "inner",
    "insert",
    "instead",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "key",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "match",
    "natural",
    "no",
    "not",
    "notnull",
    "null",
    "of",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "placing",
    "plan",
    "pragma",
    "primary",
    "query",
    "raise",
    "recursive",
    "references",
    "regexp",
    "reindex",
    "release",
    "rename",
    "replace",
    "restrict",
    "returning",
    "right",
    "rollback",
    "row",
    "savepoint",
    "select",
    "session_user",
    "set",
    "some",
    "symmetric",
    "table",
    "temp",
    "temporary",
    "then",
    "to",
    "trailing",
    "transaction",
    "trigger",
    "true",
    "union",
    "unique",
    "update",
    "user",
    "using",
    "vacuum",
    "values",
    "variadic",
    "view",
    "virtual",
    "when",
    "where",
    "window",
    "with",
];

/// A plain lower-case identifier as a script writes it: bare, or quoted when it is a key word.
pub fn ident(name: &str) -> String {
    ident_in(name, Dialect::Postgres)
}

/// [`ident`] for `dialect`: MariaDB/MySQL scripts quote every name with backticks (their list of
/// key words differs between servers and versions, and a stock session has no ANSI_QUOTES).
pub fn ident_in(name: &str, dialect: Dialect) -> String {
    if dialect == Dialect::Mysql {
        format!("`{}`", name.replace('`', "``"))
    } else if RESERVED.contains(&name) {
        format!("\"{name}\"")
    } else {
        name.to_string()
    }
}

/// Whether a target keeps `column` of `table` NOT NULL: the primary key, and the mandatory columns of
/// the loader's own tables. Other mandatory GIM columns stay nullable: the export format cannot tell
/// NULL from an empty string, and a table's CSV may lack a column the model has (an older Info Mart).
pub fn not_null(table: &GimTable, column: &str) -> bool {
    table.primary_key.iter().any(|k| k == column)
        || (!table.exported && table.column(column).is_some_and(|c| c.mandatory))
}

/// `CREATE TABLE IF NOT EXISTS` for one table in `dialect`.
pub fn create_table(table: &GimTable, dialect: Dialect) -> String {
    let ident = |n: &str| ident_in(n, dialect);
    let mut out = format!("CREATE TABLE IF NOT EXISTS {} (\n", ident(&table.name));
    for c in &table.columns {
        let name = ident(&c.name);
        let ty = c.sql_type.render(dialect);
        let nn = if not_null(table, &c.name) {
            " NOT NULL"
        } else {
            ""
        };
        let _ = writeln!(out, "    {name:<32} {ty}{nn},");
    }
    let key: Vec<String> = table.primary_key.iter().map(|k| ident(k)).collect();
    let _ = write!(
        out,
        "    PRIMARY KEY ({})\n){};\n",
        key.join(", "),
        crate::target::table_options(dialect)
    );
    out
}

/// The target script for `dialect`: every exported table of the model, then the loader's own tables.
pub fn target_script(model: &Model, loader: &Model, dialect: Dialect) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- Target warehouse schema ({}) for the Genesys Info Mart tables that are exported, and the",
        match dialect {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Sqlite => "SQLite",
            Dialect::Mysql => "MariaDB/MySQL",
        }
    );
    out.push_str(
        "-- loader's own tables. GENERATED by gim-export from its GIM model (src/schema/pdm/*.toml): do not\n\
         -- edit; `gim-export target-schema --dialect DIALECT` prints it, `--apply URL` runs it.\n\
         -- Idempotent: on an empty database it creates everything; on an older target it adds the missing\n\
         -- tables and columns and never drops or rewrites data.\n",
    );
    match dialect {
        Dialect::Postgres => out.push_str(
            "-- Custom user-data tables (IRF_USER_DATA_CUST_n, USER_DATA_CUST_DIM_n) beyond _1 and tables the\n\
             -- model does not know are created by the loader from the CSV header (load --schema-changes).\n\n\
             SET client_min_messages = warning;\n",
        ),
        Dialect::Mysql => out.push_str(
            "-- MySQL has no ADD COLUMN IF NOT EXISTS: `--apply` and the loader compare with the catalog and add\n\
             -- missing columns themselves. InnoDB, utf8mb4 with a binary collation (keys compare as in\n\
             -- PostgreSQL). Custom user-data tables (IRF_USER_DATA_CUST_n, USER_DATA_CUST_DIM_n) beyond _1 and\n\
             -- tables the model does not know are created by the loader from the CSV header.\n",
        ),
        Dialect::Sqlite => out.push_str(
            "-- SQLite has no ADD COLUMN IF NOT EXISTS: `--apply` and the loader compare with the catalog and add\n\
             -- missing columns themselves. Custom user-data tables (IRF_USER_DATA_CUST_n, USER_DATA_CUST_DIM_n)\n\
             -- beyond _1 and tables the model does not know are created by the loader from the CSV header.\n",
        ),
    }
    let tables = model.exported().chain(loader.tables.iter());
    for t in tables {
        out.push('\n');
        let areas = if t.areas.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.areas.join(", "))
        };
        let part = if t.partitioned {
            "; partitioned in a partitioned Info Mart"
        } else {
            ""
        };
        let _ = writeln!(out, "-- {}{areas}{part}", t.name.to_ascii_uppercase());
        for s in &t.sources {
            let _ = writeln!(out, "--   from {s}");
        }
        out.push_str(&create_table(t, dialect));
        if dialect == Dialect::Postgres {
            for c in t
                .columns
                .iter()
                .filter(|c| !t.primary_key.contains(&c.name))
            {
                let _ = writeln!(
                    out,
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {};",
                    ident(&t.name),
                    ident(&c.name),
                    c.sql_type.postgres()
                );
            }
        }
    }
    out
}

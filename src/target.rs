//! The target warehouse schema as the loader sees it: the GIM model's exported tables and the loader's
//! own tables, rendered for a dialect ([`model`]); the checked-in scripts `update_target_gim_db_<dialect>.sql`
//! (rendered from the same model, checked by a test); and the rules for names and custom user-data tables.

use crate::db::Dialect;
use crate::schema::{self, GimTable, SqlType};

/// The target schema scripts, one per dialect (generated from the model; a test keeps them so).
pub const POSTGRES_SCRIPT: &str =
    include_str!("../sql_scripts/update_target_gim_db_postgresql.sql");
pub const SQLITE_SCRIPT: &str = include_str!("../sql_scripts/update_target_gim_db_sqlite.sql");
pub const MYSQL_SCRIPT: &str = include_str!("../sql_scripts/update_target_gim_db_mysql.sql");

/// The loader's ledger table: one row per applied export, written with the data.
pub const LEDGER_TABLE: &str = "gim_export_ledger";
/// Every application of an export, in order: what the target received, and when.
pub const APPLIED_TABLE: &str = "gim_export_applied";
/// The loader's catalog: every table and column it created, adopted or widened.
pub const CATALOG_TABLE: &str = "gim_export_catalog";

pub fn script(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => SQLITE_SCRIPT,
        Dialect::Postgres => POSTGRES_SCRIPT,
        Dialect::Mysql => MYSQL_SCRIPT,
    }
}

/// What follows `CREATE TABLE (...)` in `dialect`: on MariaDB/MySQL, InnoDB (transactions: the ledger
/// commits with the data) and utf8mb4 with a binary collation, so that keys differing only in case or
/// accents stay different rows, as in PostgreSQL and SQLite.
pub fn table_options(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Mysql => " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        Dialect::Sqlite | Dialect::Postgres => "",
    }
}

/// The script for `dialect` as the model renders it today.
pub fn render_script(dialect: Dialect) -> String {
    schema::render::target_script(schema::model(), schema::loader_tables(), dialect)
}

/// A column as the target declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDef {
    /// Lower case.
    pub name: String,
    /// The declared type in the target's dialect, e.g. `numeric(19)` or `VARCHAR(255)`.
    pub sql_type: String,
    /// The model's type.
    pub ty: SqlType,
    pub not_null: bool,
}

/// A table as the target declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDef {
    /// Lower case.
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Lower case, in key order.
    pub primary_key: Vec<String>,
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// A model table in `dialect`.
    pub fn of(t: &GimTable, dialect: Dialect) -> TableDef {
        TableDef {
            name: t.name.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| ColumnDef {
                    name: c.name.clone(),
                    sql_type: c.sql_type.render(dialect),
                    ty: c.sql_type,
                    not_null: schema::render::not_null(t, &c.name),
                })
                .collect(),
            primary_key: t.primary_key.clone(),
        }
    }
}

/// The tables the target script creates: the model's exported tables, then the loader's own.
pub fn model(dialect: Dialect) -> Vec<TableDef> {
    schema::model()
        .exported()
        .chain(schema::loader_tables().tables.iter())
        .map(|t| TableDef::of(t, dialect))
        .collect()
}

/// Any table the model describes (exported or not), in `dialect`.
pub fn model_table(name: &str, dialect: Dialect) -> Option<TableDef> {
    schema::model()
        .table(name)
        .map(|t| TableDef::of(t, dialect))
}

/// The loader's own tables, which no folder may write to.
pub fn is_loader_table(name: &str) -> bool {
    name == LEDGER_TABLE || name == CATALOG_TABLE || name == APPLIED_TABLE
}

/// A table or column name the loader will put into SQL: lower-case letters, digits and `_`, starting
/// with a letter or `_`, at most 63 bytes (PostgreSQL's limit).
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Custom user-data tables: sites add `_2`, `_3`, ... which the loader creates from the CSV header.
pub fn is_custom_user_data_table(name: &str) -> bool {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    numbered("irf_user_data_cust_") || numbered("user_data_cust_dim_")
}

/// The definition of a custom user-data table built from its CSV header: the first column is the
/// primary key; known columns take their type from table `_1` of the same family; the rest are
/// `varchar(1024)` as the family's custom columns are.
pub fn custom_table_from_header(name: &str, header: &[String], dialect: Dialect) -> TableDef {
    let family = if name.starts_with("irf_") {
        "irf_user_data_cust_1"
    } else {
        "user_data_cust_dim_1"
    };
    let template = model_table(family, dialect);
    let key: Vec<String> = header.first().cloned().into_iter().collect();
    TableDef {
        name: name.to_string(),
        columns: header
            .iter()
            .map(|h| {
                let ty = template
                    .as_ref()
                    .and_then(|t| t.column(h))
                    .map(|c| c.ty)
                    .unwrap_or(SqlType::Varchar(1024));
                ColumnDef {
                    name: h.clone(),
                    sql_type: ty.render(dialect),
                    ty,
                    not_null: key.contains(h),
                }
            })
            .collect(),
        primary_key: key,
    }
}

/// `ALTER TABLE ... ADD COLUMN` (nullable: the table may hold rows already).
pub fn add_column_sql(table: &str, column: &str, sql_type: &str) -> String {
    let q = crate::db::quote_ident;
    format!(
        "ALTER TABLE {} ADD COLUMN {} {sql_type}",
        q(table),
        q(column)
    )
}

/// `CREATE TABLE` for a table definition (names must already be plain identifiers; every name is
/// quoted, so a column called `order` is a column).
pub fn create_table_sql(t: &TableDef, dialect: Dialect) -> String {
    let q = crate::db::quote_ident;
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.not_null { " NOT NULL" } else { "" };
            format!("    {} {}{not_null}", q(&c.name), c.sql_type)
        })
        .collect();
    let key: Vec<String> = t.primary_key.iter().map(|k| q(k)).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{},\n    PRIMARY KEY ({})\n){}",
        q(&t.name),
        cols.join(",\n"),
        key.join(", "),
        table_options(dialect)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_scripts_are_what_the_model_renders() {
        for (d, file, checked_in) in [
            (
                Dialect::Postgres,
                "update_target_gim_db_postgresql.sql",
                POSTGRES_SCRIPT,
            ),
            (
                Dialect::Sqlite,
                "update_target_gim_db_sqlite.sql",
                SQLITE_SCRIPT,
            ),
            (
                Dialect::Mysql,
                "update_target_gim_db_mysql.sql",
                MYSQL_SCRIPT,
            ),
        ] {
            let rendered = render_script(d);
            if std::env::var_os("GIM_EXPORT_BLESS").is_some() {
                let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("sql_scripts")
                    .join(file);
                std::fs::write(p, &rendered).unwrap();
                continue;
            }
            assert!(
                rendered == checked_in,
                "sql_scripts/{file} differs from what the GIM model renders: run the tests with GIM_EXPORT_BLESS=1 and commit the script"
            );
        }
    }

    #[test]
    fn the_target_model_has_every_exported_table_with_a_key_and_the_loader_tables() {
        for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::Mysql] {
            let m = model(d);
            let names: Vec<&str> = m.iter().map(|t| t.name.as_str()).collect();
            assert!(names.contains(&"interaction_fact"), "{names:?}");
            assert!(names.contains(&LEDGER_TABLE) && names.contains(&CATALOG_TABLE));
            assert!(!names.contains(&"ctl_audit_log"));
            for t in &m {
                assert!(!t.primary_key.is_empty(), "{}", t.name);
                for k in &t.primary_key {
                    assert!(t.column(k).is_some_and(|c| c.not_null), "{}.{k}", t.name);
                }
            }
        }
        let pg = model(Dialect::Postgres);
        let f = pg.iter().find(|t| t.name == "interaction_fact").unwrap();
        assert_eq!(f.column("subject").unwrap().sql_type, "varchar(1024)");
        assert_eq!(f.column("interaction_id").unwrap().sql_type, "numeric(19)");
        let lite = model(Dialect::Sqlite);
        let f = lite.iter().find(|t| t.name == "interaction_fact").unwrap();
        assert_eq!(f.column("interaction_id").unwrap().sql_type, "INTEGER");
    }

    #[test]
    fn identifiers_and_custom_tables() {
        assert!(is_plain_identifier("interaction_fact"));
        assert!(is_plain_identifier("_x1"));
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "x\"; drop table t; --",
            "Upper",
            "a.b",
        ] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
        assert!(is_custom_user_data_table("irf_user_data_cust_2"));
        assert!(is_custom_user_data_table("user_data_cust_dim_12"));
        assert!(!is_custom_user_data_table("irf_user_data_cust_"));
        assert!(!is_custom_user_data_table("irf_user_data_cust_2x"));
        let header: Vec<String> = [
            "interaction_resource_id",
            "create_audit_key",
            "custom_data_1",
            "new_col",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = custom_table_from_header("irf_user_data_cust_2", &header, Dialect::Postgres);
        assert_eq!(t.primary_key, vec!["interaction_resource_id"]);
        assert_eq!(
            t.column("create_audit_key").unwrap().sql_type,
            "numeric(19)"
        );
        assert_eq!(t.column("new_col").unwrap().sql_type, "varchar(1024)");
        assert!(create_table_sql(&t, Dialect::Postgres)
            .contains("PRIMARY KEY (\"interaction_resource_id\")"));
    }
}

//! The target warehouse schema: what `update_target_gim_db_<dialect>.sql` creates, read back into a model
//! the loader uses to migrate (add missing columns), to create custom user-data tables from a CSV header,
//! and to refuse names that are not plain identifiers.

use crate::db::Dialect;

/// The target schema scripts, one per dialect.
pub const POSTGRES_SCRIPT: &str =
    include_str!("../sql_scripts/update_target_gim_db_postgresql.sql");
pub const SQLITE_SCRIPT: &str = include_str!("../sql_scripts/update_target_gim_db_sqlite.sql");

/// The loader's ledger table: one row per applied export, written with the data.
pub const LEDGER_TABLE: &str = "gim_export_ledger";

pub fn script(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => SQLITE_SCRIPT,
        Dialect::Postgres => POSTGRES_SCRIPT,
    }
}

/// A column as the target script declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDef {
    /// Lower case.
    pub name: String,
    /// The declared type, e.g. `numeric(19)` or `VARCHAR(255)`.
    pub sql_type: String,
}

/// A table as the target script declares it.
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
}

/// The tables the target script creates (parsed from it: the script is the single source of truth).
pub fn model(dialect: Dialect) -> Vec<TableDef> {
    parse_script(script(dialect))
}

/// Reads the `CREATE TABLE IF NOT EXISTS name ( col type ..., ... );` blocks of a script we write.
pub fn parse_script(sql: &str) -> Vec<TableDef> {
    let mut tables = Vec::new();
    let mut current: Option<TableDef> = None;
    for line in sql.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
            let name = rest.trim_end_matches('(').trim().to_ascii_lowercase();
            current = Some(TableDef {
                name,
                columns: Vec::new(),
                primary_key: Vec::new(),
            });
            continue;
        }
        let Some(table) = current.as_mut() else {
            continue;
        };
        if t.starts_with(')') {
            tables.push(current.take().expect("inside a table"));
            continue;
        }
        let t = t.trim_end_matches(',');
        let mut parts = t.splitn(2, char::is_whitespace);
        let (Some(col), Some(rest)) = (parts.next(), parts.next()) else {
            continue;
        };
        let upper = rest.to_ascii_uppercase();
        let end = ["NOT NULL", "DEFAULT", "PRIMARY KEY"]
            .iter()
            .filter_map(|k| upper.find(k))
            .min()
            .unwrap_or(rest.len());
        let name = col.to_ascii_lowercase();
        if upper.contains("PRIMARY KEY") {
            table.primary_key.push(name.clone());
        }
        table.columns.push(ColumnDef {
            name,
            sql_type: rest[..end].trim().to_string(),
        });
    }
    tables
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
/// primary key; known columns take their type from table `_1` of the same family; the rest are text.
pub fn custom_table_from_header(
    name: &str,
    header: &[String],
    model: &[TableDef],
    dialect: Dialect,
) -> TableDef {
    let family = if name.starts_with("irf_") {
        "irf_user_data_cust_1"
    } else {
        "user_data_cust_dim_1"
    };
    let template = model.iter().find(|t| t.name == family);
    let text = match dialect {
        Dialect::Sqlite => "VARCHAR(1024)",
        Dialect::Postgres => "varchar(1024)",
    };
    TableDef {
        name: name.to_string(),
        columns: header
            .iter()
            .map(|h| ColumnDef {
                name: h.clone(),
                sql_type: template
                    .and_then(|t| t.column(h))
                    .map(|c| c.sql_type.clone())
                    .unwrap_or_else(|| text.to_string()),
            })
            .collect(),
        primary_key: header.first().cloned().into_iter().collect(),
    }
}

/// `CREATE TABLE` for a table definition (names must already be plain identifiers).
pub fn create_table_sql(t: &TableDef) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let not_null = if t.primary_key.contains(&c.name) {
                " NOT NULL"
            } else {
                ""
            };
            format!("    {} {}{not_null}", c.name, c.sql_type)
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{},\n    PRIMARY KEY ({})\n)",
        t.name,
        cols.join(",\n"),
        t.primary_key.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_describe_every_exportable_table_with_a_key() {
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let m = model(d);
            let names: Vec<&str> = m.iter().map(|t| t.name.as_str()).collect();
            assert!(names.contains(&"interaction_fact"), "{names:?}");
            assert!(names.contains(&LEDGER_TABLE));
            assert!(!names.contains(&"ctl_audit_log"));
            assert_eq!(m.len(), 16, "{d:?}: {names:?}");
            for t in &m {
                assert_eq!(t.primary_key.len(), 1, "{}", t.name);
            }
            let f = m.iter().find(|t| t.name == "interaction_fact").unwrap();
            assert_eq!(f.columns.len(), 18);
        }
        let pg = model(Dialect::Postgres);
        let f = pg.iter().find(|t| t.name == "interaction_fact").unwrap();
        assert_eq!(f.column("subject").unwrap().sql_type, "varchar(1024)");
        assert_eq!(f.column("interaction_id").unwrap().sql_type, "numeric(19)");
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
        let m = model(Dialect::Postgres);
        let header: Vec<String> = [
            "interaction_resource_id",
            "create_audit_key",
            "custom_data_1",
            "new_col",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = custom_table_from_header("irf_user_data_cust_2", &header, &m, Dialect::Postgres);
        assert_eq!(t.primary_key, vec!["interaction_resource_id"]);
        assert_eq!(
            t.column("create_audit_key").unwrap().sql_type,
            "numeric(19)"
        );
        assert_eq!(t.column("new_col").unwrap().sql_type, "varchar(1024)");
        assert!(create_table_sql(&t).contains("PRIMARY KEY (interaction_resource_id)"));
    }
}

//! The GIM model: one machine-readable description of the Genesys Info Mart tables (names, columns,
//! types, primary keys, whether Genesys exports them, whether they are partitioned, and where each
//! came from), from which every dialect's target script is rendered ([`render`]).
//!
//! The description lives in `src/schema/pdm/*.toml` (format: `pdm/FORMAT.md`), gathered from
//! Genesys's public physical data model pages, plus `simulated.toml`: the columns `gim-export
//! simulate` writes, kept so that targets built before the model existed stay as they were. A table
//! described by several files is their union: the PDM's columns in the PDM's order, then the rest.

pub mod render;
pub mod types;

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub use types::{Inferred, SqlType};

/// A column of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GimColumn {
    /// Lower case.
    pub name: String,
    pub sql_type: SqlType,
    /// The PDM's "mandatory" flag. Only primary-key and audit-key columns become NOT NULL in a target:
    /// the export format cannot tell NULL from an empty string, so an empty mandatory text would not load.
    pub mandatory: bool,
}

/// A table of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GimTable {
    /// Lower case.
    pub name: String,
    /// The PDM's subject areas.
    pub areas: Vec<String>,
    /// Job_ExportGIM exports it (the PDM's "Data Export" flag): the target scripts create these.
    pub exported: bool,
    /// Partitioned in a partitioned Info Mart.
    pub partitioned: bool,
    /// Where the description came from: PDM page addresses, or `gim-export simulate`.
    pub sources: Vec<String>,
    /// The column list is known to be incomplete (a PDM page only partly read).
    pub partial: bool,
    pub columns: Vec<GimColumn>,
    /// Lower case, in key order.
    pub primary_key: Vec<String>,
}

impl GimTable {
    pub fn column(&self, name: &str) -> Option<&GimColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The whole model, tables sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub tables: Vec<GimTable>,
}

impl Model {
    pub fn table(&self, name: &str) -> Option<&GimTable> {
        self.tables
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tables[i])
    }
    /// The tables the target scripts create: those Genesys exports.
    pub fn exported(&self) -> impl Iterator<Item = &GimTable> {
        self.tables.iter().filter(|t| t.exported)
    }
}

/// The model's source files, in merge order (the PDM first, the simulator's columns last).
const SOURCES: &[(&str, &str)] = &[
    ("dimensions.toml", include_str!("pdm/dimensions.toml")),
    ("interaction.toml", include_str!("pdm/interaction.toml")),
    (
        "resource_state.toml",
        include_str!("pdm/resource_state.toml"),
    ),
    ("outbound.toml", include_str!("pdm/outbound.toml")),
    ("library.toml", include_str!("pdm/library.toml")),
    ("simulated.toml", include_str!("pdm/simulated.toml")),
];

/// The GIM model (parsed once).
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        build(SOURCES).expect("the built-in GIM model is valid (a unit test checks)")
    })
}

/// The loader's own tables: the ledger (one row per applied export, written with its data), the
/// history of every application (a folder applied again after a restart keeps both), and the
/// catalog of every table and column the loader created, adopted or widened.
const LOADER_TABLES: &str = r#"
[[table]]
name = "GIM_EXPORT_LEDGER"
exported = false
source = "gim-export load"
columns = [
  "FOLDER varchar(100) PK",
  "HWM_FROM_AUDIT_KEY numeric(19) M",
  "HWM_FROM_CREATED_TS bigint M",
  "HWM_TO_AUDIT_KEY numeric(19) M",
  "HWM_TO_CREATED_TS bigint M",
  "MAX_DATA_TS bigint M",
  "ROW_COUNTS text M",
  "LOADED_AT timestamp M",
  "ZIP_SHA1 varchar(40)",
  "CHAIN_GENERATION integer",
  "APPLY_SEQ bigint",
  "SCHEMA_CHANGES text",
  "REMOVED_COUNTS text",
  "RESTART_AFTER_AUDIT_KEY numeric(19)",
]

[[table]]
name = "GIM_EXPORT_APPLIED"
exported = false
source = "gim-export load"
columns = [
  "APPLY_SEQ bigint PK",
  "FOLDER varchar(100) M",
  "CHAIN_GENERATION integer",
  "HWM_FROM_AUDIT_KEY numeric(19) M",
  "HWM_TO_AUDIT_KEY numeric(19) M",
  "ROW_COUNTS text M",
  "REMOVED_COUNTS text",
  "ZIP_SHA1 varchar(40)",
  "LOADED_AT timestamp M",
]

[[table]]
name = "GIM_EXPORT_CATALOG"
exported = false
source = "gim-export load"
columns = [
  "TABLE_NAME varchar(63) PK",
  "COLUMN_NAME varchar(63) PK",
  "SQL_TYPE varchar(64) M",
  "ORIGIN varchar(16) M",
  "FOLDER varchar(100)",
]
"#;

/// The loader's ledger and catalog tables.
pub fn loader_tables() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        build(&[("loader tables", LOADER_TABLES)]).expect("the loader tables are valid")
    })
}

/// The tables and columns `gim-export simulate` creates in a source (a subset of [`model`]).
pub fn simulated() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let sim: Vec<(&str, &str)> = SOURCES
            .iter()
            .copied()
            .filter(|(f, _)| *f == "simulated.toml")
            .collect();
        build(&sim).expect("the built-in GIM model is valid (a unit test checks)")
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    table: Vec<FileTable>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    name: String,
    #[serde(default)]
    areas: Vec<String>,
    #[serde(default)]
    exported: Option<bool>,
    #[serde(default)]
    partitioned: Option<bool>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    partial: bool,
    #[serde(default)]
    note: Option<String>,
    columns: Vec<String>,
}

/// Parses and merges model files; errors name the file, table and column.
pub fn build(files: &[(&str, &str)]) -> Result<Model, String> {
    let mut tables: BTreeMap<String, GimTable> = BTreeMap::new();
    for (file, text) in files {
        let doc: FileDoc = toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        for t in doc.table {
            let _ = &t.note;
            let name = t.name.trim().to_ascii_lowercase();
            if !crate::target::is_plain_identifier(&name) {
                return Err(format!(
                    "{file}: table {:?} is not a plain identifier",
                    t.name
                ));
            }
            let mut columns = Vec::new();
            let mut key = Vec::new();
            for line in &t.columns {
                let where_ = || format!("{file}: table {}, column {line:?}", t.name);
                let mut words = line.split_whitespace();
                let (Some(col), Some(ty)) = (words.next(), words.next()) else {
                    return Err(format!("{}: expected NAME TYPE [PK] [M]", where_()));
                };
                let col = col.to_ascii_lowercase();
                if !crate::target::is_plain_identifier(&col) {
                    return Err(format!("{}: not a plain identifier", where_()));
                }
                let sql_type: SqlType = ty.parse().map_err(|e| format!("{}: {e}", where_()))?;
                let mut mandatory = false;
                for flag in words {
                    match flag {
                        "PK" => {
                            key.push(col.clone());
                            mandatory = true;
                        }
                        "M" => mandatory = true,
                        other => return Err(format!("{}: unknown flag {other:?}", where_())),
                    }
                }
                if columns.iter().any(|c: &GimColumn| c.name == col) {
                    return Err(format!("{}: listed twice", where_()));
                }
                columns.push(GimColumn {
                    name: col,
                    sql_type,
                    mandatory,
                });
            }
            match tables.get_mut(&name) {
                None => {
                    tables.insert(
                        name.clone(),
                        GimTable {
                            name,
                            areas: t.areas,
                            exported: t.exported.unwrap_or(true),
                            partitioned: t.partitioned.unwrap_or(false),
                            sources: t.source.into_iter().collect(),
                            partial: t.partial,
                            columns,
                            primary_key: key,
                        },
                    );
                }
                Some(have) => merge(
                    have,
                    t.areas,
                    t.exported,
                    t.partitioned,
                    t.source,
                    columns,
                    key,
                ),
            }
        }
    }
    // A table the PDM pages named but whose key they did not show is left to the loader's schema
    // evolution, like any table the model does not know.
    // Likewise a partly read exported table whose audit keys were not seen.
    tables.retain(|_, t| {
        !(t.partial
            && (t.primary_key.is_empty() || (t.exported && t.column("create_audit_key").is_none())))
    });
    for t in tables.values() {
        if t.primary_key.is_empty() {
            return Err(format!(
                "table {} has no primary key in any model file",
                t.name
            ));
        }
        if t.column("create_audit_key").is_none() && t.exported {
            return Err(format!(
                "table {} is marked exported but has no CREATE_AUDIT_KEY column",
                t.name
            ));
        }
    }
    Ok(Model {
        tables: tables.into_values().collect(),
    })
}

/// A later file's description of a table already described: new columns are appended; a column both
/// describe keeps the first type, except that the longer of two varchar lengths wins (a value the
/// simulator writes must fit).
fn merge(
    have: &mut GimTable,
    areas: Vec<String>,
    exported: Option<bool>,
    partitioned: Option<bool>,
    source: Option<String>,
    columns: Vec<GimColumn>,
    key: Vec<String>,
) {
    for a in areas {
        if !have.areas.contains(&a) {
            have.areas.push(a);
        }
    }
    if let Some(e) = exported {
        have.exported |= e;
    }
    if let Some(p) = partitioned {
        have.partitioned |= p;
    }
    have.sources.extend(source);
    for c in columns {
        match have.columns.iter_mut().find(|h| h.name == c.name) {
            None => have.columns.push(c),
            Some(h) => {
                if let (SqlType::Varchar(a), SqlType::Varchar(b)) = (h.sql_type, c.sql_type) {
                    h.sql_type = SqlType::Varchar(a.max(b));
                }
            }
        }
    }
    if have.primary_key.is_empty() {
        have.primary_key = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_model_is_valid_and_covers_the_simulated_tables() {
        let m = build(SOURCES).unwrap();
        assert!(m.tables.len() >= 40, "{}", m.tables.len());
        for t in &simulated().tables {
            let full = m
                .table(&t.name)
                .unwrap_or_else(|| panic!("{} missing", t.name));
            assert!(full.exported, "{}", t.name);
            for c in &t.columns {
                assert!(full.column(&c.name).is_some(), "{}.{}", t.name, c.name);
            }
        }
        let f = m.table("interaction_fact").unwrap();
        assert_eq!(f.primary_key, vec!["interaction_id"]);
        assert_eq!(
            f.column("interaction_id").unwrap().sql_type,
            SqlType::Numeric(Some((19, 0)))
        );
    }

    #[test]
    fn the_simulators_source_schema_is_the_simulated_part_of_the_model() {
        // sql_scripts/make_gim_postgresql.sql, the schema `simulate` creates, against simulated.toml.
        let script = include_str!("../../sql_scripts/make_gim_postgresql.sql");
        let mut seen = 0;
        for block in script.split("CREATE TABLE IF NOT EXISTS ").skip(1) {
            let (name, rest) = block.split_once(" (").unwrap();
            if name == "ctl_audit_log" {
                continue;
            }
            let body = &rest[..rest.find("\n);").unwrap()];
            let t = simulated()
                .table(name)
                .unwrap_or_else(|| panic!("{name} is not in simulated.toml"));
            let cols: Vec<(String, SqlType)> = body
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let mut w = l.split_whitespace();
                    let c = w.next().unwrap().to_string();
                    (c, w.next().unwrap().trim_end_matches(',').parse().unwrap())
                })
                .collect();
            let model: Vec<(String, SqlType)> = t
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.sql_type))
                .collect();
            assert_eq!(cols, model, "{name}");
            seen += 1;
        }
        assert_eq!(seen, simulated().tables.len());
    }

    #[test]
    fn merging_keeps_the_first_type_and_the_longer_varchar() {
        let a = r#"
[[table]]
name = "X_FACT"
areas = ["A"]
partitioned = true
columns = ["ID numeric(19) PK M", "NAME varchar(10)", "CREATE_AUDIT_KEY numeric(19) M"]
"#;
        let b = r#"
[[table]]
name = "x_fact"
columns = ["ID integer PK", "NAME varchar(40)", "EXTRA text"]
"#;
        let m = build(&[("a.toml", a), ("b.toml", b)]).unwrap();
        let t = m.table("x_fact").unwrap();
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "create_audit_key", "extra"]);
        assert_eq!(
            t.column("id").unwrap().sql_type,
            SqlType::Numeric(Some((19, 0)))
        );
        assert_eq!(t.column("name").unwrap().sql_type, SqlType::Varchar(40));
        assert!(t.partitioned && t.exported);
        let bad = build(&[(
            "c.toml",
            "[[table]]\nname = \"Y\"\ncolumns = [\"ID wat PK\"]\n",
        )])
        .unwrap_err();
        assert!(
            bad.contains("c.toml") && bad.contains("Y") && bad.contains("wat"),
            "{bad}"
        );
    }
}

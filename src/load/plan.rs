//! Planning one folder's load: which target table each CSV goes to, and what the target's schema needs
//! first (tables to create, columns to add or widen) under the `--schema-changes` policy.
//!
//! Pure given its inputs (the folder's CSV headers, the target's catalog, the GIM model and, for
//! columns the model does not know, the classes of the values the folder holds), so that the whole
//! plan is known and refused or accepted before anything is written; the schema changes then run in
//! the folder's own transaction, with its rows and its ledger row.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::db::{quote_ident, Dialect, Table};
use crate::schema::{Inferred, SqlType};
use crate::target::{self, ColumnDef, TableDef};

/// `load --schema-changes`: what the loader may do to the target's schema beyond the GIM model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchemaPolicy {
    /// Create tables and add columns the model does not know (typed from the folder's values), and
    /// widen such columns when a later folder needs it.
    #[default]
    Evolve,
    /// Refuse a folder that needs any of that (what the model describes is still created).
    Freeze,
}

impl std::str::FromStr for SchemaPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "evolve" => Ok(SchemaPolicy::Evolve),
            "freeze" => Ok(SchemaPolicy::Freeze),
            other => Err(format!("{other:?}: expected evolve or freeze")),
        }
    }
}

impl SchemaPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaPolicy::Evolve => "evolve",
            SchemaPolicy::Freeze => "freeze",
        }
    }
}

/// One CSV of a folder, as its header says.
#[derive(Clone, Debug)]
pub struct CsvEntry {
    /// The entry's name in the zip, as written (any case).
    pub entry: String,
    /// Lower case.
    pub table: String,
    /// Lower case, in file order.
    pub header: Vec<String>,
    /// The checksum its `.sha1` names.
    pub sha1: String,
    /// The primary key the folder's extracted.xml gives for it (lower case), if any.
    pub xml_key: Vec<String>,
    /// The row count the folder's extracted.xml declares for it, if any.
    pub xml_rows: Option<u64>,
}

/// What applying one table needs.
#[derive(Clone, Debug)]
pub struct TablePlan {
    pub table: String,
    /// The zip entry holding its CSV.
    pub entry: String,
    /// The CSV's columns, in file order (validated, lower case).
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// The column that orders duplicates of one key (greatest wins): update, else create audit key.
    pub version_column: Option<String>,
    pub expected_sha1: String,
    /// A full resync: after the merge, delete the target rows whose key is not in the CSV.
    pub remove_missing: bool,
    /// The target's declared type of each column (as `columns`), after this folder's changes.
    pub column_types: Vec<String>,
    /// The row count the folder's extracted.xml declares for this CSV, if any.
    pub declared_rows: Option<u64>,
}

/// A row of the loader's catalog (`gim_export_catalog`): a table (`column` empty) or column the loader
/// created, added, inferred or widened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogRow {
    pub table: String,
    pub column: String,
    pub sql_type: String,
    /// `model` (as the GIM model describes it), `header` (a custom user-data table from its CSV
    /// header), `inferred` (typed from a folder's values), `widened`.
    pub origin: &'static str,
}

/// The plan for one folder.
#[derive(Clone, Debug, Default)]
pub struct FolderPlan {
    /// Schema statements, run first in the folder's transaction.
    pub ddl: Vec<String>,
    /// What they change, for people: printed, logged, and kept in the folder's ledger row.
    pub changes: Vec<String>,
    pub catalog: Vec<CatalogRow>,
    pub tables: Vec<TablePlan>,
    /// A full resync may remove at most this share of a table's rows (`--max-resync-removal`).
    pub max_removal_percent: u32,
    pub limits: super::LoadLimits,
    /// A repair folder's deletions: run after the merges, in the folder's transaction.
    pub deletes: Vec<DeletePlan>,
}

/// Keys a repair folder deletes from one table (its `<table>.delete.csv`), as statements of at most
/// [`super::DELETE_BATCH`] keys each.
#[derive(Clone, Debug)]
pub struct DeletePlan {
    pub table: String,
    pub keys: u64,
    pub statements: Vec<String>,
}

/// Why a CSV cannot be loaded (the caller adds the folder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub table: String,
    pub reason: String,
}

fn refuse(table: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        table: table.to_string(),
        reason: reason.into(),
    }
}

/// For each listed column of a CSV, the widest class of its values (`None`: no value at all).
pub type ValueClasses = BTreeMap<String, Option<Inferred>>;

/// The columns of `entry` whose values must be classified before planning: those the model does not
/// type, of tables that exist or would be created. The caller reads them from the CSV.
pub fn columns_to_classify(
    entry: &CsvEntry,
    existing: Option<&Table>,
    dialect: Dialect,
) -> Vec<String> {
    let model = target::model_table(&entry.table, dialect);
    let custom = target::is_custom_user_data_table(&entry.table);
    if custom && existing.is_none() {
        return Vec::new(); // created from the header with the family's types
    }
    entry
        .header
        .iter()
        .filter(|c| model.as_ref().and_then(|m| m.column(c)).is_none())
        .filter(|c| {
            match existing.and_then(|t| t.column(c)) {
                // Present: check only a column the loader could widen.
                Some(col) => col
                    .sql_type
                    .parse::<SqlType>()
                    .ok()
                    .and_then(Inferred::of_type)
                    .is_some_and(|i| i < Inferred::Text),
                None => !custom,
            }
        })
        .cloned()
        .collect()
}

/// What the loader may write to, beyond the folder itself.
#[derive(Clone, Debug, Default)]
pub struct PlanContext {
    pub dialect: Dialect,
    pub policy: SchemaPolicy,
    /// Tables the loader's catalog says it created or adopted.
    pub catalog: BTreeSet<String>,
    /// Existing tables the user lets the loader write to (`--adopt-table`).
    pub adopt: BTreeSet<String>,
}

impl PlanContext {
    /// The loader writes only to tables it owns: the GIM model's, custom user-data tables, and those
    /// its catalog lists (created by it, or adopted).
    fn owns(&self, table: &str) -> bool {
        crate::schema::model().table(table).is_some()
            || target::is_custom_user_data_table(table)
            || self.catalog.contains(table)
    }
}

/// Plans one folder: checks every name, decides the target table of each CSV and the schema changes
/// it needs. `classes` holds, per table, the value classes of [`columns_to_classify`].
pub fn plan_folder(
    entries: &[CsvEntry],
    existing: &BTreeMap<String, Table>,
    classes: &BTreeMap<String, ValueClasses>,
    ctx: &PlanContext,
) -> Result<FolderPlan, Refusal> {
    let (dialect, policy) = (ctx.dialect, ctx.policy);
    let mut plan = FolderPlan::default();
    let mut seen_tables = HashSet::new();
    for e in entries {
        check_names(e)?;
        if !seen_tables.insert(e.table.clone()) {
            return Err(refuse(&e.table, "two CSVs in the zip hold this table"));
        }
        if target::is_loader_table(&e.table) {
            return Err(refuse(
                &e.table,
                "this is the loader's own table; no folder may write to it",
            ));
        }
        let none = ValueClasses::new();
        let values = classes.get(&e.table).unwrap_or(&none);
        let primary_key = match existing.get(&e.table) {
            Some(t) if !ctx.owns(&e.table) => {
                if !ctx.adopt.contains(&e.table) {
                    return Err(refuse(
                        &e.table,
                        format!(
                            "the target has a table {} that the loader did not create and that is not a GIM table: refused (to let folders write to it, adopt it: load --adopt-table {})",
                            e.table, e.table
                        ),
                    ));
                }
                plan.changes
                    .push(format!("adopted table {} (--adopt-table)", e.table));
                plan.catalog.push(CatalogRow {
                    table: e.table.clone(),
                    column: String::new(),
                    sql_type: String::new(),
                    origin: "adopted",
                });
                plan_existing(e, t, values, dialect, policy, &mut plan)?
            }
            Some(t) => plan_existing(e, t, values, dialect, policy, &mut plan)?,
            None => plan_new(e, values, dialect, policy, &mut plan)?,
        };
        if let Some(missing) = primary_key.iter().find(|k| !e.header.contains(k)) {
            return Err(refuse(
                &e.table,
                format!("the CSV lacks primary-key column {missing}"),
            ));
        }
        let version_column = ["update_audit_key", "create_audit_key"]
            .into_iter()
            .find(|c| e.header.iter().any(|h| h == c))
            .map(String::from);
        let column_types = e
            .header
            .iter()
            .map(|c| {
                plan.catalog
                    .iter()
                    .rev()
                    .find(|r| r.table == e.table && r.column == *c)
                    .map(|r| r.sql_type.clone())
                    .or_else(|| {
                        existing
                            .get(&e.table)
                            .and_then(|t| t.column(c))
                            .map(|x| x.sql_type.clone())
                    })
                    .unwrap_or_default()
            })
            .collect();
        plan.tables.push(TablePlan {
            table: e.table.clone(),
            entry: e.entry.clone(),
            columns: e.header.clone(),
            primary_key,
            version_column,
            expected_sha1: e.sha1.clone(),
            remove_missing: false,
            column_types,
            declared_rows: e.xml_rows,
        });
    }
    Ok(plan)
}

/// Table and column names: plain identifiers once folded to lower case, each column once.
fn check_names(e: &CsvEntry) -> Result<(), Refusal> {
    if !target::is_plain_identifier(&e.table) {
        return Err(refuse(
            &e.table,
            format!("the entry name {:?} is not a plain identifier", e.entry),
        ));
    }
    if e.header.is_empty() || e.header.iter().all(|h| h.is_empty()) {
        return Err(refuse(&e.table, "no header line"));
    }
    let mut seen = HashSet::new();
    for c in &e.header {
        if !target::is_plain_identifier(c) {
            return Err(refuse(
                &e.table,
                format!("column {c:?} is not a plain identifier"),
            ));
        }
        if !seen.insert(c) {
            return Err(refuse(&e.table, format!("column {c} appears twice")));
        }
    }
    Ok(())
}

/// The type of a column the model does not know, from its values (no value yet: text).
fn inferred_type(values: &ValueClasses, column: &str) -> SqlType {
    values
        .get(column)
        .copied()
        .flatten()
        .unwrap_or(Inferred::Text)
        .sql_type()
}

fn plan_existing(
    e: &CsvEntry,
    t: &Table,
    values: &ValueClasses,
    dialect: Dialect,
    policy: SchemaPolicy,
    plan: &mut FolderPlan,
) -> Result<Vec<String>, Refusal> {
    let model = target::model_table(&e.table, dialect);
    let custom = target::is_custom_user_data_table(&e.table);
    let mut widen: Vec<(String, SqlType)> = Vec::new();
    for c in &e.header {
        let known = model.as_ref().and_then(|m| m.column(c));
        match t.column(c) {
            None => {
                let (ty, origin) = match (known, custom) {
                    (Some(k), _) => (k.ty, "model"),
                    (None, true) => (
                        target::custom_table_from_header(
                            &e.table,
                            std::slice::from_ref(c),
                            dialect,
                        )
                        .columns[0]
                            .ty,
                        "header",
                    ),
                    (None, false) => {
                        if policy == SchemaPolicy::Freeze {
                            return Err(refuse(
                                &e.table,
                                format!("column {c} is not in the target or the GIM model, and --schema-changes is freeze"),
                            ));
                        }
                        (inferred_type(values, c), "inferred")
                    }
                };
                let rendered = ty.render(dialect);
                plan.ddl
                    .push(target::add_column_sql(&e.table, c, &rendered));
                plan.changes.push(format!(
                    "added column {}.{c} {rendered} ({})",
                    e.table,
                    origin_text(origin)
                ));
                plan.catalog.push(CatalogRow {
                    table: e.table.clone(),
                    column: c.clone(),
                    sql_type: rendered,
                    origin,
                });
            }
            Some(col) if known.is_none() => {
                // A column the loader typed from values: a later folder may need it wider.
                let Some(current) = col
                    .sql_type
                    .parse::<SqlType>()
                    .ok()
                    .and_then(Inferred::of_type)
                else {
                    continue;
                };
                let Some(need) = values.get(c).copied().flatten() else {
                    continue;
                };
                if need > current && need.sql_type().render(dialect) != col.sql_type {
                    if policy == SchemaPolicy::Freeze {
                        return Err(refuse(
                            &e.table,
                            format!(
                                "column {c} ({}) cannot hold this folder's values, which need {}, and --schema-changes is freeze",
                                col.sql_type,
                                need.sql_type().render(dialect)
                            ),
                        ));
                    }
                    widen.push((c.clone(), need.sql_type()));
                }
            }
            Some(_) => {}
        }
    }
    if !widen.is_empty() {
        plan.ddl.extend(widen_sql(t, &widen, dialect));
        for (c, ty) in &widen {
            let rendered = ty.render(dialect);
            let from = t.column(c).map(|x| x.sql_type.clone()).unwrap_or_default();
            plan.changes.push(format!(
                "widened column {}.{c} from {from} to {rendered} (a value of this folder needs it)",
                e.table
            ));
            plan.catalog.push(CatalogRow {
                table: e.table.clone(),
                column: c.clone(),
                sql_type: rendered,
                origin: "widened",
            });
        }
    }
    let key: Vec<String> = t
        .primary_key
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if key.is_empty() {
        return Err(refuse(
            &e.table,
            "the target table has no primary key to merge by",
        ));
    }
    Ok(key)
}

fn origin_text(origin: &str) -> &'static str {
    match origin {
        "model" => "type from the GIM model",
        "header" => "custom user-data column",
        "inferred" => "type inferred from the folder's values",
        _ => "",
    }
}

fn plan_new(
    e: &CsvEntry,
    values: &ValueClasses,
    dialect: Dialect,
    policy: SchemaPolicy,
    plan: &mut FolderPlan,
) -> Result<Vec<String>, Refusal> {
    if target::is_custom_user_data_table(&e.table) {
        let def = target::custom_table_from_header(&e.table, &e.header, dialect);
        create(
            plan,
            &def,
            dialect,
            "header",
            "a custom user-data table, from its CSV header",
        );
        return Ok(def.primary_key);
    }
    if let Some(model) = target::model_table(&e.table, dialect) {
        // A GIM table the target script does not create (not exported by Genesys's job): the
        // model's columns, plus any this folder has beyond them.
        let mut def = model;
        let mut extra = Vec::new();
        let missing: Vec<String> = e
            .header
            .iter()
            .filter(|c| def.column(c).is_none())
            .cloned()
            .collect();
        for c in &missing {
            if policy == SchemaPolicy::Freeze {
                return Err(refuse(
                    &e.table,
                    format!("column {c} is not in the GIM model, and --schema-changes is freeze"),
                ));
            }
            let ty = inferred_type(values, c);
            def.columns.push(ColumnDef {
                name: c.clone(),
                sql_type: ty.render(dialect),
                ty,
                not_null: false,
            });
            extra.push(c.clone());
        }
        create(plan, &def, dialect, "model", "from the GIM model");
        for row in plan
            .catalog
            .iter_mut()
            .filter(|r| r.table == def.name && extra.contains(&r.column))
        {
            row.origin = "inferred";
        }
        return Ok(def.primary_key);
    }
    if !e.header.iter().any(|h| h == "create_audit_key") {
        return Err(refuse(
            &e.table,
            "no such table in the target or the GIM model, and its CSV has no create_audit_key column: it is not a GIM table",
        ));
    }
    if policy == SchemaPolicy::Freeze {
        return Err(refuse(
            &e.table,
            "no such table in the target or the GIM model, and --schema-changes is freeze",
        ));
    }
    let (key, why) = choose_key(e);
    let def = TableDef {
        name: e.table.clone(),
        columns: e
            .header
            .iter()
            .map(|c| {
                let ty = inferred_type(values, c);
                ColumnDef {
                    name: c.clone(),
                    sql_type: ty.render(dialect),
                    ty,
                    not_null: key.contains(c),
                }
            })
            .collect(),
        primary_key: key.clone(),
    };
    create(
        plan,
        &def,
        dialect,
        "inferred",
        &format!(
            "a table the GIM model does not know; column types inferred from the folder's values; primary key ({}) {why}",
            key.join(", ")
        ),
    );
    Ok(key)
}

/// What a value must be to go into a column of a declared type, checked by targets that would
/// otherwise take anything (SQLite stores any value in any column): the same refusals PostgreSQL makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldRule {
    Integer,
    Decimal,
    MaxChars(usize),
    Any,
}

impl FieldRule {
    /// The rule of a declared type (`INTEGER`, `NUMERIC(10,2)`, `VARCHAR(255)`, `numeric(19,0)`...).
    pub fn of(declared: &str) -> FieldRule {
        let d = declared.trim().to_ascii_uppercase();
        let size = || {
            d.split_once('(').and_then(|(_, r)| {
                r.trim_end_matches(')')
                    .split(',')
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
        };
        if d.contains("INT") {
            FieldRule::Integer
        } else if d.starts_with("NUMERIC") || d.starts_with("DECIMAL") {
            match d
                .split_once('(')
                .map(|(_, r)| r.contains(',') && !r.contains(",0"))
            {
                Some(false) => FieldRule::Integer,
                _ => FieldRule::Decimal,
            }
        } else if d.starts_with("VARCHAR") || d.starts_with("CHAR") || d.starts_with("CHARACTER") {
            size().map_or(FieldRule::Any, FieldRule::MaxChars)
        } else {
            FieldRule::Any
        }
    }

    /// Why `value` (non-empty) does not fit, if it does not.
    pub fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            FieldRule::Integer => value.parse::<i64>().is_ok(),
            FieldRule::Decimal => {
                value.parse::<i64>().is_ok() || Inferred::of(value) == Inferred::Numeric
            }
            // Bytes bound characters: count them only when the bytes could be too many.
            FieldRule::MaxChars(n) => value.len() <= n || value.chars().count() <= n,
            FieldRule::Any => true,
        };
        if ok {
            return Ok(());
        }
        let shown: String = value.chars().take(40).collect();
        let more = if value.chars().count() > 40 {
            "..."
        } else {
            ""
        };
        Err(match self {
            FieldRule::Integer => format!("{shown:?}{more} is not an integer"),
            FieldRule::Decimal => format!("{shown:?}{more} is not a number"),
            FieldRule::MaxChars(n) => {
                format!(
                    "a value of {} characters is longer than the column's {n}",
                    value.chars().count()
                )
            }
            FieldRule::Any => unreachable!(),
        })
    }
}

/// The primary key of a table the target and the model do not know: the one the folder's
/// extracted.xml gives; else `<table>_key`, `<table>_id`, `id`, in that order, if the CSV has it;
/// else the first column. Returns it with the rule that chose it.
pub fn choose_key(e: &CsvEntry) -> (Vec<String>, &'static str) {
    if !e.xml_key.is_empty() && e.xml_key.iter().all(|k| e.header.contains(k)) {
        return (e.xml_key.clone(), "as the folder's extracted.xml gives it");
    }
    for candidate in [
        format!("{}_key", e.table),
        format!("{}_id", e.table),
        "id".to_string(),
    ] {
        if e.header.contains(&candidate) {
            return (
                vec![candidate],
                "by the naming rule <table>_key, <table>_id, id",
            );
        }
    }
    (
        vec![e.header[0].clone()],
        "as the first column (no key in extracted.xml, no <table>_key, <table>_id or id column)",
    )
}

fn create(
    plan: &mut FolderPlan,
    def: &TableDef,
    dialect: Dialect,
    origin: &'static str,
    why: &str,
) {
    plan.ddl.push(target::create_table_sql(def, dialect));
    plan.changes
        .push(format!("created table {} ({why})", def.name));
    plan.catalog.push(CatalogRow {
        table: def.name.clone(),
        column: String::new(),
        sql_type: String::new(),
        origin,
    });
    for c in &def.columns {
        plan.catalog.push(CatalogRow {
            table: def.name.clone(),
            column: c.name.clone(),
            sql_type: c.sql_type.clone(),
            origin,
        });
    }
}

/// Statements that widen `columns` of `table`. PostgreSQL alters the column types in place;
/// SQLite, which cannot, rebuilds the table with the new types and copies its rows (inside the
/// folder's transaction: all or nothing).
pub fn widen_sql(table: &Table, columns: &[(String, SqlType)], dialect: Dialect) -> Vec<String> {
    let name = table.name.to_ascii_lowercase();
    match dialect {
        Dialect::Postgres => columns
            .iter()
            .map(|(c, ty)| {
                format!(
                    "ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty} USING {c}::{ty}",
                    t = quote_ident(&name),
                    c = quote_ident(c),
                    ty = ty.postgres()
                )
            })
            .collect(),
        Dialect::Mysql => columns
            .iter()
            .map(|(c, ty)| {
                format!(
                    "ALTER TABLE {t} MODIFY COLUMN {c} {ty}",
                    t = quote_ident(&name),
                    c = quote_ident(c),
                    ty = ty.mysql()
                )
            })
            .collect(),
        Dialect::Sqlite => {
            let key: Vec<String> = table
                .primary_key
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect();
            let def = TableDef {
                name: "gx_rebuild".to_string(),
                columns: table
                    .columns
                    .iter()
                    .map(|c| {
                        let lower = c.name.to_ascii_lowercase();
                        let wide = columns.iter().find(|(w, _)| *w == lower).map(|(_, t)| *t);
                        ColumnDef {
                            sql_type: wide
                                .map(|t| t.sqlite())
                                .unwrap_or_else(|| c.sql_type.clone()),
                            ty: wide.unwrap_or(SqlType::Text),
                            not_null: key.contains(&lower),
                            name: lower,
                        }
                    })
                    .collect(),
                primary_key: key,
            };
            let cols: Vec<String> = def.columns.iter().map(|c| quote_ident(&c.name)).collect();
            vec![
                "DROP TABLE IF EXISTS main.gx_rebuild".to_string(),
                target::create_table_sql(&def, Dialect::Sqlite).replacen(
                    "CREATE TABLE IF NOT EXISTS \"gx_rebuild\"",
                    "CREATE TABLE main.gx_rebuild",
                    1,
                ),
                format!(
                    "INSERT INTO main.gx_rebuild ({c}) SELECT {c} FROM main.{t}",
                    c = cols.join(", "),
                    t = quote_ident(&name)
                ),
                format!("DROP TABLE main.{}", quote_ident(&name)),
                format!(
                    "ALTER TABLE main.gx_rebuild RENAME TO {}",
                    quote_ident(&name)
                ),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Column, ColumnKind};

    fn ctx(dialect: Dialect, policy: SchemaPolicy) -> PlanContext {
        PlanContext {
            dialect,
            policy,
            // The tests' unknown tables are ones the loader made.
            catalog: ["x_fact".to_string()].into(),
            ..Default::default()
        }
    }

    fn entry(table: &str, header: &[&str]) -> CsvEntry {
        CsvEntry {
            entry: format!("{table}.csv"),
            table: table.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            sha1: "x".into(),
            xml_key: Vec::new(),
            xml_rows: None,
        }
    }

    fn table(name: &str, cols: &[(&str, &str)], key: &str) -> Table {
        Table {
            name: name.into(),
            columns: cols
                .iter()
                .map(|(n, t)| Column {
                    name: n.to_string(),
                    kind: ColumnKind::Other,
                    sql_type: t.to_string(),
                })
                .collect(),
            primary_key: vec![key.into()],
            read_from: None,
            readable: true,
        }
    }

    #[test]
    fn an_unknown_table_is_created_with_inferred_types_and_a_documented_key() {
        let e = entry(
            "x_fact",
            &["x_fact_key", "create_audit_key", "amount", "note", "empty"],
        );
        let mut values = ValueClasses::new();
        values.insert("x_fact_key".into(), Some(Inferred::BigInt));
        values.insert("create_audit_key".into(), Some(Inferred::Integer));
        values.insert("amount".into(), Some(Inferred::Numeric));
        values.insert("note".into(), Some(Inferred::Text));
        values.insert("empty".into(), None);
        let classes = BTreeMap::from([("x_fact".to_string(), values)]);
        let p = plan_folder(
            std::slice::from_ref(&e),
            &BTreeMap::new(),
            &classes,
            &ctx(Dialect::Postgres, SchemaPolicy::Evolve),
        )
        .unwrap();
        assert_eq!(p.tables[0].primary_key, vec!["x_fact_key"]);
        let ddl = &p.ddl[0];
        for want in [
            "\"x_fact_key\" bigint NOT NULL",
            "\"amount\" numeric",
            "\"note\" text",
            "\"empty\" text",
        ] {
            assert!(ddl.contains(want), "{want} in {ddl}");
        }
        assert!(p.changes[0].contains("<table>_key"), "{:?}", p.changes);
        let frozen = plan_folder(
            &[e],
            &BTreeMap::new(),
            &classes,
            &ctx(Dialect::Postgres, SchemaPolicy::Freeze),
        )
        .unwrap_err();
        assert!(
            frozen.reason.contains("freeze") && frozen.table == "x_fact",
            "{frozen:?}"
        );
    }

    #[test]
    fn field_rules_refuse_what_the_declared_type_cannot_hold() {
        assert_eq!(FieldRule::of("INTEGER"), FieldRule::Integer);
        assert_eq!(FieldRule::of("numeric(19,0)"), FieldRule::Integer);
        assert_eq!(FieldRule::of("NUMERIC(10,2)"), FieldRule::Decimal);
        assert_eq!(FieldRule::of("NUMERIC"), FieldRule::Decimal);
        assert_eq!(FieldRule::of("VARCHAR(3)"), FieldRule::MaxChars(3));
        assert_eq!(FieldRule::of("TEXT"), FieldRule::Any);
        assert!(FieldRule::Integer.check("-12").is_ok());
        assert!(FieldRule::Integer
            .check("1.5")
            .unwrap_err()
            .contains("not an integer"));
        assert!(FieldRule::Decimal.check("-1.5").is_ok());
        assert!(FieldRule::Decimal.check("x").is_err());
        assert!(FieldRule::MaxChars(3).check("äöü").is_ok());
        assert!(FieldRule::MaxChars(3)
            .check("abcd")
            .unwrap_err()
            .contains("4 characters"));
    }

    #[test]
    fn keys_come_from_the_xml_then_the_naming_rule_then_the_first_column() {
        let mut e = entry("t", &["a", "id", "t_id", "create_audit_key"]);
        assert_eq!(choose_key(&e).0, vec!["t_id"]);
        e.xml_key = vec!["a".into(), "id".into()];
        assert_eq!(choose_key(&e).0, vec!["a", "id"]);
        e.xml_key = vec!["nope".into()];
        assert_eq!(choose_key(&e).0, vec!["t_id"]);
        let e = entry("t", &["a", "create_audit_key"]);
        assert_eq!(choose_key(&e).0, vec!["a"]);
    }

    #[test]
    fn inferred_columns_widen_but_never_narrow_and_model_columns_are_left_alone() {
        let existing = BTreeMap::from([(
            "x_fact".to_string(),
            table(
                "x_fact",
                &[
                    ("x_fact_key", "bigint"),
                    ("create_audit_key", "integer"),
                    ("n", "integer"),
                ],
                "x_fact_key",
            ),
        )]);
        let e = entry("x_fact", &["x_fact_key", "create_audit_key", "n"]);
        let mut values = ValueClasses::new();
        values.insert("n".into(), Some(Inferred::Text));
        values.insert("create_audit_key".into(), Some(Inferred::Integer));
        let classes = BTreeMap::from([("x_fact".to_string(), values.clone())]);
        let p = plan_folder(
            std::slice::from_ref(&e),
            &existing,
            &classes,
            &ctx(Dialect::Postgres, SchemaPolicy::Evolve),
        )
        .unwrap();
        assert_eq!(
            p.ddl,
            vec!["ALTER TABLE \"x_fact\" ALTER COLUMN \"n\" TYPE text USING \"n\"::text"]
        );
        values.insert("n".into(), Some(Inferred::Integer));
        let classes = BTreeMap::from([("x_fact".to_string(), values)]);
        let p = plan_folder(
            &[e],
            &existing,
            &classes,
            &ctx(Dialect::Postgres, SchemaPolicy::Evolve),
        )
        .unwrap();
        assert!(p.ddl.is_empty(), "{:?}", p.ddl);
    }

    #[test]
    fn an_existing_table_the_loader_does_not_own_is_refused_unless_adopted() {
        let existing = BTreeMap::from([(
            "adv_private".to_string(),
            table(
                "adv_private",
                &[("id", "integer"), ("create_audit_key", "integer")],
                "id",
            ),
        )]);
        let e = entry("adv_private", &["id", "create_audit_key"]);
        let mut c = ctx(Dialect::Sqlite, SchemaPolicy::Evolve);
        let r = plan_folder(std::slice::from_ref(&e), &existing, &BTreeMap::new(), &c).unwrap_err();
        assert!(r.reason.contains("--adopt-table adv_private"), "{r:?}");
        c.adopt.insert("adv_private".into());
        let p = plan_folder(&[e], &existing, &BTreeMap::new(), &c).unwrap();
        assert_eq!(p.catalog[0].origin, "adopted");
    }

    #[test]
    fn the_loader_tables_and_duplicate_names_are_refused() {
        let e = entry("gim_export_ledger", &["folder"]);
        let r = plan_folder(
            &[e],
            &BTreeMap::new(),
            &BTreeMap::new(),
            &ctx(Dialect::Sqlite, SchemaPolicy::Evolve),
        )
        .unwrap_err();
        assert!(r.reason.contains("loader's own"), "{r:?}");
        let a = entry("tenant", &["tenant_key", "create_audit_key"]);
        let r = plan_folder(
            &[a.clone(), a],
            &BTreeMap::new(),
            &BTreeMap::new(),
            &ctx(Dialect::Sqlite, SchemaPolicy::Evolve),
        )
        .unwrap_err();
        assert!(r.reason.contains("two CSVs"), "{r:?}");
        let no_audit = entry("stuff", &["id", "x"]);
        let r = plan_folder(
            &[no_audit],
            &BTreeMap::new(),
            &BTreeMap::new(),
            &ctx(Dialect::Sqlite, SchemaPolicy::Evolve),
        )
        .unwrap_err();
        assert!(r.reason.contains("not a GIM table"), "{r:?}");
    }
}

//! Column types: the PostgreSQL types the PDM names, how each dialect spells them, and the types the
//! loader infers from a folder's values for a column the model does not know.
//!
//! This is the one place where a GIM type meets a dialect: the target scripts, the tables the loader
//! creates and the columns it adds or widens all render their types here.

use std::fmt;
use std::str::FromStr;

use crate::db::Dialect;

/// A column type of the GIM model, as the PostgreSQL PDM writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqlType {
    SmallInt,
    Integer,
    BigInt,
    /// `numeric(P)` / `numeric(P,S)`; `None` precision is plain `numeric` (inferred decimals).
    Numeric(Option<(u8, u8)>),
    Varchar(u32),
    Char(u32),
    Text,
    Timestamp,
    Date,
    Float8,
    Bytea,
}

impl SqlType {
    /// The PostgreSQL spelling (the model's own).
    pub fn postgres(self) -> String {
        match self {
            SqlType::SmallInt => "smallint".into(),
            SqlType::Integer => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Numeric(None) => "numeric".into(),
            SqlType::Numeric(Some((p, 0))) => format!("numeric({p})"),
            SqlType::Numeric(Some((p, s))) => format!("numeric({p},{s})"),
            SqlType::Varchar(n) => format!("varchar({n})"),
            SqlType::Char(n) => format!("char({n})"),
            SqlType::Text => "text".into(),
            SqlType::Timestamp => "timestamp".into(),
            SqlType::Date => "date".into(),
            SqlType::Float8 => "float8".into(),
            SqlType::Bytea => "bytea".into(),
        }
    }

    /// The SQLite spelling. Integers of any width and `numeric(P)` without a scale are `INTEGER`
    /// (SQLite's integers are 64-bit: the identifiers and audit keys of an Info Mart fit); times are
    /// ISO text as the exporter writes them.
    pub fn sqlite(self) -> String {
        match self {
            SqlType::SmallInt | SqlType::Integer | SqlType::BigInt => "INTEGER".into(),
            SqlType::Numeric(Some((_, 0))) => "INTEGER".into(),
            SqlType::Numeric(None) => "NUMERIC".into(),
            SqlType::Numeric(Some((p, s))) => format!("NUMERIC({p},{s})"),
            SqlType::Varchar(n) => format!("VARCHAR({n})"),
            SqlType::Char(n) => format!("CHAR({n})"),
            SqlType::Text | SqlType::Timestamp | SqlType::Date => "TEXT".into(),
            SqlType::Float8 => "REAL".into(),
            SqlType::Bytea => "BLOB".into(),
        }
    }

    /// The MariaDB/MySQL spelling. `numeric` without a precision is DECIMAL(65,30), the widest (a bare
    /// DECIMAL would be DECIMAL(10,0)); `varchar(n)` over 255 is TEXT, because InnoDB counts every
    /// VARCHAR's largest size (4 bytes a character in utf8mb4) against a 65,535-byte row and the
    /// user-data tables have dozens of `varchar(1024)` columns; times keep microseconds.
    pub fn mysql(self) -> String {
        match self {
            SqlType::SmallInt => "SMALLINT".into(),
            SqlType::Integer => "INT".into(),
            SqlType::BigInt => "BIGINT".into(),
            SqlType::Numeric(None) => "DECIMAL(65,30)".into(),
            SqlType::Numeric(Some((p, s))) => format!("DECIMAL({p},{s})"),
            SqlType::Varchar(n) if n <= 255 => format!("VARCHAR({n})"),
            SqlType::Varchar(_) => "TEXT".into(),
            SqlType::Char(n) => format!("CHAR({n})"),
            SqlType::Text => "LONGTEXT".into(),
            SqlType::Timestamp => "DATETIME(6)".into(),
            SqlType::Date => "DATE".into(),
            SqlType::Float8 => "DOUBLE".into(),
            SqlType::Bytea => "LONGBLOB".into(),
        }
    }

    pub fn render(self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Postgres => self.postgres(),
            Dialect::Sqlite => self.sqlite(),
            Dialect::Mysql => self.mysql(),
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.postgres())
    }
}

impl FromStr for SqlType {
    type Err = String;
    /// Parses the model's spelling (`numeric(19)`, `varchar(255)`, ...), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (base, args) = match lower.split_once('(') {
            Some((b, rest)) => {
                let inner = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("type {s:?}: unclosed parenthesis"))?;
                (b.trim().to_string(), Some(inner.to_string()))
            }
            None => (lower.clone(), None),
        };
        let nums = |a: &str| -> Result<Vec<u32>, String> {
            a.split(',')
                .map(|n| {
                    n.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("type {s:?}: {n:?} is not a size"))
                })
                .collect()
        };
        let one = |a: &Option<String>| -> Result<u32, String> {
            match a.as_deref().map(nums).transpose()?.as_deref() {
                Some([n]) if *n > 0 => Ok(*n),
                _ => Err(format!("type {s:?}: expected one size")),
            }
        };
        Ok(match base.as_str() {
            "smallint" | "int2" => SqlType::SmallInt,
            "integer" | "int" | "int4" => SqlType::Integer,
            "bigint" | "int8" => SqlType::BigInt,
            "numeric" | "decimal" => match args.as_deref().map(nums).transpose()?.as_deref() {
                // MariaDB/MySQL's spelling of an unbounded numeric (see `mysql`).
                None | Some([65, 30]) => SqlType::Numeric(None),
                Some([p]) if (1..=38).contains(p) => SqlType::Numeric(Some((*p as u8, 0))),
                Some([p, sc]) if (1..=38).contains(p) && sc <= p => {
                    SqlType::Numeric(Some((*p as u8, *sc as u8)))
                }
                _ => return Err(format!("type {s:?}: bad precision")),
            },
            "varchar" | "character varying" => SqlType::Varchar(one(&args)?),
            "char" | "character" => SqlType::Char(one(&args)?),
            "text" | "mediumtext" | "longtext" => SqlType::Text,
            "timestamp" | "datetime" => SqlType::Timestamp,
            "date" => SqlType::Date,
            "float8" | "double precision" | "double" => SqlType::Float8,
            "bytea" | "blob" | "mediumblob" | "longblob" => SqlType::Bytea,
            _ => return Err(format!("unknown type {s:?}")),
        })
    }
}

/// The type the loader gives a column the model does not know, from the values one folder holds.
/// Ordered: a later folder can widen a column (integer -> bigint -> numeric -> text), never narrow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Inferred {
    /// 32-bit integers.
    Integer,
    /// 64-bit integers.
    BigInt,
    /// Any decimal number, of any size.
    Numeric,
    /// Anything else; also a column with no value at all yet (nothing to judge by, and text holds
    /// whatever comes later without a rewrite).
    Text,
}

impl Inferred {
    /// The narrowest class that holds `value` (a non-empty CSV field).
    pub fn of(value: &str) -> Inferred {
        let digits = value.strip_prefix('-').unwrap_or(value);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            // No leading zeros ("007" would not come back as it went in).
            if digits.len() > 1 && digits.starts_with('0') {
                return Inferred::Text;
            }
            if value.parse::<i32>().is_ok() {
                return Inferred::Integer;
            }
            if value.parse::<i64>().is_ok() {
                return Inferred::BigInt;
            }
            return Inferred::Numeric;
        }
        if is_decimal(value) {
            return Inferred::Numeric;
        }
        Inferred::Text
    }

    pub fn sql_type(self) -> SqlType {
        match self {
            Inferred::Integer => SqlType::Integer,
            Inferred::BigInt => SqlType::BigInt,
            Inferred::Numeric => SqlType::Numeric(None),
            Inferred::Text => SqlType::Text,
        }
    }

    /// The class of an existing column's type, for widening (`None`: a type the loader does not
    /// widen, such as a model's varchar or timestamp).
    pub fn of_type(t: SqlType) -> Option<Inferred> {
        Some(match t {
            SqlType::SmallInt | SqlType::Integer => Inferred::Integer,
            SqlType::BigInt => Inferred::BigInt,
            SqlType::Numeric(_) => Inferred::Numeric,
            SqlType::Text => Inferred::Text,
            _ => return None,
        })
    }
}

/// `-12.50`, `3.`, `.5`: a plain decimal number (no exponent: the exporter never writes one).
fn is_decimal(v: &str) -> bool {
    let v = v.strip_prefix('-').unwrap_or(v);
    let Some((int, frac)) = v.split_once('.') else {
        return false;
    };
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_and_render_per_dialect() {
        for (text, pg, lite) in [
            ("numeric(19)", "numeric(19)", "INTEGER"),
            ("NUMERIC(10,2)", "numeric(10,2)", "NUMERIC(10,2)"),
            ("varchar(255)", "varchar(255)", "VARCHAR(255)"),
            ("integer", "integer", "INTEGER"),
            ("smallint", "smallint", "INTEGER"),
            ("timestamp", "timestamp", "TEXT"),
            ("double precision", "float8", "REAL"),
            ("numeric", "numeric", "NUMERIC"),
        ] {
            let t: SqlType = text.parse().unwrap();
            assert_eq!(t.postgres(), pg, "{text}");
            assert_eq!(t.sqlite(), lite, "{text}");
            assert_eq!(t.postgres().parse::<SqlType>().unwrap(), t);
        }
        // MariaDB/MySQL: its spellings parse back to the same type (a long varchar is TEXT there).
        for (text, my) in [
            ("numeric(19)", "DECIMAL(19,0)"),
            ("numeric", "DECIMAL(65,30)"),
            ("varchar(255)", "VARCHAR(255)"),
            ("integer", "INT"),
            ("timestamp", "DATETIME(6)"),
            ("float8", "DOUBLE"),
            ("bytea", "LONGBLOB"),
            ("text", "LONGTEXT"),
        ] {
            let t: SqlType = text.parse().unwrap();
            assert_eq!(t.mysql(), my, "{text}");
            let back: SqlType = my.parse().unwrap();
            assert_eq!(back.mysql(), my, "{text}");
        }
        assert_eq!(SqlType::Varchar(1024).mysql(), "TEXT");
        for bad in [
            "varchar",
            "numeric(0)",
            "numeric(5,6)",
            "geometry",
            "varchar(x)",
        ] {
            assert!(bad.parse::<SqlType>().is_err(), "{bad}");
        }
    }

    #[test]
    fn inference_takes_the_narrowest_class_and_orders_for_widening() {
        assert_eq!(Inferred::of("42"), Inferred::Integer);
        assert_eq!(Inferred::of("-2147483648"), Inferred::Integer);
        assert_eq!(Inferred::of("2147483648"), Inferred::BigInt);
        assert_eq!(Inferred::of("99999999999999999999"), Inferred::Numeric);
        assert_eq!(Inferred::of("-1.25"), Inferred::Numeric);
        assert_eq!(Inferred::of("007"), Inferred::Text);
        assert_eq!(Inferred::of("0"), Inferred::Integer);
        assert_eq!(Inferred::of("1e5"), Inferred::Text);
        assert_eq!(Inferred::of("."), Inferred::Text);
        assert_eq!(Inferred::of("abc"), Inferred::Text);
        assert!(Inferred::Integer < Inferred::BigInt && Inferred::Numeric < Inferred::Text);
        assert_eq!(
            Inferred::of_type(SqlType::Numeric(Some((19, 0)))),
            Some(Inferred::Numeric)
        );
        assert_eq!(Inferred::of_type(SqlType::Varchar(10)), None);
    }
}

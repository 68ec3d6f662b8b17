//! Audit keys: one row of `CTL_AUDIT_LOG`, high-water marks, and compact sets of keys.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One committed (or in-flight) ETL transaction, as read from `CTL_AUDIT_LOG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub audit_key: i64,
    /// `CREATED_TS`: when the transaction began, UTC epoch seconds.
    pub created_ts: i64,
    /// `INSERTED` as UTC epoch seconds; `None` while the transaction is still in flight.
    pub inserted_ts: Option<i64>,
    /// `MAX_CHUNK_TS`: the latest data time in the transaction; `None` for keys with no timed data.
    pub max_chunk_ts: Option<i64>,
}

impl AuditEntry {
    /// A key is settled once its logical transaction has finished: its rows can no longer change under it.
    pub fn is_settled(&self) -> bool {
        self.inserted_ts.is_some()
    }
}

/// A position in the audit-key sequence: the key and the creation time of that key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HighWaterMark {
    pub audit_key: i64,
    pub created_ts: i64,
}

impl HighWaterMark {
    /// The mark before any data: where a first export starts.
    pub const ORIGIN: HighWaterMark = HighWaterMark {
        audit_key: 0,
        created_ts: 0,
    };
}

/// A sorted set of audit keys, written as compact ranges: `1-5,7,9-12`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuditKeySet(BTreeSet<i64>);

impl fmt::Debug for AuditKeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKeySet({self})")
    }
}

impl AuditKeySet {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, key: i64) {
        self.0.insert(key);
    }
    pub fn contains(&self, key: i64) -> bool {
        self.0.contains(&key)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.0.iter().copied()
    }

    /// The set as inclusive ranges of consecutive keys, in order.
    pub fn ranges(&self) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = Vec::new();
        for k in self.iter() {
            match out.last_mut() {
                Some((_, hi)) if *hi + 1 == k => *hi = k,
                _ => out.push((k, k)),
            }
        }
        out
    }
}

impl FromIterator<i64> for AuditKeySet {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> Self {
        AuditKeySet(iter.into_iter().collect())
    }
}

impl fmt::Display for AuditKeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.ranges().into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// The text of an [`AuditKeySet`] could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid audit-key list {text:?}: expected ranges such as 1-5,7")]
pub struct KeySetParseError {
    pub text: String,
}

impl FromStr for AuditKeySet {
    type Err = KeySetParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KeySetParseError {
            text: s.to_string(),
        };
        let mut set = AuditKeySet::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(set);
        }
        for part in s.split(',') {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?),
                None => {
                    let k: i64 = part.parse().map_err(|_| err())?;
                    (k, k)
                }
            };
            if lo > hi || hi - lo > 10_000_000 {
                return Err(err());
            }
            for k in lo..=hi {
                set.insert(k);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        let set: AuditKeySet = [1, 2, 3, 5, 9, 10].into_iter().collect();
        assert_eq!(set.to_string(), "1-3,5,9-10");
        assert_eq!("1-3,5,9-10".parse::<AuditKeySet>().unwrap(), set);
        assert_eq!("".parse::<AuditKeySet>().unwrap(), AuditKeySet::new());
        assert!("3-1".parse::<AuditKeySet>().is_err());
        assert!("x".parse::<AuditKeySet>().is_err());
    }
}

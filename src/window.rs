//! Window planning: which audit keys go into the next export.
//!
//! Pure functions of the audit log and the chain state, so every rule can be tested without a database.
//!
//! The rules (SPEC "One export", step 2):
//! - walk the keys after the previous high-water mark in key order;
//! - a key still in flight (`INSERTED` null) is passed over and remembered as *pending* when the window
//!   moves past it: its rows are owed, and go into the first export after it settles;
//! - a settled key belongs to the window while its data (`MAX_CHUNK_TS`) lies at most one chunk past the
//!   previous `max-data-ts`; the first settled key beyond that ends the walk;
//! - when nothing fits but later data exists (a gap in the data longer than a chunk), the export is empty
//!   and moves `max-data-ts` ahead by one chunk, so that every window spans at most one chunk;
//! - each export must move the chain (a higher `hwm-to` or a later `max-data-ts`), so its folder name is new.

use crate::audit::{AuditEntry, AuditKeySet, HighWaterMark};

/// One UTC day, the default span of data in one export.
pub const DEFAULT_CHUNK_SECONDS: i64 = 86_400;

/// Where the chain stands after an export: everything the next plan needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainState {
    pub hwm: HighWaterMark,
    pub max_data_ts: i64,
    /// Keys at or below `hwm` that were in flight when passed and have not been exported yet.
    pub pending: AuditKeySet,
    /// The chain's `--start-date`: data older than this is never exported.
    pub start_ts: Option<i64>,
}

/// What the next export contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditWindow {
    pub hwm_from: HighWaterMark,
    pub hwm_to: HighWaterMark,
    /// Every key whose rows go into this export.
    pub keys: AuditKeySet,
    /// The same keys as inclusive ranges, widened over key numbers absent from the audit log, for SQL.
    pub key_ranges: Vec<(i64, i64)>,
    /// `max-data-ts` of the previous export (or the chain's starting point).
    pub max_data_ts_from: i64,
    pub max_data_ts: i64,
    /// Pending keys the next plan must look at again.
    pub pending: AuditKeySet,
    pub start_ts: Option<i64>,
    /// A timestamp fixed by the data (the latest `INSERTED` among the keys), so that the same window
    /// always gives the same bytes.
    pub created_ts: i64,
    /// Pending keys that vanished from the audit log; reported, then forgotten.
    pub dropped_pending: AuditKeySet,
}

impl AuditWindow {
    /// The chain state once this window is published.
    pub fn chain_state(&self) -> ChainState {
        ChainState {
            hwm: self.hwm_to,
            max_data_ts: self.max_data_ts,
            pending: self.pending.clone(),
            start_ts: self.start_ts,
        }
    }
}

/// The result of planning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No export is due. `waiting` counts settled late keys that will ride with the next export.
    UpToDate {
        waiting: usize,
    },
    Export(AuditWindow),
}

/// Inputs of [`plan_next`].
#[derive(Clone, Copy, Debug)]
pub struct PlanRequest<'a> {
    /// Audit log entries sorted by key: at least every key above the previous mark and every pending key.
    pub log: &'a [AuditEntry],
    /// The state after the previous export; `None` for the first export of a chain.
    pub previous: Option<&'a ChainState>,
    /// `--start-date` for a new chain (ignored once a chain exists: the chain keeps its own).
    pub start_ts: Option<i64>,
    /// The longest span of data in one export, seconds.
    pub chunk_seconds: i64,
    /// For the first export of a restarted chain: the replaced chain's pending keys, which its
    /// receivers wait for; the new chain owes them.
    pub carried_pending: Option<&'a AuditKeySet>,
}

/// The midnight (UTC) at or before `ts`.
pub fn floor_to_day(ts: i64) -> i64 {
    ts.div_euclid(86_400) * 86_400
}

/// Plans the next export.
pub fn plan_next(req: PlanRequest<'_>) -> Plan {
    debug_assert!(req.log.windows(2).all(|w| w[0].audit_key < w[1].audit_key));
    let chunk = req.chunk_seconds.max(1);
    let (hwm_from, prev_max, prev_pending, start_ts) = match req.previous {
        Some(s) => (s.hwm, s.max_data_ts, s.pending.clone(), s.start_ts),
        None => {
            // The chain starts at the midnight before the earliest data time; keys without one
            // (configuration, dimensions) ride along with the first window.
            let settled = || req.log.iter().filter(|e| e.is_settled());
            let first_data = settled()
                .filter_map(|e| e.max_chunk_ts)
                .filter(|t| req.start_ts.is_none_or(|s| *t >= s))
                .min()
                .or_else(|| settled().map(|e| e.created_ts).min());
            let Some(first_data) = first_data else {
                return Plan::UpToDate { waiting: 0 };
            };
            let from = req.start_ts.unwrap_or_else(|| floor_to_day(first_data));
            (
                HighWaterMark::ORIGIN,
                from,
                req.carried_pending.cloned().unwrap_or_default(),
                req.start_ts,
            )
        }
    };
    let limit = prev_max.saturating_add(chunk);
    let before_start =
        |e: &AuditEntry| matches!((start_ts, e.max_chunk_ts), (Some(s), Some(t)) if t < s);

    let mut keys = AuditKeySet::new();
    let mut in_flight_passed = Vec::new();
    let mut hwm_to = hwm_from;
    let mut max_data_ts = prev_max;
    let mut created_ts: Option<i64> = None;
    let mut cut: Option<&AuditEntry> = None;

    for e in req.log.iter().filter(|e| e.audit_key > hwm_from.audit_key) {
        if !e.is_settled() {
            in_flight_passed.push(e.audit_key);
            continue;
        }
        if before_start(e) {
            continue;
        }
        if matches!(e.max_chunk_ts, Some(t) if t > limit) {
            cut = Some(e);
            break;
        }
        keys.insert(e.audit_key);
        hwm_to = HighWaterMark {
            audit_key: e.audit_key,
            created_ts: e.created_ts,
        };
        max_data_ts = max_data_ts.max(e.max_chunk_ts.unwrap_or(i64::MIN));
        created_ts = created_ts.max(e.inserted_ts);
    }

    let mut pending: AuditKeySet = in_flight_passed
        .into_iter()
        .filter(|k| *k < hwm_to.audit_key)
        .collect();
    let mut dropped_pending = AuditKeySet::new();
    for key in prev_pending.iter() {
        let Ok(i) = req.log.binary_search_by_key(&key, |e| e.audit_key) else {
            dropped_pending.insert(key);
            continue;
        };
        let e = &req.log[i];
        if !e.is_settled() || matches!(e.max_chunk_ts, Some(t) if t > limit) {
            pending.insert(key);
        } else {
            // Owed once pending, even when its data turns out to lie before the chain's start
            // date: a receiver of the chain (or of the chain a restart replaced) waits for it.
            keys.insert(key);
            max_data_ts = max_data_ts.max(e.max_chunk_ts.unwrap_or(i64::MIN));
            created_ts = created_ts.max(e.inserted_ts);
        }
    }

    let moved = hwm_to.audit_key > hwm_from.audit_key || max_data_ts > prev_max;
    if !moved {
        match cut {
            // A gap in the data longer than a chunk: step ahead one chunk.
            Some(next) => {
                max_data_ts = limit;
                created_ts = created_ts.max(next.inserted_ts);
            }
            None => {
                return Plan::UpToDate {
                    waiting: keys.len(),
                }
            }
        }
    }

    let key_ranges = widen_ranges(req.log, &keys);
    Plan::Export(AuditWindow {
        hwm_from,
        hwm_to,
        keys,
        key_ranges,
        max_data_ts_from: prev_max,
        max_data_ts,
        pending,
        start_ts,
        created_ts: created_ts.unwrap_or(hwm_to.created_ts),
        dropped_pending,
    })
}

/// The keys as ranges, joined across key numbers that do not appear in the audit log (no rows can
/// carry them), so the SQL predicate stays short.
fn widen_ranges(log: &[AuditEntry], keys: &AuditKeySet) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut open = false;
    for e in log {
        if keys.contains(e.audit_key) {
            match out.last_mut() {
                Some((_, hi)) if open => *hi = e.audit_key,
                _ => out.push((e.audit_key, e.audit_key)),
            }
            open = true;
        } else {
            open = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

    fn settled(key: i64, data_ts: i64) -> AuditEntry {
        AuditEntry {
            audit_key: key,
            created_ts: data_ts,
            inserted_ts: Some(data_ts + 60),
            max_chunk_ts: Some(data_ts),
        }
    }
    fn in_flight(key: i64, data_ts: i64) -> AuditEntry {
        AuditEntry {
            inserted_ts: None,
            ..settled(key, data_ts)
        }
    }
    fn plan(log: &[AuditEntry], prev: Option<&ChainState>) -> Plan {
        plan_next(PlanRequest {
            log,
            previous: prev,
            start_ts: None,
            chunk_seconds: DAY,
            carried_pending: None,
        })
    }
    fn export(p: Plan) -> AuditWindow {
        match p {
            Plan::Export(w) => w,
            other => panic!("expected an export, got {other:?}"),
        }
    }

    #[test]
    fn first_export_takes_one_day_from_midnight() {
        let log = [
            settled(1, T0 + 100),
            settled(2, T0 + DAY - 1),
            settled(3, T0 + DAY + 5),
        ];
        let w = export(plan(&log, None));
        assert_eq!(w.hwm_from, HighWaterMark::ORIGIN);
        assert_eq!(w.hwm_to.audit_key, 2);
        assert_eq!(w.max_data_ts_from, T0);
        assert_eq!(w.max_data_ts, T0 + DAY - 1);
        assert_eq!(w.keys.to_string(), "1-2");
    }

    #[test]
    fn in_flight_key_is_passed_and_owed() {
        let log = [
            settled(1, T0 + 10),
            in_flight(2, T0 + 20),
            settled(3, T0 + 30),
        ];
        let w = export(plan(&log, None));
        assert_eq!(w.keys.to_string(), "1,3");
        assert_eq!(w.pending.to_string(), "2");
        assert_eq!(w.key_ranges, vec![(1, 1), (3, 3)]);

        // Key 2 settles late, with newer data, next to a new key 4.
        let mut log2 = log;
        log2[1].inserted_ts = Some(T0 + 500);
        log2[1].max_chunk_ts = Some(T0 + 40);
        let log2 = [log2[0], log2[1], log2[2], settled(4, T0 + 50)];
        let w2 = export(plan(&log2, Some(&w.chain_state())));
        assert_eq!(w2.hwm_from.audit_key, 3);
        assert_eq!(w2.keys.to_string(), "2,4");
        assert!(w2.pending.is_empty());
    }

    #[test]
    fn trailing_in_flight_key_is_not_pending() {
        let log = [settled(1, T0 + 10), in_flight(2, T0 + 20)];
        let w = export(plan(&log, None));
        assert_eq!(w.hwm_to.audit_key, 1);
        assert!(w.pending.is_empty());
    }

    #[test]
    fn late_key_alone_waits_rather_than_repeat_a_folder_name() {
        let log = [
            settled(1, T0 + 10),
            in_flight(2, T0 + 5),
            settled(3, T0 + 30),
        ];
        let w = export(plan(&log, None));
        let mut log2 = log;
        log2[1].inserted_ts = Some(T0 + 900);
        // Key 2's data is older than max-data-ts and nothing new exists: nothing would move the chain.
        assert_eq!(
            plan(&log2, Some(&w.chain_state())),
            Plan::UpToDate { waiting: 1 }
        );
    }

    #[test]
    fn gap_longer_than_a_chunk_moves_one_chunk_at_a_time() {
        let log = [settled(1, T0 + 10), settled(2, T0 + 3 * DAY + 10)];
        let w1 = export(plan(&log, None));
        assert_eq!(w1.keys.to_string(), "1");
        let w2 = export(plan(&log, Some(&w1.chain_state())));
        assert!(w2.keys.is_empty());
        assert_eq!(w2.max_data_ts, T0 + 10 + DAY);
        assert_eq!(w2.hwm_to, w1.hwm_to);
        let w3 = export(plan(&log, Some(&w2.chain_state())));
        assert!(w3.keys.is_empty());
        let w4 = export(plan(&log, Some(&w3.chain_state())));
        assert_eq!(w4.keys.to_string(), "2");
        assert!(w4.max_data_ts - w4.max_data_ts_from <= DAY);
        assert_eq!(
            plan(&log, Some(&w4.chain_state())),
            Plan::UpToDate { waiting: 0 }
        );
    }

    #[test]
    fn start_date_skips_older_data_for_the_whole_chain() {
        let log = [
            settled(1, T0 + 10),
            settled(2, T0 + DAY + 10),
            settled(3, T0 + 20),
        ];
        let w = export(plan_next(PlanRequest {
            log: &log,
            previous: None,
            start_ts: Some(T0 + DAY),
            chunk_seconds: DAY,
            carried_pending: None,
        }));
        assert_eq!(w.keys.to_string(), "2");
        assert_eq!(w.start_ts, Some(T0 + DAY));
        // Key 3 is above the mark but holds data from before the start: still skipped.
        assert_eq!(
            plan(&log, Some(&w.chain_state())),
            Plan::UpToDate { waiting: 0 }
        );
    }

    #[test]
    fn ranges_widen_over_absent_key_numbers() {
        let log = [settled(1, T0), settled(5, T0 + 1), settled(9, T0 + 2)];
        let w = export(plan(&log, None));
        assert_eq!(w.key_ranges, vec![(1, 9)]);
    }

    #[test]
    fn keys_without_data_time_ride_with_the_first_window() {
        let init = AuditEntry {
            max_chunk_ts: None,
            ..settled(1, T0 - 3600)
        };
        let log = [init, settled(2, T0 + 900), settled(3, T0 + DAY + 900)];
        let w = export(plan(&log, None));
        assert_eq!(w.max_data_ts_from, T0);
        assert_eq!(w.keys.to_string(), "1-2");
    }

    #[test]
    fn empty_log_has_nothing_to_do() {
        assert_eq!(plan(&[], None), Plan::UpToDate { waiting: 0 });
        assert_eq!(
            plan(&[in_flight(1, T0)], None),
            Plan::UpToDate { waiting: 0 }
        );
    }
}

//! Property: for random simulated histories and random export schedules, replaying every export in
//! order (last version of each primary key wins) gives exactly the source's rows for every exported
//! key; no settled key is skipped; every window spans at most the chunk size; the chain is unbroken.

use std::collections::{BTreeMap, BTreeSet};

use gim_export::audit::AuditKeySet;
use gim_export::db::DbUrl;
use gim_export::export::ExportConfig;
use gim_export::simulate::SimConfig;
use proptest::prelude::*;
use sqlx::{Row, TypeInfo, ValueRef};

use crate::harness::*;

type Rows = BTreeMap<(String, Vec<String>), Vec<String>>;

/// Source rows of every exportable table as the CSV would show them, keyed by (table, primary key).
async fn source_rows(url: &str) -> (Rows, BTreeMap<(String, Vec<String>), (i64, i64)>) {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let source = gim_export::db::Source::connect(&DbUrl::parse(url).unwrap(), 1)
        .await
        .unwrap();
    let mut rows = Rows::new();
    let mut keys = BTreeMap::new();
    for t in source
        .tables()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.is_exportable())
    {
        let pk: Vec<usize> = t
            .primary_key
            .iter()
            .map(|p| t.columns.iter().position(|c| &c.name == p).unwrap())
            .collect();
        let c_idx = t
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case("create_audit_key"))
            .unwrap();
        let u_idx = t
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case("update_audit_key"));
        for r in sqlx::query(&format!("SELECT * FROM \"{}\"", t.name))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            let vals: Vec<String> = (0..r.len())
                .map(|i| {
                    let raw = r.try_get_raw(i).unwrap();
                    if raw.is_null() {
                        return String::new();
                    }
                    match raw.type_info().name() {
                        "INTEGER" => r.get::<i64, _>(i).to_string(),
                        _ => r.get::<String, _>(i),
                    }
                })
                .collect();
            let key = (
                t.lower_name(),
                pk.iter().map(|&i| vals[i].clone()).collect::<Vec<_>>(),
            );
            let ck: i64 = vals[c_idx].parse().unwrap();
            let uk: i64 = u_idx.map(|u| vals[u].parse().unwrap()).unwrap_or(ck);
            keys.insert(key.clone(), (ck, uk));
            rows.insert(key, vals);
        }
    }
    source.close().await;
    pool.close().await;
    (rows, keys)
}

fn check_history(seed: u64, steps: &[(u32, u8)], chunk_seconds: i64) {
    let w = Workdir::new("property");
    let url = w.sqlite_url("im.db");
    let out = w.join("out");
    let rt = runtime();
    for &(days, exports) in steps {
        rt.block_on(gim_export::simulate::run(&SimConfig {
            target: DbUrl::parse(&url).unwrap(),
            days,
            seed,
            interactions_per_day: 60,
            start_ts: 1_704_067_200,
            partitioned: false,
            into_existing: false,
        }))
        .unwrap();
        // 0 = catch up; n = n single exports.
        let (runs, catch_up) = if exports == 0 {
            (1, true)
        } else {
            (exports, false)
        };
        for _ in 0..runs {
            rt.block_on(gim_export::export::run(&ExportConfig {
                source: DbUrl::parse(&url).unwrap(),
                output: out.clone(),
                chunk_seconds,
                start_ts: None,
                catch_up,
                threads: 2,
                compression_level: 1,
                gim_schema_version: "test".into(),
                dry_run: false,
                tables: Default::default(),
                keep_days: 0,
                on_publish: None,
                metrics_file: None,
                max_retries: 0,
                retry_delay_seconds: 1,
                mode: Default::default(),
                encoding: Default::default(),
                views: None,
                allow_table_change: false,
                resync_on_broken_chain: false,
                sealing: Default::default(),
                deliveries: Default::default(),
            }))
            .unwrap();
        }
    }

    // The chain and every window's span, as a receiver checks them.
    let checks = gim_export::verify::check_input(&out).unwrap();
    for c in &checks {
        assert!(c.is_ok(), "{}: {:?}", c.folder, c.problems);
        let m = c.meta.as_ref().unwrap();
        assert!(m.max_data_ts - m.max_data_ts_from.unwrap() <= chunk_seconds);
    }

    // Replay: the last version of each primary key wins.
    let mut replay = Rows::new();
    let mut exported = AuditKeySet::new();
    let mut pending = AuditKeySet::new();
    for (_, meta, tables) in read_exports(&out) {
        for k in meta.audit_keys.as_ref().unwrap().iter() {
            assert!(!exported.contains(k), "audit key {k} exported twice");
            exported.insert(k);
        }
        pending = meta.pending_audit_keys.clone().unwrap();
        for (table, csv) in tables {
            let src_pk = |row: &Vec<String>| -> Vec<String> {
                // The primary key is the first column in every simulated table.
                vec![row[0].clone()]
            };
            for row in csv.rows {
                replay.insert((table.clone(), src_pk(&row)), row);
            }
        }
    }
    let (source, keys) = rt.block_on(source_rows(&url));
    for pk in replay.keys() {
        assert!(
            source.contains_key(pk),
            "exported row {pk:?} is not in the source"
        );
    }
    let mut owed = 0;
    for (pk, (ck, uk)) in &keys {
        if exported.contains(*uk) {
            owed += 1;
            assert_eq!(
                replay.get(pk),
                source.get(pk),
                "row {pk:?} (last changed by key {uk})"
            );
        } else if exported.contains(*ck) {
            assert!(
                replay.contains_key(pk),
                "row {pk:?} created by exported key {ck} is missing"
            );
        }
    }
    assert!(owed > 0 || exported.is_empty());

    // No settled key at or below the chain's mark is skipped: exported, or still owed.
    let hwm = checks
        .last()
        .and_then(|c| c.meta.as_ref())
        .map(|m| m.hwm_to.audit_key)
        .unwrap_or(0);
    let settled: BTreeSet<i64> = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let v: Vec<i64> =
            sqlx::query_scalar("SELECT AUDIT_KEY FROM CTL_AUDIT_LOG WHERE INSERTED IS NOT NULL")
                .fetch_all(&pool)
                .await
                .unwrap();
        v.into_iter().collect()
    });
    for k in settled.iter().filter(|k| **k <= hwm) {
        assert!(
            exported.contains(*k) || pending.contains(*k),
            "settled key {k} was skipped"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn replaying_exports_rebuilds_the_source(
        seed in 0u64..10_000,
        steps in prop::collection::vec((1u32..=2, 0u8..=3), 1..=3),
        chunk_seconds in prop_oneof![Just(86_400i64), Just(6 * 3600), Just(30 * 3600), Just(3 * 3600)],
    ) {
        check_history(seed, &steps, chunk_seconds);
    }
}

#[test]
fn a_history_exported_one_folder_at_a_time() {
    check_history(77, &[(2, 1), (1, 2), (1, 0)], 86_400);
}

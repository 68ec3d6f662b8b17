//! A simulated source Info Mart: contact-centre activity written the way Genesys Info Mart writes it,
//! one `CTL_AUDIT_LOG` row per ETL run, every row stamped with the keys that created and last updated it.
//!
//! What it produces on purpose, because real Info Marts contain it and naive exporters break on it:
//! interactions whose `END_TS` is filled in by a later run; data arriving hours late; dimension rows that
//! change; user-data rows; NULLs beside empty strings; commas, quotes, newlines and non-ASCII text; runs
//! that finish after the run after them; and, at the end of every call, a key still in flight
//! (`INSERTED` null) below a settled one, settled (with a few more changes) by the next call.
//!
//! Deterministic: the same seed and the same earlier history give the same rows.

pub mod rng;
mod text;
mod writer;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::db::DbUrl;
use rng::{hash, Rng};
pub use writer::SimDb;

/// One ETL run every 15 minutes.
const RUN_SECONDS: i64 = 900;
const RUNS_PER_DAY: usize = 96;
const LOGIN_RUN: usize = 32; // 08:00
const LOGOUT_RUN: usize = 68; // 17:00
const DIMENSION_RUN: usize = 48; // 12:00
const TENANT: i64 = 1;

/// A value to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    pub fn text(s: impl Into<String>) -> Val {
        Val::Text(s.into())
    }
    fn opt(v: Option<i64>) -> Val {
        v.map(Val::Int).unwrap_or(Val::Null)
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub target: DbUrl,
    pub days: u32,
    pub seed: u64,
    pub interactions_per_day: u32,
    /// First simulated day (midnight UTC) when the database holds no history yet.
    pub start_ts: i64,
    /// PostgreSQL only: build the fact tables as a partitioned Info Mart has them (declarative range
    /// partitions by day, and inheritance children), when the schema is first created.
    pub partitioned: bool,
    /// Write into a database that holds an Info Mart `simulate` did not create.
    pub into_existing: bool,
}

/// The table that marks a database as one `simulate` created (it has no `CREATE_AUDIT_KEY`, so it
/// is never exported).
pub const SIMULATED_MARKER: &str = "gim_export_simulated";

/// Refused: the database holds an Info Mart that `simulate` did not create (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0} holds an Info Mart (CTL_AUDIT_LOG) that simulate did not create: simulated rows would mix with real ones. Give simulate its own database with --source, or --into-existing if this is what you want")]
pub struct NotASimulatedInfoMart(pub String);

/// What a call wrote.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub first_day: i64,
    pub days: u32,
    pub first_audit_key: i64,
    pub last_audit_key: i64,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub in_flight: Vec<i64>,
}

/// The 15-minute interval that holds `ts`: its `DATE_TIME_KEY`.
pub fn date_time_key(ts: i64) -> i64 {
    ts.div_euclid(RUN_SECONDS) * RUN_SECONDS
}

/// `YYYY-MM-DD HH:MM:SS.mmm`, as timestamp(3) columns are written.
fn timestamp_text(ts: i64) -> String {
    DateTime::<Utc>::from_timestamp(ts, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S.000")
        .to_string()
}

/// Rows to insert into one table, and the columns they fill.
struct Batch {
    columns: &'static [&'static str],
    rows: Vec<Vec<Val>>,
}

/// Rows to update in one table by key: row = key value, then the new values of `columns`.
struct UpdateBatch {
    key: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Val>>,
}

/// Everything one ETL run writes, in one transaction.
#[derive(Default)]
struct RunWork {
    inserts: BTreeMap<&'static str, Batch>,
    updates: BTreeMap<&'static str, UpdateBatch>,
    /// Changes that are not a plain update by key.
    statements: Vec<String>,
    updated: u64,
    rows: u64,
    max_ts: Option<i64>,
    min_start: Option<i64>,
    max_start: Option<i64>,
}

impl RunWork {
    fn insert(&mut self, table: &'static str, columns: &'static [&'static str], row: Vec<Val>) {
        debug_assert_eq!(columns.len(), row.len(), "{table}");
        self.inserts
            .entry(table)
            .or_insert_with(|| Batch {
                columns,
                rows: Vec::new(),
            })
            .rows
            .push(row);
        self.rows += 1;
    }
    fn update(
        &mut self,
        table: &'static str,
        key: &'static str,
        columns: &'static [&'static str],
        row: Vec<Val>,
    ) {
        debug_assert_eq!(columns.len() + 1, row.len(), "{table}");
        self.updates
            .entry(table)
            .or_insert_with(|| UpdateBatch {
                key,
                columns,
                rows: Vec::new(),
            })
            .rows
            .push(row);
        self.rows += 1;
        self.updated += 1;
    }
    fn statement(&mut self, sql: String, rows: u64) {
        self.statements.push(sql);
        self.rows += rows;
        self.updated += rows;
    }
    /// Records a data time (for MAX_CHUNK_TS) and, for facts, a start time.
    fn data(&mut self, ts: i64, start: Option<i64>) {
        self.max_ts = self.max_ts.max(Some(ts));
        if let Some(s) = start {
            self.min_start = Some(self.min_start.map_or(s, |m| m.min(s)));
            self.max_start = self.max_start.max(Some(s));
        }
    }
}

const IF_COLS: &[&str] = &[
    "INTERACTION_ID",
    "TENANT_KEY",
    "INTERACTION_TYPE_KEY",
    "MEDIA_TYPE_KEY",
    "MEDIA_SERVER_ROOT_IXN_ID",
    "MEDIA_SERVER_IXN_ID",
    "MEDIA_SERVER_ROOT_IXN_GUID",
    "MEDIA_SERVER_IXN_GUID",
    "SOURCE_ADDRESS",
    "TARGET_ADDRESS",
    "SUBJECT",
    "STATUS",
    "START_TS",
    "END_TS",
    "START_DATE_TIME_KEY",
    "END_DATE_TIME_KEY",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
];
const IRF_COLS: &[&str] = &[
    "INTERACTION_RESOURCE_ID",
    "TENANT_KEY",
    "INTERACTION_ID",
    "RESOURCE_KEY",
    "PLACE_KEY",
    "TECHNICAL_DESCRIPTOR_KEY",
    "INTERACTION_TYPE_KEY",
    "MEDIA_TYPE_KEY",
    "INTERACTION_DESCRIPTOR_KEY",
    "START_DATE_TIME_KEY",
    "START_TS",
    "END_TS",
    "TALK_DURATION",
    "HOLD_DURATION",
    "RING_DURATION",
    "AFTER_CALL_WORK_DURATION",
    "CUSTOMER_TALK_DURATION",
    "ROUTING_POINT_DURATION",
    "TALK_COUNT",
    "RESOURCE_GROUP_COMBINATION_KEY",
    "LAST_VQUEUE_RESOURCE_KEY",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
];
const MSF_COLS: &[&str] = &[
    "MEDIATION_SEGMENT_ID",
    "TENANT_KEY",
    "INTERACTION_ID",
    "RESOURCE_KEY",
    "TECHNICAL_DESCRIPTOR_KEY",
    "MEDIA_TYPE_KEY",
    "INTERACTION_TYPE_KEY",
    "START_DATE_TIME_KEY",
    "START_TS",
    "END_TS",
    "MEDIATION_DURATION",
    "MEDIATION_COUNT",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
];
const UD_COLS: &[&str] = &[
    "INTERACTION_RESOURCE_ID",
    "START_DATE_TIME_KEY",
    "TENANT_KEY",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
    "CUSTOM_DATA_1",
    "CUSTOM_DATA_2",
    "CUSTOM_DATA_3",
    "CUSTOM_DATA_4",
    "CUSTOM_DATA_5",
    "CUSTOM_DATA_6",
    "CUSTOM_DATA_7",
    "CUSTOM_DATA_8",
    "CUSTOM_DATA_9",
    "CUSTOM_DATA_10",
    "CUSTOM_DATA_11",
    "CUSTOM_DATA_12",
    "CUSTOM_DATA_13",
    "CUSTOM_DATA_14",
    "CUSTOM_DATA_15",
    "CUSTOM_DATA_16",
];
const SESSION_COLS: &[&str] = &[
    "SM_RES_SESSION_FACT_KEY",
    "START_DATE_TIME_KEY",
    "END_DATE_TIME_KEY",
    "TENANT_KEY",
    "MEDIA_TYPE_KEY",
    "RESOURCE_KEY",
    "RESOURCE_GROUP_COMBINATION_KEY",
    "START_TS",
    "END_TS",
    "TOTAL_DURATION",
    "LEAD_CLIP_DURATION",
    "TRAIL_CLIP_DURATION",
    "ACTIVE_FLAG",
    "PURGE_FLAG",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
];
const STATE_COLS: &[&str] = &[
    "SM_RES_STATE_FACT_KEY",
    "START_DATE_TIME_KEY",
    "END_DATE_TIME_KEY",
    "TENANT_KEY",
    "MEDIA_TYPE_KEY",
    "RESOURCE_KEY",
    "RESOURCE_GROUP_COMBINATION_KEY",
    "RESOURCE_STATE_KEY",
    "START_TS",
    "END_TS",
    "TOTAL_DURATION",
    "LEAD_CLIP_DURATION",
    "TRAIL_CLIP_DURATION",
    "ACTIVE_FLAG",
    "PURGE_FLAG",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
];
const DATE_TIME_COLS: &[&str] = &[
    "DATE_TIME_KEY",
    "CAL_DATE",
    "LABEL_YYYY_MM_DD",
    "LABEL_HH24",
    "CAL_YEAR_NUM",
    "CAL_MONTH_NUM",
    "CAL_DAY_NUM_IN_MONTH",
    "CAL_HOUR_24_NUM",
    "CAL_MINUTE_NUM",
    "DAY_NAME",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
];
const DESCRIPTOR_COLS: &[&str] = &[
    "INTERACTION_DESCRIPTOR_KEY",
    "TENANT_KEY",
    "CUSTOMER_SEGMENT",
    "SERVICE_TYPE",
    "SERVICE_SUBTYPE",
    "BUSINESS_RESULT",
    "CREATE_AUDIT_KEY",
];
const UDIM_COLS: &[&str] = &[
    "ID",
    "TENANT_KEY",
    "CREATE_AUDIT_KEY",
    "DIM_ATTRIBUTE_1",
    "DIM_ATTRIBUTE_2",
    "DIM_ATTRIBUTE_3",
    "DIM_ATTRIBUTE_4",
    "DIM_ATTRIBUTE_5",
];
const RESOURCE_COLS: &[&str] = &[
    "RESOURCE_KEY",
    "TENANT_KEY",
    "RESOURCE_TYPE",
    "RESOURCE_TYPE_CODE",
    "RESOURCE_NAME",
    "RESOURCE_CFG_DBID",
    "EMPLOYEE_ID",
    "AGENT_FIRST_NAME",
    "AGENT_LAST_NAME",
    "START_TS",
    "END_TS",
    "CREATE_AUDIT_KEY",
    "UPDATE_AUDIT_KEY",
];

/// Number sequences, continued from what the database holds.
#[derive(Clone, Debug, Default)]
struct Ids {
    audit: i64,
    interaction: i64,
    irf: i64,
    msf: i64,
    session: i64,
    state: i64,
    descriptor: i64,
    udim: i64,
}

/// An interaction whose END_TS a later run fills in.
#[derive(Clone, Copy, Debug)]
struct Open {
    id: i64,
    end: i64,
}

/// An interaction waiting to be written by a later run (late-arriving data).
#[derive(Clone, Copy, Debug)]
struct Late {
    arrives_at_run: usize,
    start: i64,
}

struct Simulator {
    seed: u64,
    ids: Ids,
    agents: Vec<i64>,
    descriptors: i64,
    open: Vec<Open>,
    per_day: u32,
}

/// Appends `config.days` days of activity to the database (creating the schema first if needed).
pub async fn run(config: &SimConfig) -> Result<SimReport> {
    let db = SimDb::connect(&config.target).await?;
    if db.has_table("ctl_audit_log").await?
        && !db.has_table(SIMULATED_MARKER).await?
        && !config.into_existing
    {
        return Err(NotASimulatedInfoMart(config.target.to_string()).into());
    }
    db.execute(&[format!(
        "CREATE TABLE IF NOT EXISTS {SIMULATED_MARKER} (note VARCHAR(200))"
    )])
    .await?;
    if config.partitioned {
        db.create_partitioned_schema().await?;
    }
    db.create_schema().await?;
    let history = db.history().await?;
    let partitioned = db.partitioned_tables().await?;
    if !partitioned.is_empty() {
        // Day partitions for everything this call writes (and the day before, for late data);
        // anything else lands in the default partition.
        let from = match history.max_created_ts {
            Some(ts) => crate::window::floor_to_day(ts - 31),
            None => config.start_ts - 86_400,
        };
        db.add_day_partitions(&partitioned, from, config.days + 2)
            .await?;
    }
    let mut report = SimReport {
        days: config.days,
        ..Default::default()
    };
    let mut sim = Simulator {
        seed: config.seed,
        ids: Ids {
            audit: history.max_audit_key,
            interaction: db.max_id("INTERACTION_FACT", "INTERACTION_ID").await?,
            irf: db
                .max_id("INTERACTION_RESOURCE_FACT", "INTERACTION_RESOURCE_ID")
                .await?,
            msf: db
                .max_id("MEDIATION_SEGMENT_FACT", "MEDIATION_SEGMENT_ID")
                .await?,
            session: db
                .max_id("SM_RES_SESSION_FACT", "SM_RES_SESSION_FACT_KEY")
                .await?,
            state: db
                .max_id("SM_RES_STATE_FACT", "SM_RES_STATE_FACT_KEY")
                .await?,
            descriptor: db
                .max_id("INTERACTION_DESCRIPTOR", "INTERACTION_DESCRIPTOR_KEY")
                .await?,
            udim: db.max_id("USER_DATA_CUST_DIM_1", "ID").await?,
        },
        agents: Vec::new(),
        descriptors: 0,
        open: history
            .open_interactions
            .iter()
            .map(|&(id, start)| Open {
                id,
                end: start + interaction_length(config.seed, id),
            })
            .collect(),
        per_day: config.interactions_per_day.max(1),
    };
    report.first_audit_key = sim.ids.audit + 1;

    let first_day = match history.max_created_ts {
        // The last run of a day starts 30 s after the next midnight: step back past it.
        Some(ts) => crate::window::floor_to_day(ts - 31) + 86_400,
        None => {
            let work = sim.initialize(config.start_ts);
            let key = sim.ids.audit;
            let created = config.start_ts - 3600;
            report.rows_inserted += work.rows;
            db.write_run(key, created, Some(created + 120), &work)
                .await?;
            config.start_ts
        }
    };
    report.first_day = first_day;
    sim.agents = db.agents().await?;
    sim.descriptors = sim.ids.descriptor.max(1);

    // The key left in flight by the previous call finishes now, after the higher key that followed it.
    for &key in &history.in_flight {
        let mut work = RunWork::default();
        sim.finish_in_flight(key, &mut work);
        report.rows_updated += work.updated;
        db.settle(key, first_day + 600, &work).await?;
    }

    for day in 0..config.days {
        let day_start = first_day + i64::from(day) * 86_400;
        let last_day = day + 1 == config.days;
        let mut rng = Rng::derive(config.seed, day_start as u64);
        let mut late: Vec<Late> = Vec::new();
        let mut sessions: Vec<(i64, i64, i64)> = Vec::new(); // (id, agent, start)
        for run in 0..RUNS_PER_DAY {
            let mut work = RunWork::default();
            sim.ids.audit += 1;
            let key = sim.ids.audit;
            let run_ts = day_start + (run as i64 + 1) * RUN_SECONDS + 30;
            if run == 0 {
                date_time_rows(day_start, key, &mut work);
            }
            sim.interactions(&mut rng, key, day_start, run, run_ts, &mut late, &mut work);
            sim.close_interactions(key, run_ts, &mut work);
            sim.agent_activity(&mut rng, key, day_start, run, &mut sessions, &mut work);
            if run == DIMENSION_RUN {
                sim.dimension_changes(&mut rng, key, &mut work);
            }
            // Most runs take a minute or two; a few run long and finish after the next one.
            let duration = if rng.percent(4) {
                RUN_SECONDS + 500
            } else {
                rng.range(20, 200)
            };
            let in_flight = last_day && run == RUNS_PER_DAY - 2;
            let inserted = (!in_flight).then_some(run_ts + duration);
            if in_flight {
                report.in_flight.push(key);
            }
            report.rows_inserted += work.rows - work.updated;
            report.rows_updated += work.updated;
            db.write_run(key, run_ts, inserted, &work)
                .await
                .with_context(|| format!("writing audit key {key}"))?;
        }
    }
    report.last_audit_key = sim.ids.audit;
    // Inheritance children hold the older rows, as an archive split of a real Info Mart would.
    let last_day = first_day + i64::from(config.days.max(1) - 1) * 86_400;
    db.move_to_inheritance_children(last_day).await?;
    db.commit().await?;
    Ok(report)
}

/// How long an interaction lasts: fixed by its id, so a later call knows when to close it.
fn interaction_length(seed: u64, id: i64) -> i64 {
    30 + (hash(seed, id as u64) % 2400) as i64
}

/// Busy hours weigh more: the share of a day's interactions that start in `run`'s interval.
fn run_weight(run: usize) -> u64 {
    let hour = run / 4;
    if (8..18).contains(&hour) {
        4
    } else {
        1
    }
}

fn date_time_rows(day_start: i64, key: i64, work: &mut RunWork) {
    for i in 0..RUNS_PER_DAY as i64 {
        let ts = day_start + i * RUN_SECONDS;
        let t = DateTime::<Utc>::from_timestamp(ts, 0).unwrap_or_default();
        work.insert(
            "DATE_TIME",
            DATE_TIME_COLS,
            vec![
                Val::Int(ts),
                Val::text(t.format("%Y-%m-%d %H:%M:%S").to_string()),
                Val::text(t.format("%Y-%m-%d").to_string()),
                Val::text(t.format("%H").to_string()),
                Val::Int(t.year() as i64),
                Val::Int(t.month() as i64),
                Val::Int(t.day() as i64),
                Val::Int(t.hour() as i64),
                Val::Int(t.minute() as i64),
                Val::text(t.format("%A").to_string()),
                Val::Int(key),
                Val::Int(key),
            ],
        );
    }
}

impl Simulator {
    /// The first audit key of a new Info Mart: the configuration dimensions.
    fn initialize(&mut self, start_ts: i64) -> RunWork {
        let mut w = RunWork::default();
        self.ids.audit += 1;
        let key = self.ids.audit;
        let k = Val::Int(key);
        let mut rng = Rng::derive(self.seed, 0);
        w.insert(
            "TENANT",
            &[
                "TENANT_KEY",
                "TENANT_NAME",
                "TENANT_CFG_DBID",
                "START_TS",
                "END_TS",
                "CREATE_AUDIT_KEY",
                "UPDATE_AUDIT_KEY",
            ],
            vec![
                Val::Int(TENANT),
                Val::text("Environment"),
                Val::Int(1),
                Val::Int(start_ts),
                Val::Null,
                k.clone(),
                k.clone(),
            ],
        );
        for (i, (name, code, online)) in [
            ("Voice", "VOICE", 1),
            ("E-mail", "EMAIL", 0),
            ("Chat", "CHAT", 1),
        ]
        .iter()
        .enumerate()
        {
            w.insert(
                "MEDIA_TYPE",
                &[
                    "MEDIA_TYPE_KEY",
                    "MEDIA_NAME",
                    "MEDIA_NAME_CODE",
                    "IS_ONLINE",
                    "CREATE_AUDIT_KEY",
                    "UPDATE_AUDIT_KEY",
                ],
                vec![
                    Val::Int(i as i64 + 1),
                    Val::text(*name),
                    Val::text(*code),
                    Val::Int(*online),
                    k.clone(),
                    k.clone(),
                ],
            );
        }
        for (i, (t, tc, s, sc)) in [
            ("Inbound", "INBOUND", "InboundNew", "INBOUNDNEW"),
            ("Outbound", "OUTBOUND", "OutboundNew", "OUTBOUNDNEW"),
            ("Internal", "INTERNAL", "InternalConsult", "INTERNALCONSULT"),
        ]
        .iter()
        .enumerate()
        {
            w.insert(
                "INTERACTION_TYPE",
                &[
                    "INTERACTION_TYPE_KEY",
                    "INTERACTION_TYPE",
                    "INTERACTION_TYPE_CODE",
                    "INTERACTION_SUBTYPE",
                    "INTERACTION_SUBTYPE_CODE",
                    "CREATE_AUDIT_KEY",
                    "UPDATE_AUDIT_KEY",
                ],
                vec![
                    Val::Int(i as i64 + 1),
                    Val::text(*t),
                    Val::text(*tc),
                    Val::text(*s),
                    Val::text(*sc),
                    k.clone(),
                    k.clone(),
                ],
            );
        }
        for (i, (r, rr, role, reason)) in [
            ("Completed", "Unspecified", "Received", "Unspecified"),
            (
                "Abandoned",
                "AbandonedWhileQueued",
                "Received",
                "Unspecified",
            ),
            ("Completed", "AnsweredByAgent", "Received", "Unspecified"),
            (
                "Redirected",
                "RouteOnNoAnswer",
                "Received",
                "ConferenceInitiator",
            ),
            ("Diverted", "", "Received", "Unspecified"),
        ]
        .iter()
        .enumerate()
        {
            w.insert(
                "TECHNICAL_DESCRIPTOR",
                &[
                    "TECHNICAL_DESCRIPTOR_KEY",
                    "TECHNICAL_RESULT",
                    "TECHNICAL_RESULT_CODE",
                    "RESULT_REASON",
                    "RESULT_REASON_CODE",
                    "RESOURCE_ROLE",
                    "RESOURCE_ROLE_CODE",
                    "ROLE_REASON",
                    "ROLE_REASON_CODE",
                    "CREATE_AUDIT_KEY",
                    "UPDATE_AUDIT_KEY",
                ],
                vec![
                    Val::Int(i as i64 + 1),
                    Val::text(*r),
                    Val::text(r.to_uppercase()),
                    Val::text(*rr),
                    Val::text(rr.to_uppercase()),
                    Val::text(*role),
                    Val::text(role.to_uppercase()),
                    Val::text(*reason),
                    Val::text(reason.to_uppercase()),
                    k.clone(),
                    k.clone(),
                ],
            );
        }
        for (i, (t, n)) in [
            ("Ready", "Ready"),
            ("NotReady", "Not Ready, break"),
            ("Busy", "Busy"),
            ("LoggedOut", "Logged out"),
        ]
        .iter()
        .enumerate()
        {
            w.insert(
                "RESOURCE_STATE",
                &[
                    "RESOURCE_STATE_KEY",
                    "STATE_TYPE",
                    "STATE_TYPE_CODE",
                    "STATE_NAME",
                    "STATE_NAME_CODE",
                    "CREATE_AUDIT_KEY",
                    "UPDATE_AUDIT_KEY",
                ],
                vec![
                    Val::Int(i as i64 + 1),
                    Val::text(*t),
                    Val::text(t.to_uppercase()),
                    Val::text(*n),
                    Val::text(n.to_uppercase()),
                    k.clone(),
                    k.clone(),
                ],
            );
        }
        let agents = (self.per_day / 200).clamp(5, 5000) as i64;
        for a in 1..=agents {
            let first = *rng.pick(text::FIRST_NAMES);
            let last = *rng.pick(text::LAST_NAMES);
            w.insert(
                "RESOURCE_",
                RESOURCE_COLS,
                vec![
                    Val::Int(a),
                    Val::Int(TENANT),
                    Val::text("Agent"),
                    Val::text("AGENT"),
                    Val::text(format!("{}.{}", first.to_lowercase(), a)),
                    Val::Int(1000 + a),
                    if a % 7 == 0 {
                        Val::text("")
                    } else {
                        Val::text(format!("E{a:05}"))
                    },
                    Val::text(first),
                    Val::text(last),
                    Val::Int(start_ts),
                    Val::Null,
                    k.clone(),
                    k.clone(),
                ],
            );
        }
        for _ in 0..6 {
            self.new_descriptor(&mut rng, key, &mut w);
        }
        for _ in 0..3 {
            self.new_user_dim(&mut rng, key, &mut w);
        }
        w
    }

    fn new_descriptor(&mut self, rng: &mut Rng, key: i64, w: &mut RunWork) {
        self.ids.descriptor += 1;
        w.insert(
            "INTERACTION_DESCRIPTOR",
            DESCRIPTOR_COLS,
            vec![
                Val::Int(self.ids.descriptor),
                Val::Int(TENANT),
                text::segment(rng),
                Val::text(*rng.pick(&["Sales", "Support", "Billing"])),
                if rng.percent(30) {
                    Val::Null
                } else {
                    Val::text("Default")
                },
                Val::text(*rng.pick(&["Sold", "No sale", "Resolved, follow-up"])),
                Val::Int(key),
            ],
        );
    }

    fn new_user_dim(&mut self, rng: &mut Rng, key: i64, w: &mut RunWork) {
        self.ids.udim += 1;
        let id = self.ids.udim;
        w.insert(
            "USER_DATA_CUST_DIM_1",
            UDIM_COLS,
            vec![
                Val::Int(id),
                Val::Int(TENANT),
                Val::Int(key),
                text::segment(rng),
                Val::text(format!("Campaign {id}")),
                Val::Null,
                Val::text(""),
                Val::text(*rng.pick(&["a\"b", "x,y", "ü"])),
            ],
        );
    }

    /// New interactions of this run's interval, and late ones from earlier intervals that arrive now.
    #[allow(clippy::too_many_arguments)]
    fn interactions(
        &mut self,
        rng: &mut Rng,
        key: i64,
        day_start: i64,
        run: usize,
        run_ts: i64,
        late: &mut Vec<Late>,
        w: &mut RunWork,
    ) {
        let total_weight: u64 = (0..RUNS_PER_DAY).map(run_weight).sum();
        let expected = u64::from(self.per_day) * run_weight(run) * 1000 / total_weight;
        let count = (expected + rng.below(1000)) / 1000;
        let interval_start = day_start + run as i64 * RUN_SECONDS;
        let mut starts: Vec<i64> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let start = interval_start + rng.below(RUN_SECONDS as u64) as i64;
            if rng.percent(3) {
                let arrives = (run + 4 + rng.below(9) as usize).min(RUNS_PER_DAY - 1);
                late.push(Late {
                    arrives_at_run: arrives,
                    start,
                });
            } else {
                starts.push(start);
            }
        }
        let (now, later): (Vec<Late>, Vec<Late>) =
            late.drain(..).partition(|l| l.arrives_at_run <= run);
        *late = later;
        starts.extend(now.into_iter().map(|l| l.start));
        for start in starts {
            self.interaction(rng, key, start, run_ts, w);
        }
    }

    fn interaction(&mut self, rng: &mut Rng, key: i64, start: i64, run_ts: i64, w: &mut RunWork) {
        self.ids.interaction += 1;
        let id = self.ids.interaction;
        let end = start + interaction_length(self.seed, id);
        let ended = end <= run_ts;
        let media = rng.range(1, 3);
        let itype = rng.range(1, 3);
        let sdtk = date_time_key(start);
        w.insert(
            "INTERACTION_FACT",
            IF_COLS,
            vec![
                Val::Int(id),
                Val::Int(TENANT),
                Val::Int(itype),
                Val::Int(media),
                Val::Int(9_000_000_000_000 + id),
                Val::Int(9_100_000_000_000 + id),
                Val::text(format!("00{:014X}", hash(self.seed, id as u64) >> 8)),
                if rng.percent(10) {
                    Val::Null
                } else {
                    Val::text(format!("01{:014X}", id))
                },
                text::address(rng),
                text::address(rng),
                text::subject(rng),
                Val::Int(if ended { 1 } else { 0 }),
                Val::Int(start),
                Val::opt(ended.then_some(end)),
                Val::Int(sdtk),
                Val::opt(ended.then_some(date_time_key(end))),
                Val::Int(key),
                Val::Int(key),
            ],
        );
        w.data(if ended { end } else { start }, Some(start));
        if !ended {
            self.open.push(Open { id, end });
        }
        let resources = 1 + rng.below(3) as i64 - i64::from(rng.percent(40));
        let resources = resources.max(1);
        let mut t = start;
        for _ in 0..resources {
            self.ids.irf += 1;
            let irf = self.ids.irf;
            let agent = if self.agents.is_empty() {
                1
            } else {
                *rng.pick(&self.agents)
            };
            let talk = rng.range(10, 900);
            let irf_end = (t + talk).min(end);
            w.insert(
                "INTERACTION_RESOURCE_FACT",
                IRF_COLS,
                vec![
                    Val::Int(irf),
                    Val::Int(TENANT),
                    Val::Int(id),
                    Val::Int(agent),
                    Val::Int(agent + 100),
                    Val::Int(rng.range(1, 5)),
                    Val::Int(itype),
                    Val::Int(media),
                    Val::Int(rng.range(1, self.descriptors)),
                    Val::Int(date_time_key(t)),
                    Val::Int(t),
                    Val::Int(irf_end),
                    Val::Int(talk),
                    Val::Int(rng.range(0, 60)),
                    Val::Int(rng.range(0, 30)),
                    Val::Int(rng.range(0, 120)),
                    Val::Int(talk),
                    Val::Int(rng.range(0, 20)),
                    Val::Int(1),
                    if rng.percent(20) {
                        Val::Null
                    } else {
                        Val::Int(rng.range(1, 50))
                    },
                    Val::Null,
                    Val::Int(key),
                    Val::Int(key),
                ],
            );
            let mut ud = vec![
                Val::Int(irf),
                Val::Int(date_time_key(t)),
                Val::Int(TENANT),
                Val::Int(key),
                Val::Int(key),
            ];
            for n in 1..=16 {
                ud.push(text::custom_data(rng, n, id));
            }
            w.insert("IRF_USER_DATA_CUST_1", UD_COLS, ud);
            w.data(irf_end, Some(t));
            t = irf_end;
        }
        for _ in 0..rng.below(2) {
            self.ids.msf += 1;
            let dur = rng.range(1, 300);
            w.insert(
                "MEDIATION_SEGMENT_FACT",
                MSF_COLS,
                vec![
                    Val::Int(self.ids.msf),
                    Val::Int(TENANT),
                    Val::Int(id),
                    Val::Int(rng.range(200, 210)),
                    Val::Int(rng.range(1, 5)),
                    Val::Int(media),
                    Val::Int(itype),
                    Val::Int(sdtk),
                    Val::Int(start),
                    Val::Int(start + dur),
                    Val::Int(dur),
                    Val::Int(1),
                    Val::Int(key),
                    Val::Int(key),
                ],
            );
        }
    }

    /// Interactions that have ended by `run_ts` get their END_TS: an update by a later audit key.
    fn close_interactions(&mut self, key: i64, run_ts: i64, w: &mut RunWork) {
        let (done, still): (Vec<Open>, Vec<Open>) =
            self.open.drain(..).partition(|o| o.end <= run_ts);
        self.open = still;
        for o in done {
            w.update(
                "INTERACTION_FACT",
                "INTERACTION_ID",
                &["END_TS", "END_DATE_TIME_KEY", "STATUS", "UPDATE_AUDIT_KEY"],
                vec![
                    Val::Int(o.id),
                    Val::Int(o.end),
                    Val::Int(date_time_key(o.end)),
                    Val::Int(1),
                    Val::Int(key),
                ],
            );
            w.data(o.end, None);
        }
    }

    /// Agents log in in the morning (an open session), change state every run, and log out.
    fn agent_activity(
        &mut self,
        rng: &mut Rng,
        key: i64,
        day_start: i64,
        run: usize,
        sessions: &mut Vec<(i64, i64, i64)>,
        w: &mut RunWork,
    ) {
        let interval = day_start + run as i64 * RUN_SECONDS;
        if run == LOGIN_RUN {
            for &agent in &self.agents {
                self.ids.session += 1;
                let start = interval + rng.below(600) as i64;
                sessions.push((self.ids.session, agent, start));
                w.insert(
                    "SM_RES_SESSION_FACT",
                    SESSION_COLS,
                    vec![
                        Val::Int(self.ids.session),
                        Val::Int(date_time_key(start)),
                        Val::Null,
                        Val::Int(TENANT),
                        Val::Int(1),
                        Val::Int(agent),
                        Val::Int(rng.range(1, 50)),
                        Val::Int(start),
                        Val::Null,
                        Val::Null,
                        Val::Int(0),
                        Val::Int(0),
                        Val::Int(1),
                        Val::Int(0),
                        Val::Int(key),
                        Val::Int(key),
                    ],
                );
                w.data(start, Some(start));
            }
        }
        if (LOGIN_RUN..LOGOUT_RUN).contains(&run) {
            for &(_, agent, login) in sessions.iter() {
                self.ids.state += 1;
                let start = interval.max(login);
                let end = interval + RUN_SECONDS - 1;
                w.insert(
                    "SM_RES_STATE_FACT",
                    STATE_COLS,
                    vec![
                        Val::Int(self.ids.state),
                        Val::Int(date_time_key(start)),
                        Val::Int(date_time_key(end)),
                        Val::Int(TENANT),
                        Val::Int(1),
                        Val::Int(agent),
                        Val::Int(rng.range(1, 50)),
                        Val::Int(rng.range(1, 3)),
                        Val::Int(start),
                        Val::Int(end),
                        Val::Int(end - start),
                        Val::Int(0),
                        Val::Int(0),
                        Val::Int(0),
                        Val::Int(0),
                        Val::Int(key),
                        Val::Int(key),
                    ],
                );
                w.data(end, Some(start));
            }
        }
        if run == LOGOUT_RUN {
            for (id, _, start) in sessions.drain(..) {
                let end = interval + rng.below(600) as i64;
                w.update(
                    "SM_RES_SESSION_FACT",
                    "SM_RES_SESSION_FACT_KEY",
                    &[
                        "END_TS",
                        "END_DATE_TIME_KEY",
                        "TOTAL_DURATION",
                        "ACTIVE_FLAG",
                        "UPDATE_AUDIT_KEY",
                    ],
                    vec![
                        Val::Int(id),
                        Val::Int(end),
                        Val::Int(date_time_key(end)),
                        Val::Int(end - start),
                        Val::Int(0),
                        Val::Int(key),
                    ],
                );
                w.data(end, None);
            }
        }
    }

    /// A dimension row changes (an agent's name), and new descriptor and user-data rows appear.
    fn dimension_changes(&mut self, rng: &mut Rng, key: i64, w: &mut RunWork) {
        if let Some(&agent) = self
            .agents
            .get(rng.below(self.agents.len().max(1) as u64) as usize)
        {
            let last = *rng.pick(text::LAST_NAMES);
            w.update(
                "RESOURCE_",
                "RESOURCE_KEY",
                &["AGENT_LAST_NAME", "UPDATE_AUDIT_KEY"],
                vec![
                    Val::Int(agent),
                    Val::text(format!("{last}-Ñúñez")),
                    Val::Int(key),
                ],
            );
        }
        self.new_descriptor(rng, key, w);
        self.descriptors = self.ids.descriptor;
        self.new_user_dim(rng, key, w);
    }

    /// The in-flight key's last changes, written when it finally settles: it fills in the user data
    /// of the newest interactions, which the higher keys after it created.
    /// (The newest rows through a derived table: MariaDB refuses `LIMIT` in an `IN` subquery, and a
    /// subquery on the table being updated.)
    fn finish_in_flight(&mut self, key: i64, w: &mut RunWork) {
        w.statement(
            format!(
                "UPDATE IRF_USER_DATA_CUST_1 SET CUSTOM_DATA_16 = 'reviewed, late', UPDATE_AUDIT_KEY = {key} \
                 WHERE INTERACTION_RESOURCE_ID IN (SELECT gx.INTERACTION_RESOURCE_ID FROM \
                 (SELECT INTERACTION_RESOURCE_ID FROM IRF_USER_DATA_CUST_1 WHERE CREATE_AUDIT_KEY > {key} \
                 ORDER BY INTERACTION_RESOURCE_ID DESC LIMIT 3) gx)"
            ),
            3,
        );
    }
}

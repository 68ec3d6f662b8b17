//! `gim-export simulate`: create or extend a source Info Mart with simulated contact-centre activity.

use anyhow::Result;

use super::{parse_date, parse_url};
use crate::exit::ExitCode;
use crate::simulate::{self, SimConfig};

/// Create or extend a source Info Mart with simulated contact-centre activity.
///
/// Creates the schema if missing, then appends --days days after the last simulated one: one ETL run
/// (audit key) every 15 minutes, interactions and their resources, mediation segments, user data, agent
/// sessions and states, later updates, late data, changing dimensions, awkward text, a run that
/// finishes after the next one, and a key left in flight at the end. Deterministic from --seed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source Info Mart to create or extend: sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB (MariaDB too). Taken from
    /// this flag only, never from GIM_EXPORT_SOURCE or the configuration file, which name the
    /// production Info Mart.
    #[arg(long, default_value = "sqlite://infomart.db")]
    pub source: String,
    /// Write into a database that already holds an Info Mart simulate did not create (its rows
    /// would mix with the simulated ones). Without it such a database is refused.
    #[arg(long)]
    pub into_existing: bool,
    /// Days of activity to append.
    #[arg(long, default_value_t = 3)]
    pub days: u32,
    /// Seed of the random history.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Interactions per simulated day (each brings ~4-5 rows across the fact tables).
    #[arg(long, default_value_t = 2000)]
    pub interactions_per_day: u32,
    /// First simulated day (YYYY-MM-DD, UTC) of an empty database.
    #[arg(long, default_value = "2024-01-01")]
    pub start_date: String,
    /// PostgreSQL only: create the fact tables as a partitioned Info Mart has them (range partitions
    /// by day of START_DATE_TIME_KEY for the interaction, resource, mediation and user-data facts;
    /// inheritance children `<table>_hist` holding the older agent sessions and states). Applies
    /// when the schema is first created.
    #[arg(long)]
    pub partitioned: bool,
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let target = parse_url("--source", &args.source)?;
    if args.partitioned && target.dialect() != crate::db::Dialect::Postgres {
        return Err(super::ConfigError(format!(
            "--partitioned applies to PostgreSQL sources only, not {target}"
        ))
        .into());
    }
    let config = SimConfig {
        target,
        days: args.days,
        seed: args.seed,
        interactions_per_day: args.interactions_per_day,
        start_ts: parse_date("--start-date", &args.start_date)?,
        partitioned: args.partitioned,
        into_existing: args.into_existing,
    };
    let started = std::time::Instant::now();
    // A SQLite file this call creates goes again if the call fails: it adds its days or nothing.
    let new_file = config
        .target
        .expose()
        .strip_prefix("sqlite://")
        .map(|p| std::path::PathBuf::from(p.split('?').next().unwrap_or(p)))
        .filter(|p| !p.exists());
    let report = match simulate::run(&config).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(p) = new_file {
                let _ = std::fs::remove_file(&p);
            }
            return Err(e);
        }
    };
    crate::out!(
        "simulated {} day(s) from {} into {}: audit keys {}..{}, {} rows inserted, {} updated, in flight: {:?} ({:.1}s)",
        report.days,
        chrono::DateTime::from_timestamp(report.first_day, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        config.target,
        report.first_audit_key,
        report.last_audit_key,
        report.rows_inserted,
        report.rows_updated,
        report.in_flight,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::Success)
}

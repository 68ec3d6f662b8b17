//! The integration tests: one binary, one module per area, all running the real `gim-export`
//! binary or library against real SQLite files and a real PostgreSQL server.

mod harness;
mod tamper;

mod bad_input;
mod chain_model;
mod chain_safety;
mod chains;
mod compare;
mod concurrency;
mod config;
mod crash;
mod crypto;
mod delivery;
mod deploy;
mod encoding;
mod export_format;
mod failures;
mod follow;
mod golden;
mod hardening;
mod hostile;
mod hostile_source;
mod load;
mod load_crash;
mod load_refusals;
mod mariadb;
mod ops;
mod out_of_order;
mod property;
mod real_infomart;
mod scale;
mod sqlite_vs_postgres;
mod views;

//! Integration tests against a real PostgreSQL server (see support/).

#![allow(
    clippy::pedantic,
    reason = "tests favour directness over the pedantic lints"
)]

mod support;

mod adopt;
mod app_attacks;
mod app_edges;
mod app_migrator;
mod app_migrator_attacks;
mod app_ready;
mod attacks20;
mod attacks_liveness;
mod bad_input;
mod baseline;
mod basics;
mod book;
mod bulk_create;
mod concurrency;
mod configuration;
mod db_names;
mod deploy;
mod doctor;
mod drift;
mod drift_attacks;
mod drift_prisma;
mod exec;
mod failures;
mod fleet;
mod hardening;
mod help;
mod json_contract;
mod library;
mod migrate;
mod moves;
mod mutants_kill;
mod pooler;
mod prisma_master;
mod reports;
mod revert;
mod selection;
mod servers;
mod shell;
mod sql;
mod template;
mod template_attacks;
mod tenant_drop;
mod terminal;
mod timeouts;
mod toolbox;
mod trust_attacks;
mod trust_dry_run;
mod trust_interrupt;
mod trust_master;
mod trust_pooler;
mod trust_secrets;
mod trust_selection;
mod trust_visibility;

//! Integration tests against a real PostgreSQL server (see support/).

#![allow(
    clippy::pedantic,
    reason = "tests favour directness over the pedantic lints"
)]

mod support;

mod bad_input;
mod baseline;
mod basics;
mod concurrency;
mod configuration;
mod db_names;
mod doctor;
mod failures;
mod fleet;
mod hardening;
mod library;
mod migrate;
mod selection;
mod tenant_drop;
mod terminal;
mod timeouts;
mod toolbox;

//! Integration tests against a real PostgreSQL server (see support/).

#![allow(
    clippy::pedantic,
    reason = "tests favour directness over the pedantic lints"
)]

mod support;

mod adopt;
mod bad_input;
mod basics;
mod exec;
mod failures;
mod fleet;
mod hardening;
mod library;
mod moves;
mod pooler;
mod servers;
mod sql;
mod toolbox;

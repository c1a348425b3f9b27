//! Integration tests against a real PostgreSQL server (see support/).

#![allow(
    clippy::pedantic,
    reason = "tests favour directness over the pedantic lints"
)]

mod support;

mod bad_input;
mod basics;
mod failures;
mod fleet;
mod library;
mod sql;
mod toolbox;

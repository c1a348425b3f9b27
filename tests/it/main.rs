//! Integration tests against a real PostgreSQL server (see support/).

#![allow(
    clippy::pedantic,
    reason = "tests favour directness over the pedantic lints"
)]

mod support;

mod bad_input;
mod basics;
mod exec;
mod failures;
mod fleet;
mod library;
mod toolbox;

//! The Shardline server as a library: configuration, wiring, the HTTP endpoints and the
//! `group` admin commands (a Kafka client). The `shardline` binary (`main.rs`) is a thin
//! CLI over this, and the test kit starts the
//! same [`server::RunningServer`] in-process.
//!
//! This is the only crate that uses `anyhow`; libraries below it return typed errors.

pub mod config;
pub mod group_cmd;
pub mod http;
pub mod output;
pub mod server;
pub mod stream_cmd;

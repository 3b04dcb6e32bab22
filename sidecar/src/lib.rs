//! Tollgate sidecar: owns the access profiles of the Tollgate OAuth 2.0
//! client-credentials gateway and feeds them to the Envoy proxy-wasm filter.
//!
//! * [`store`] — the SQLite store (profiles, tombstones, revision counter).
//! * [`server`] — the HTTP admin API, data API and health endpoints.
//! * [`auth`] — bearer-token loading and constant-time checks.
//! * [`views`] — the JSON shapes shared by the HTTP API and the CLI.

pub mod auth;
pub mod server;
pub mod store;
pub mod views;

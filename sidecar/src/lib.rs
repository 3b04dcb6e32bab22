//! Tollgate sidecar: owns the access profiles of the Tollgate OAuth 2.0
//! client-credentials gateway and feeds them to the Envoy proxy-wasm filter.
//!
//! * [`store`] — the profile store interface and its engines: SQLite (the
//!   default) and PostgreSQL (fleets of sidecars on one database).
//! * [`keyring`] — the key file's key, and signing keys sealed with it.
//! * [`permissions`] — the store's files private to the sidecar's user.
//! * [`server`] — the HTTP admin API, data API and health endpoints.
//! * [`auth`] — bearer-token loading and constant-time checks.
//! * [`views`] — the JSON shapes shared by the HTTP API and the CLI; the data
//!   API's are the filter's own contract types ([`tollgate::contract`]).

pub mod auth;
pub mod keyring;
pub mod permissions;
pub mod server;
pub mod store;
pub mod views;

//! Tollgate: an OAuth 2.0 client-credentials token endpoint and a bearer-token
//! guard that run inline in Envoy as one proxy-wasm filter.
//!
//! Everything outside [`host`] is pure: no `proxy_wasm` import, time (plain
//! Unix seconds, read once per callback by the host through
//! [`flow::RequestHost::now_secs`]) and randomness passed in, so the logic
//! runs natively and under Node (wasm-bindgen-test), and `exp`/`nbf` are
//! tested at any instant. The host layer is a few short files of glue.
//!
//! Envoy's V8 compiles every function with TurboFan (no Liftoff), and the
//! memory of that compile, which grows faster than a function's size, stays
//! in Envoy's tcmalloc afterwards (free pages): a few large functions cost
//! MiBs of RSS. The cold parsers (configuration, token
//! request bodies) are therefore kept `#[inline(never)]` in pieces, so that
//! LLVM does not fold them into one function of 12-18 KB of Wasm.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod b64;
pub mod config;
pub mod contract;
pub mod discovery;
pub mod error;
pub mod flow;
pub mod guard;
pub mod headers;
pub mod jwt;
pub mod lockout;
pub mod media_type;
pub mod metrics;
pub mod params;
pub mod path;
pub mod profile;
pub mod response;
pub mod shared;
pub mod sync;
pub mod token_endpoint;
pub mod token_request;
mod vectors;

#[cfg(feature = "host")]
mod host;

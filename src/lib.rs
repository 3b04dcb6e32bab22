//! Tollgate: an OAuth 2.0 client-credentials token endpoint and a bearer-token
//! guard that run inline in Envoy as one proxy-wasm filter.
//!
//! Everything outside [`host`] is pure: no `proxy_wasm` import, time and
//! randomness passed in, so the logic runs natively and under Node
//! (wasm-bindgen-test). The host layer is a few short files of glue.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod b64;
pub mod config;
pub mod contract;
pub mod error;
pub mod flow;
pub mod guard;
pub mod jwt;
pub mod lockout;
pub mod media_type;
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

/// Seconds since the Unix epoch, from the host's clock. Injected everywhere a
/// decision depends on time so `exp`/`nbf` handling is testable.
pub trait Clock {
    fn now_secs(&self) -> u64;
}

/// A fixed clock for tests and for the host layer, which reads the host time
/// once per callback.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_secs(&self) -> u64 {
        self.0
    }
}

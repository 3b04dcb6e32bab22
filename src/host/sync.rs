//! Glue for the sync role: shared data as a [`SharedStore`], and the root
//! context's tick and callout plumbing around [`crate::sync::Poller`].

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

use super::log;
use super::metrics::Metrics;
use crate::config::SidecarConfig;
use crate::metrics::{self as metric, Metric};
use crate::shared::{Namespaced, SharedStore, StoreError};
use crate::sync::{self, FailureKind, Level, Poller, Request, SyncStats};

/// Envoy's shared data for this `vm_id` (all of it: [`Namespaced`] narrows it to one plugin).
#[derive(Clone, Copy, Default)]
pub(crate) struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        // On the request path too (profile lookups): the panic-free call.
        match super::abi::shared_data(key) {
            Ok(Some((v, cas))) if !v.is_empty() => Some((v, cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        // On the request path too (lockout counters): the panic-free call.
        match super::abi::set_shared_data(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(()),
            Err(super::abi::Status(super::abi::CAS_MISMATCH)) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Other),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn logger() -> impl FnMut(Level, &str) {
    |level, message| {
        log(
            match level {
                Level::Info => LogLevel::Info,
                Level::Warn => LogLevel::Warn,
                Level::Error => LogLevel::Error,
            },
            message,
        )
    }
}

/// The root context's sync duties. (Not `Sync`: that name is std's marker
/// trait.)
pub(crate) struct SidecarSync {
    poller: Poller,
    sidecar: SidecarConfig,
    store: Namespaced<HostStore>,
    metrics: Rc<Metrics>,
    /// The poller's counters as last exported (Envoy counters take deltas).
    reported: SyncStats,
}

impl SidecarSync {
    pub(crate) fn new(sidecar: SidecarConfig, namespace: &str, metrics: Rc<Metrics>) -> Self {
        // Random per worker VM (std's RandomState is keyed from WASI
        // random_get): context ids repeat across workers, lease owners must not.
        let me = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), now_ms());
        let store = Namespaced::new(HostStore, namespace);
        Self { poller: Poller::new(me), sidecar, store, metrics, reported: SyncStats::default() }
    }

    pub(crate) fn on_tick(&mut self) {
        if let Some(request) = self.poller.on_tick(&self.store, now_ms(), &mut logger()) {
            self.dispatch(request);
        }
        self.report();
    }

    /// The snapshot age gauge. Every worker ticks and reads the shared
    /// stamp, so the age keeps moving whichever worker polls.
    pub(crate) fn report_age(&self, configured_at: u64) {
        let now = super::now_secs();
        let age = metric::snapshot_age(now, sync::snapshot_age_secs(&self.store, now), configured_at);
        self.metrics.set(Metric::SnapshotAgeSeconds, age);
    }

    /// The poller's new counts since the last report, and the profile count
    /// (only the poller knows it without reading the whole index).
    fn report(&mut self) {
        let stats = self.poller.stats();
        self.metrics.count(Metric::SyncSuccesses, stats.successes.saturating_sub(self.reported.successes));
        for (i, kind) in FailureKind::ALL.into_iter().enumerate() {
            let new = stats.failures_by_kind[i].saturating_sub(self.reported.failures_by_kind[i]);
            self.metrics.count(Metric::SyncFailures(metric::sync_failure_index(kind)), new);
        }
        self.reported = stats;
        if let Some(n) = self.poller.profiles_published() {
            self.metrics.set(Metric::ProfilesLoaded, n as u64);
        }
    }

    pub(crate) fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        // The bytes variant: the SDK's string getter panics on non-UTF-8.
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u32>().ok());
        let body =
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        if let Some(next) = self.poller.on_response(&self.store, token, status, &body, now_ms(), &mut logger()) {
            self.dispatch(next);
        }
        self.report();
    }

    fn dispatch(&mut self, request: Request) {
        let path = request.path(self.sidecar.long_poll_seconds);
        let auth = format!("Bearer {}", self.sidecar.data_token);
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", self.sidecar.authority.as_str()),
            ("authorization", auth.as_str()),
        ];
        let timeout = Duration::from_secs(self.sidecar.long_poll_seconds + 5);
        match hostcalls::dispatch_http_call(&self.sidecar.cluster, headers, None, vec![], timeout) {
            Ok(token) => self.poller.dispatched(request, token),
            Err(_) => self.poller.dispatch_failed(&self.store, now_ms(), &mut logger()),
        }
    }
}

//! Glue for the sync role: shared data as a [`SharedStore`], and the root
//! context's tick and callout plumbing around [`crate::sync::Poller`].

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use super::log;
use crate::config::SidecarConfig;
use crate::shared::{Namespaced, SharedStore, StoreError};
use crate::sync::{Level, Poller, Request};

/// Envoy's shared data for this `vm_id` (all of it: [`Namespaced`] narrows it to one plugin).
#[derive(Clone, Copy, Default)]
pub(crate) struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), cas)) if !v.is_empty() => Some((v, cas.unwrap_or(0))),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
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
}

impl SidecarSync {
    pub(crate) fn new(sidecar: SidecarConfig, namespace: &str) -> Self {
        // Random per worker VM (std's RandomState is keyed from WASI
        // random_get): context ids repeat across workers, lease owners must not.
        let me = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), now_ms());
        Self { poller: Poller::new(me), sidecar, store: Namespaced::new(HostStore, namespace) }
    }

    pub(crate) fn on_tick(&mut self) {
        if let Some(request) = self.poller.on_tick(&self.store, now_ms(), &mut logger()) {
            self.dispatch(request);
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
            Err(_) => self.poller.dispatch_failed(&HostStore, now_ms(), &mut logger()),
        }
    }
}

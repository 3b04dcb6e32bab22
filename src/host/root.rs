//! The per-worker root context: configuration, the profile source and the
//! worker's verified-token cache, shared with its HTTP contexts.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use super::http::Http;
use super::log;
use super::metrics::Metrics;
use super::sync::{HostStore, SidecarSync};
use crate::config::Config;
use crate::guard::VerifiedCache;
use crate::metrics::Metric;
use crate::profile::{ProfileLookup, ProfileSet};
use crate::shared::{Namespaced, SharedProfiles};
use crate::sync::TICK_MS;

/// Where HTTP contexts get profiles from.
pub(crate) enum ProfileSource {
    /// The `profiles` list of the plugin config; never changes.
    Static(Rc<ProfileSet>),
    /// The shared-data cache the elected poller keeps in sync with the
    /// sidecar; refused (503) before the first snapshot or when stale.
    Shared { view: Rc<SharedProfiles<Namespaced<HostStore>>>, max_staleness: Option<u64> },
}

impl ProfileSource {
    pub(crate) fn current(&self, now_ms: u64) -> Result<(Rc<dyn ProfileLookup>, u64), &'static str> {
        match self {
            Self::Static(set) => Ok((Rc::clone(set) as Rc<dyn ProfileLookup>, 0)),
            Self::Shared { view, max_staleness } => {
                let generation = view.refresh_recent(now_ms, *max_staleness)?;
                Ok((Rc::clone(view) as Rc<dyn ProfileLookup>, generation))
            }
        }
    }
}

/// Makes `jti` values: 128 bits of SipHash, keyed from the host's randomness
/// (WASI `random_get`, which std's `RandomState` draws on), over a counter.
/// Never-repeating inputs under a per-worker random key give distinct values
/// with overwhelming probability; they do not reveal how many tokens a worker
/// minted, and cost neither a hostcall nor a SHA-256 block per token.
pub(crate) struct JtiSource {
    keys: RandomState,
    counter: u64,
}

impl JtiSource {
    fn new() -> Self {
        Self { keys: RandomState::new(), counter: 0 }
    }

    pub(crate) fn next(&mut self) -> [u8; 16] {
        self.counter += 1;
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.keys.hash_one((self.counter, 0u8)).to_le_bytes());
        out[8..].copy_from_slice(&self.keys.hash_one((self.counter, 1u8)).to_le_bytes());
        out
    }
}

/// State one worker's HTTP contexts share with their root.
pub(crate) struct Worker {
    pub(crate) config: Config,
    pub(crate) profiles: ProfileSource,
    pub(crate) cache: RefCell<VerifiedCache>,
    pub(crate) jti: RefCell<JtiSource>,
    pub(crate) metrics: Rc<Metrics>,
    /// This plugin's slice of shared data (the lockout tables live there).
    pub(crate) shared: Namespaced<HostStore>,
}

pub(crate) struct Root {
    worker: Option<Rc<Worker>>,
    sync: Option<SidecarSync>,
    configured_at: u64,
}

impl Root {
    pub(crate) fn new() -> Self {
        Self { worker: None, sync: None, configured_at: 0 }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if let Some(sync) = self.sync.as_mut() {
            sync.on_http_call_response(token_id, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes =
            proxy_wasm::hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
                .ok()
                .flatten()
                .unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Critical, &e.to_string());
                return false;
            }
        };
        // Every worker defines the same names; Envoy shares a stat by name.
        let metrics = Rc::new(Metrics::define(config.metrics));
        self.configured_at = super::now_secs();
        let profiles = match (&config.static_profiles, &config.sidecar) {
            (Some(set), _) => {
                metrics.set(Metric::ProfilesLoaded, set.len() as u64);
                log(
                    LogLevel::Info,
                    &format!("configured: token path {}, {} static profile(s)", config.token_path, set.len()),
                );
                ProfileSource::Static(Rc::clone(set))
            }
            (None, Some(sidecar)) => {
                // Every worker ticks; the lease in shared data lets only one
                // of them poll (Istio's WasmPlugin has no singleton VM).
                self.sync = Some(SidecarSync::new(sidecar.clone(), &config.shared_data_namespace, Rc::clone(&metrics)));
                self.set_tick_period(std::time::Duration::from_millis(TICK_MS));
                log(
                    LogLevel::Info,
                    &format!("configured: token path {}, profiles from cluster {}", config.token_path, sidecar.cluster),
                );
                ProfileSource::Shared {
                    view: Rc::new(SharedProfiles::new(Namespaced::new(HostStore, &config.shared_data_namespace))),
                    max_staleness: sidecar.max_staleness_seconds,
                }
            }
            // Config::parse guarantees exactly one source.
            (None, None) => return false,
        };
        self.worker = Some(Rc::new(Worker {
            cache: RefCell::new(VerifiedCache::new(config.cache_size)),
            jti: RefCell::new(JtiSource::new()),
            metrics,
            shared: Namespaced::new(HostStore, &config.shared_data_namespace),
            config,
            profiles,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics (aborting the VM) when a root declines.
        // Without a valid configuration the context refuses every request.
        Some(Box::new(Http::new(self.worker.clone())))
    }

    fn on_tick(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.on_tick();
            sync.report_age(self.configured_at);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

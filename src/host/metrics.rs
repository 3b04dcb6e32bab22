//! Envoy metrics through the proxy-wasm ABI: every metric of
//! [`crate::metrics::Metric::all`] defined once per worker VM, counted by id.
//!
//! The SDK's `hostcalls::define_metric` (and the increment/record wrappers)
//! panic on a status they do not expect, and a panic aborts the VM: the
//! imports are called directly here, and a failure only costs that metric.

use super::log;
use crate::metrics::{Kind, Metric, Outcome};
use proxy_wasm::types::LogLevel;

// Same symbols as the SDK's declarations, returning the raw status word so an
// unexpected value is just "not Ok".
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

const OK: u32 = 0;

/// One worker's metric ids, by catalogue index (`None`: off, or the host
/// refused to define it).
pub(crate) struct Metrics {
    ids: Vec<Option<u32>>,
}

impl Metrics {
    /// Defines every metric, or none when `enabled` is false.
    pub(crate) fn define(enabled: bool) -> Self {
        let all = Metric::all();
        let mut ids = vec![None; all.len()];
        if enabled {
            let mut failed = 0;
            for m in all {
                let name = m.stat_name();
                let kind = match m.kind() {
                    Kind::Counter => 0,
                    Kind::Gauge => 1,
                };
                let mut id = 0u32;
                // SAFETY: the name pointer and length describe a live
                // String, and `id` outlives the call.
                let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
                if status == OK {
                    ids[m.index()] = Some(id);
                } else {
                    failed += 1;
                }
            }
            if failed > 0 {
                log(LogLevel::Warn, &format!("the host refused to define {failed} tollgate metric(s)"));
            }
        }
        Self { ids }
    }

    fn id(&self, m: Metric) -> Option<u32> {
        self.ids.get(m.index()).copied().flatten()
    }

    pub(crate) fn count(&self, m: Metric, n: u64) {
        if let (Some(id), Ok(n)) = (self.id(m), i64::try_from(n)) {
            if n > 0 {
                // SAFETY: plain integers.
                let _ = unsafe { proxy_increment_metric(id, n) };
            }
        }
    }

    pub(crate) fn record(&self, outcome: Outcome) {
        self.count(outcome.metric(), 1);
    }

    /// Sets a gauge. Gauges are shared by name across workers, last write
    /// wins: each is written only with a value every writer agrees on (the
    /// age from the shared stamp, the count from the one poller).
    pub(crate) fn set(&self, m: Metric, value: u64) {
        if let (Kind::Gauge, Some(id)) = (m.kind(), self.id(m)) {
            // SAFETY: plain integers.
            let _ = unsafe { proxy_record_metric(id, value) };
        }
    }
}

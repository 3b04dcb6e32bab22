//! Envoy metrics through the proxy-wasm ABI: every metric of
//! [`crate::metrics::Metric::all`] defined once per worker VM, counted by id.
//! The calls go through [`super::abi`] (the SDK's wrappers panic on a status
//! they do not expect, which would abort the VM): a failure only costs that
//! metric.

use proxy_wasm::types::LogLevel;

use super::{abi, log};
use crate::metrics::{Kind, Metric, Outcome};

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
                let kind = match m.kind() {
                    Kind::Counter => abi::COUNTER,
                    Kind::Gauge => abi::GAUGE,
                };
                match abi::define_metric(kind, &m.stat_name()) {
                    Ok(id) => ids[m.index()] = Some(id),
                    Err(_) => failed += 1,
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
                let _ = abi::increment_metric(id, n);
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
            let _ = abi::record_metric(id, value);
        }
    }
}

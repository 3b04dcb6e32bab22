//! The per-request HTTP context: maps proxy-wasm callbacks onto
//! [`crate::flow::RequestFlow`] and hostcalls onto [`RequestHost`].

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::abi;
use super::log;
use super::root::Worker;
use crate::flow::{self, RequestFlow, RequestHost};
use crate::metrics::Outcome;
use crate::profile::ProfileLookup;
use crate::response::LocalResponse;
use crate::shared::SharedStore;

pub(crate) struct Http {
    /// `None` when the plugin has no valid configuration: the SDK aborts the
    /// VM if the root declines to create a context, so one is created and
    /// refuses the request instead (fail closed).
    worker: Option<Rc<Worker>>,
    flow: RequestFlow,
    refused: bool,
}

impl Http {
    pub(crate) fn new(worker: Option<Rc<Worker>>) -> Self {
        Self { worker, flow: RequestFlow::default(), refused: false }
    }

    fn unconfigured(&mut self) -> Action {
        if !self.refused {
            self.refused = true;
            let e = crate::error::BearerError::Unavailable("the filter has no valid configuration");
            Host::send(LocalResponse::bearer_error(e, "tollgate"));
        }
        Action::Pause
    }
}

/// The hostcall side of [`RequestHost`], borrowed for one callback.
struct Host<'a> {
    worker: &'a Worker,
}

impl Host<'_> {
    fn send(r: LocalResponse) {
        if let Err(abi::Status(s)) = abi::send_local_response(r.status, &r.headers, &r.body) {
            log(LogLevel::Error, &format!("could not send the local response: status {s}"));
        }
    }
}

impl RequestHost for Host<'_> {
    fn request_headers(&self) -> crate::headers::HeaderMap {
        // No map means no path, no credentials: the flow refuses.
        abi::header_map(abi::REQUEST_HEADERS).unwrap_or_default()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let done = match value {
            Some(v) => abi::replace_header(abi::REQUEST_HEADERS, name, v),
            None => abi::remove_header(abi::REQUEST_HEADERS, name),
        };
        if let Err(abi::Status(s)) = done {
            log(LogLevel::Error, &format!("could not change request header {name}: status {s}"));
        }
    }

    fn set_property(&mut self, name: &str, value: &str) {
        if let Err(abi::Status(s)) = abi::set_property(name, value) {
            log(LogLevel::Error, &format!("could not set property {name}: status {s}"));
        }
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::buffer(abi::REQUEST_BODY, 0, size).ok()
    }

    fn respond(&mut self, r: LocalResponse) {
        Host::send(r);
    }

    fn now_millis(&self) -> u64 {
        abi::current_time_nanos().map_or(0, |ns| ns / 1_000_000)
    }

    fn jti(&mut self) -> [u8; 16] {
        self.worker.jti.borrow_mut().next()
    }

    fn profiles(&mut self, now_ms: u64) -> Result<(Rc<dyn ProfileLookup>, u64), &'static str> {
        self.worker.profiles.current(now_ms)
    }

    fn source_address(&self) -> Option<String> {
        let bytes = abi::property(&["source", "address"]).ok().flatten()?;
        String::from_utf8(bytes).ok()
    }

    fn shared_store(&self) -> &dyn SharedStore {
        &self.worker.shared
    }

    fn log(&self, message: std::fmt::Arguments) {
        if abi::log_level().is_ok_and(|l| l <= LogLevel::Debug as u32) {
            log(LogLevel::Debug, &message.to_string());
        }
    }

    fn record(&mut self, outcome: Outcome) {
        self.worker.metrics.record(outcome);
    }
}

fn action(a: flow::Action) -> Action {
    match a {
        flow::Action::Continue => Action::Continue,
        flow::Action::Pause => Action::Pause,
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else { return self.unconfigured() };
        let mut host = Host { worker: &worker };
        let mut cache = worker.cache.borrow_mut();
        action(self.flow.on_request_headers(&mut host, &worker.config, &mut cache, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else { return self.unconfigured() };
        let mut host = Host { worker: &worker };
        action(self.flow.on_request_body(&mut host, &worker.config, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(worker) = self.worker.clone() else { return self.unconfigured() };
        let mut host = Host { worker: &worker };
        action(self.flow.on_request_trailers(&mut host, &worker.config))
    }
}

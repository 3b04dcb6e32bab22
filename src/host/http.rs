//! The per-request HTTP context: maps proxy-wasm callbacks onto
//! [`crate::flow::RequestFlow`] and hostcalls onto [`RequestHost`].

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::root::Worker;
use super::{log, now_secs};
use crate::flow::{self, RequestFlow, RequestHost};
use crate::profile::ProfileLookup;
use crate::response::LocalResponse;
use crate::shared::SharedStore;

pub(crate) struct Http {
    worker: Rc<Worker>,
    flow: RequestFlow,
}

impl Http {
    pub(crate) fn new(worker: Rc<Worker>) -> Self {
        Self { worker, flow: RequestFlow::default() }
    }
}

/// The hostcall side of [`RequestHost`], borrowed for one callback.
struct Host<'a> {
    worker: &'a Worker,
}

impl RequestHost for Host<'_> {
    fn request_header(&self, name: &str) -> Option<String> {
        match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
            // A header that is not UTF-8 cannot be a valid credential, path or
            // media type; treat it as garbage rather than panic.
            Ok(Some(v)) => Some(String::from_utf8(v).unwrap_or_else(|_| "\u{fffd}".to_owned())),
            _ => None,
        }
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten()
    }

    fn respond(&mut self, r: LocalResponse) {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if hostcalls::send_http_response(r.status, headers, Some(&r.body)).is_err() {
            log(LogLevel::Error, "could not send the local response");
        }
    }

    fn now_secs(&self) -> u64 {
        now_secs()
    }

    fn jti(&mut self) -> [u8; 16] {
        self.worker.jti.borrow_mut().next()
    }

    fn profiles(&mut self) -> Result<(Rc<dyn ProfileLookup>, u64), &'static str> {
        self.worker.profiles.current()
    }

    fn source_address(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["source", "address"]).ok().flatten()?;
        String::from_utf8(bytes).ok()
    }

    fn shared_store(&self) -> &dyn SharedStore {
        &self.worker.shared
    }

    fn log(&self, message: std::fmt::Arguments) {
        if hostcalls::get_log_level().is_ok_and(|l| matches!(l, LogLevel::Trace | LogLevel::Debug)) {
            log(LogLevel::Debug, &message.to_string());
        }
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
        let worker = Rc::clone(&self.worker);
        let mut host = Host { worker: &worker };
        let mut cache = worker.cache.borrow_mut();
        action(self.flow.on_request_headers(&mut host, &worker.config, &mut cache, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let worker = Rc::clone(&self.worker);
        let mut host = Host { worker: &worker };
        action(self.flow.on_request_body(&mut host, &worker.config, body_size, end_of_stream))
    }
}

//! The proxy-wasm glue: a root context per worker VM that parses the config
//! once, and a tiny HTTP context per request that hands every decision to
//! [`crate::flow`]. Hostcalls go through `proxy_wasm::hostcalls` with their
//! errors handled: the SDK's trait helpers unwrap, and a panic aborts the VM.

mod http;
mod metrics;
mod root;
mod sync;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(root::Root::new()) });
}}

pub(crate) fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

pub(crate) fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

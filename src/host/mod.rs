//! The proxy-wasm glue: a root context per worker VM that parses the config
//! once, and a tiny HTTP context per request that hands every decision to
//! [`crate::flow`]. The request path's hostcalls go through [`abi`], which
//! returns every host status as an error: the SDK's helpers and its
//! `hostcalls` panic on statuses they do not expect, and a panic aborts the VM.

mod abi;
mod http;
mod metrics;
mod root;
mod sync;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        log(LogLevel::Critical, &format!("panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(root::Root::new()) });
}}

pub(crate) fn log(level: LogLevel, message: &str) {
    let _ = abi::log(level as u32, message);
}

pub(crate) fn now_secs() -> u64 {
    abi::current_time_nanos().map_or(0, |ns| ns / 1_000_000_000)
}

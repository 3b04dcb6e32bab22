//! The hostcalls the request path makes, declared against the proxy-wasm ABI
//! directly. The SDK's `hostcalls` panic on any status they do not expect
//! (Envoy answers `BadArgument` to a second local reply, and to a header map
//! read outside the callback that owns the map), its map decoder unwraps
//! UTF-8, and a panic aborts the worker's VM: every request on that worker
//! then fails. Here each status comes back as an error the caller handles.

use std::ptr::{null, null_mut};

use crate::headers::HeaderMap;

/// The ABI's `WasmResult` values we tell apart.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
pub(crate) const CAS_MISMATCH: u32 = 8;

/// A status other than the ones a call expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status(pub(crate) u32);

/// The ABI's map and buffer kinds (`proxy_wasm::types::{MapType, BufferType}`).
pub(crate) const REQUEST_HEADERS: u32 = 0;
pub(crate) const REQUEST_BODY: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(kind: u32, start: usize, max: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_pairs(kind: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(kind: u32, key: *const u8, key_size: usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Takes ownership of bytes the host allocated in our memory (through the
/// SDK's `proxy_on_memory_allocate`, a boxed slice of exactly `size`).
///
/// # Safety
/// `data` is null or was returned by the host with `size` for this call.
unsafe fn host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// The ABI's metric kinds (`proxy_wasm::types::MetricType`).
pub(crate) const COUNTER: u32 = 0;
pub(crate) const GAUGE: u32 = 1;

pub(crate) fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: a valid pointer and length into our memory; the host writes
    // one u32 into `id`.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain integers.
    check(unsafe { proxy_increment_metric(id, offset) })
}

pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain integers.
    check(unsafe { proxy_record_metric(id, value) })
}

pub(crate) fn log(level: u32, message: &str) -> Result<(), Status> {
    // SAFETY: a valid pointer and length into our memory.
    check(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

pub(crate) fn log_level() -> Result<u32, Status> {
    let mut level = 0;
    // SAFETY: the host writes one u32 into `level`.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(level)
}

pub(crate) fn current_time_nanos() -> Result<u64, Status> {
    let mut t = 0;
    // SAFETY: the host writes one u64 into `t`.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub(crate) fn buffer(kind: u32, start: usize, max: usize) -> Result<Vec<u8>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes a pointer it allocated in our memory and its size.
    match unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) } {
        OK => Ok(unsafe { host_bytes(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Status(other)),
    }
}

/// A header map, read in place (one allocation, the host's buffer).
pub(crate) fn header_map(kind: u32) -> Result<HeaderMap, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: as in `buffer`.
    check(unsafe { proxy_get_header_map_pairs(kind, &mut data, &mut size) })?;
    let bytes = unsafe { host_bytes(data, size) };
    HeaderMap::decode(bytes).ok_or(Status(u32::MAX))
}

pub(crate) fn replace_header(kind: u32, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: valid pointers and lengths into our memory.
    check(unsafe { proxy_replace_header_map_value(kind, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

pub(crate) fn remove_header(kind: u32, name: &str) -> Result<(), Status> {
    // SAFETY: a valid pointer and length into our memory.
    check(unsafe { proxy_remove_header_map_value(kind, name.as_ptr(), name.len()) })
}

pub(crate) fn send_local_response<N: AsRef<str>, V: AsRef<str>>(
    status: u32,
    headers: &[(N, V)],
    body: &[u8],
) -> Result<(), Status> {
    let headers = HeaderMap::encode(headers);
    // SAFETY: valid pointers and lengths into our memory; no details, no gRPC status.
    check(unsafe {
        proxy_send_local_response(status, null(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), -1)
    })
}

/// A host property (`["source", "address"]`), `None` when absent.
pub(crate) fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = path.join("\0");
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: as in `buffer`.
    match unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) } {
        OK => Ok(Some(unsafe { host_bytes(data, size) })),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Sets a one-segment property: Envoy keeps it as filter state
/// `wasm.<name>` of the request.
pub(crate) fn set_property(name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: both pointers are valid for their sizes during the call.
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS, `None` when absent.
pub(crate) fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: as in `buffer`, plus one u32 for the CAS.
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) } {
        OK if data.is_null() => Ok(None),
        OK => Ok(Some((unsafe { host_bytes(data, size) }, cas))),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Writes a shared-data value; `cas` 0 writes whatever is there. A CAS
/// mismatch comes back as its status ([`CAS_MISMATCH`]).
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: valid pointers and lengths into our memory.
    check(unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) })
}

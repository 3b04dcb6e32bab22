//! The empty proxy-wasm filter: the exports Envoy needs to load a module and
//! run an HTTP filter from it, and nothing else. A request enters the VM as
//! often as it enters Tollgate's (context create, request headers, delete;
//! `vendor/proxy-wasm/PATCHED.md`), and does no work there: the bench's
//! `floor` scenario is the least a proxy-wasm filter can cost.
//!
//! A request with a body (the bench's `floor_token`: a token request) is
//! held until its body has arrived and then answered with a local response:
//! the plugin configuration's bytes as the body, under the token response's
//! headers. That is the least a proxy-wasm token endpoint can cost: the same
//! VM entries and the same local reply as Tollgate's, without reading the
//! request, checking a secret or minting.
#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// Envoy reads the ABI version from this export's name.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

const SCRATCH_SIZE: usize = 1024;

/// The host hands this module one buffer, the plugin configuration, when it
/// is configured: a fixed scratch area is enough for an allocator.
static mut SCRATCH: [u8; SCRATCH_SIZE] = [0; SCRATCH_SIZE];

/// The local reply's body (the plugin configuration) and its length.
static mut BODY: [u8; SCRATCH_SIZE] = [0; SCRATCH_SIZE];
static mut BODY_LEN: usize = 0;

/// The token response's headers (`src/response.rs`), in the ABI's map
/// encoding: a count, then each name's and value's length, then each name
/// and value followed by a NUL.
const HEADERS: &[u8] = b"\x03\x00\x00\x00\
\x0c\x00\x00\x00\x10\x00\x00\x00\
\x0d\x00\x00\x00\x08\x00\x00\x00\
\x06\x00\x00\x00\x08\x00\x00\x00\
content-type\0application/json\0\
cache-control\0no-store\0\
pragma\0no-cache\0";

const PLUGIN_CONFIGURATION: u32 = 7;

extern "C" {
    fn proxy_get_buffer_bytes(kind: u32, start: usize, max: usize, data: *mut *mut u8, size: *mut usize) -> u32;
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
}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    if size <= SCRATCH_SIZE {
        core::ptr::addr_of_mut!(SCRATCH).cast()
    } else {
        core::ptr::null_mut()
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

/// A plugin configuration that is a token response (up to 1 KiB) becomes the
/// local reply's body; any other (the guards' configuration, which the
/// bench's other floor listeners get) is ignored. One VM serves all of the
/// floor's listeners: under valgrind, V8 has address space for few VMs.
#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    if size > SCRATCH_SIZE {
        return 1;
    }
    let (mut data, mut len) = (core::ptr::null_mut(), 0);
    // SAFETY: the host writes a pointer into SCRATCH (our allocator) and a length.
    let status = unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut data, &mut len) };
    if status != 0 || data.is_null() || len > SCRATCH_SIZE {
        return 1;
    }
    // SAFETY: `data` points at `len` bytes the host wrote.
    let config = unsafe { core::slice::from_raw_parts(data, len) };
    if config.starts_with(b"{\"access_token\"") {
        // SAFETY: `data` points at `len` bytes the host wrote; BODY is ours alone (one thread).
        unsafe {
            core::ptr::copy_nonoverlapping(data, core::ptr::addr_of_mut!(BODY).cast::<u8>(), len);
            BODY_LEN = len;
        }
    }
    1
}

#[cfg(feature = "lifecycle")]
#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _parent: u32) {}

/// `Action::Continue` for a request without a body; one with a body is held
/// (`Action::Pause`) for [`proxy_on_request_body`].
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, end_of_stream: u32) -> u32 {
    u32::from(end_of_stream == 0)
}

/// Buffers the body; at its end, answers locally.
#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context: u32, _size: usize, end_of_stream: u32) -> u32 {
    if end_of_stream != 0 {
        // SAFETY: BODY/BODY_LEN were written once at configure; HEADERS is static.
        unsafe {
            proxy_send_local_response(
                200,
                core::ptr::null(),
                0,
                core::ptr::addr_of!(BODY).cast::<u8>(),
                BODY_LEN,
                HEADERS.as_ptr(),
                HEADERS.len(),
                -1,
            );
        }
    }
    1
}

#[cfg(feature = "lifecycle")]
#[no_mangle]
pub extern "C" fn proxy_on_delete(_context: u32) {}

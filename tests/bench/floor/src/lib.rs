//! The empty proxy-wasm filter: the exports Envoy needs to load a module and
//! run an HTTP filter from it, and nothing else. A request enters the VM as
//! often as it enters Tollgate's (context create, request headers, delete;
//! `vendor/proxy-wasm/PATCHED.md`), and does no work there: the bench's
//! `floor` scenario is the least a proxy-wasm filter can cost.
#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// Envoy reads the ABI version from this export's name.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host never hands this module bytes (no hostcall is made), but the ABI
/// requires an allocator export: a fixed scratch area is enough.
static mut SCRATCH: [u8; 1024] = [0; 1024];

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    if size <= 1024 {
        core::ptr::addr_of_mut!(SCRATCH).cast()
    } else {
        core::ptr::null_mut()
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> u32 {
    1
}

#[cfg(feature = "lifecycle")]
#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _parent: u32) {}

/// `Action::Continue`.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _end_of_stream: u32) -> u32 {
    0
}

#[cfg(feature = "lifecycle")]
#[no_mangle]
pub extern "C" fn proxy_on_delete(_context: u32) {}

"""The built filter exports only the proxy-wasm callbacks it implements.

Envoy enters the VM for a callback only when the module exports it, and the
stock Rust SDK exports all of them; the patched SDK in vendor/proxy-wasm
leaves the unused ones unexported (issue 10). A newer SDK copied in without
the patch, or a callback a change starts to rely on without exporting it,
shows up here before it shows up as a slower or a silently skipped path."""
import pathlib

import harness

# What Envoy must be able to call: memory and start-up, the root context's
# configuration, tick and the sidecar poll's response, and the three request
# callbacks; proxy_on_delete frees the SDK's per-request context.
EXPECTED = {
    "memory", "_initialize", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate",
    "proxy_on_context_create", "proxy_on_delete", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick",
    "proxy_on_http_call_response",
    "proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers",
}


def _leb128(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def wasm_exports(data: bytes) -> set:
    """Export names from the module's export section (id 7)."""
    assert data[:8] == b"\0asm\x01\0\0\0", "not a wasm module (version 1)"
    names, i = set(), 8
    while i < len(data):
        section, i = data[i], i + 1
        size, i = _leb128(data, i)
        if section == 7:
            count, j = _leb128(data, i)
            for _ in range(count):
                length, j = _leb128(data, j)
                names.add(data[j:j + length].decode())
                _, j = _leb128(data, j + length + 1)  # the kind byte, then the index
        i += size
    return names


def test_only_the_callbacks_tollgate_implements_are_exported():
    exports = wasm_exports(pathlib.Path(harness.WASM).read_bytes())
    assert exports == EXPECTED, f"unexpected: {sorted(exports - EXPECTED)}; missing: {sorted(EXPECTED - exports)}"

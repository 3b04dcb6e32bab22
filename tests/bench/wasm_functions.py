"""The largest functions of a .wasm: what Envoy's V8 (TurboFan, no Liftoff)
pays most for at load, in memory that stays in Envoy's tcmalloc.

  .venv/bin/python tests/bench/wasm_functions.py target/wasm32-wasip1/release/tollgate.wasm [N]

Prints the function count, the code section's bytes and the N (10) largest
bodies as `bytes/locals` (function index in brackets). Names: build with
CARGO_PROFILE_RELEASE_STRIP=debuginfo and use twiggy. Measured 2026-11-27
(compare.py --rss): the largest body 17.9 KB -> 7.9 KB took ~5.5 MiB off the
RSS Tollgate adds at 2 workers; a function of 34 KB (wasm-opt's inlining)
added ~12 MiB.
"""
from __future__ import annotations

import sys


def _leb(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def functions(path: str) -> list[tuple[int, int, int]]:
    """(body bytes, declared locals, index among defined functions)."""
    b = open(path, "rb").read()
    i, out = 8, []
    while i < len(b):
        sid = b[i]
        n, i = _leb(b, i + 1)
        if sid == 10:
            count, j = _leb(b, i)
            for k in range(count):
                size, j = _leb(b, j)
                groups, p = _leb(b, j)
                local_count = 0
                for _ in range(groups):
                    c, p = _leb(b, p)
                    p += 1
                    local_count += c
                out.append((size, local_count, k))
                j += size
        i += n
    return out


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    fs = sorted(functions(path), reverse=True)
    print(f"{path}: {len(fs)} functions, {sum(f[0] for f in fs)} code bytes")
    print("largest: " + " ".join(f"{s}/{loc}[{k}]" for s, loc, k in fs[:top]))


if __name__ == "__main__":
    main()

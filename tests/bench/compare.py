"""Compare builds of the filter in the mode users run, in the same rounds.

One Envoy (--concurrency 1), one real sidecar holding one profile, and one
listener each for: `passthrough` (no filter), `floor` (the empty proxy-wasm
filter of tests/bench/floor: what entering a Wasm VM costs, with nothing
done there), and every `--wasm NAME=PATH` build as the guard in sidecar
mode (its own vm_id, so its own poller and shared data, the same sidecar).
wrk drives interleaved rounds (load.run_rounds); per build the median over
rounds of its rps / passthrough's rps in the same round, of its rps /
floor's, and Envoy's CPU microseconds per request, with the difference to
the floor: what the build itself costs per request.

With `--rss`, each build (and the floor) also runs alone in a 2-worker
Envoy in sidecar mode, as memory.measure_filter_rss does for the product,
and the VmRSS / RssAnon it adds over the same bootstrap without the filter
is printed.

  .venv/bin/python tests/bench/compare.py --wasm old=/tmp/old.wasm --wasm new=target/wasm32-wasip1/release/tollgate.wasm

The last line: `compare: NAME/passthrough=R NAME/floor=R ... cpu_us_per_req: passthrough=U floor=U NAME=U ...`.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import (API_PATH, DEFAULT_ENVOY, DEFAULT_SIDECAR, DEFAULT_WASM, ROOT, SNAPSHOT_TIMEOUT_S, UPSTREAM_BODY,
                    BenchEnvoy, BenchError, BenchSidecar, basic_auth, direct_route, ensure_sidecar, expect_status,
                    free_ports, harness, mint_until, render, route_to, scratch_dir, sidecar_plugin_config,
                    validate_config)
import load
from load import Scenario, run_rounds, run_wrk, summarize
from memory import rss_bytes, without_wasm
from report import table

FLOOR_CRATE = ROOT / "tests" / "bench" / "floor"
FLOOR_WASM = ROOT / "target" / "floor" / "wasm32-unknown-unknown" / "release" / "tollgate_bench_floor.wasm"
SIDECAR_CLUSTER = "sidecar"


def build_floor() -> str:
    """The empty filter, built (seconds: no dependencies) if missing or stale."""
    sources = [FLOOR_CRATE / "Cargo.toml", *sorted((FLOOR_CRATE / "src").glob("*.rs"))]
    if not FLOOR_WASM.exists() or any(p.stat().st_mtime > FLOOR_WASM.stat().st_mtime for p in sources):
        subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-unknown-unknown",
                        "--manifest-path", str(FLOOR_CRATE / "Cargo.toml"),
                        "--target-dir", str(ROOT / "target" / "floor")], check=True)
    return str(FLOOR_WASM)


def guard_listener(name: str, port: int, wasm: str, sidecar: BenchSidecar) -> dict:
    return render.listener(name, port, [route_to("upstream")],
                           [render.wasm_filter(wasm, sidecar_plugin_config(sidecar, SIDECAR_CLUSTER), hold=True,
                                               vm_id=f"tollgate_{name}")])


def plain_listener(name: str, port: int, wasm: str, sidecar: BenchSidecar) -> dict:
    """A module measured without a token (the floor, or a build cut short
    for an experiment): given the guards' configuration, which the floor
    ignores."""
    return render.listener(name, port, [route_to("upstream")],
                           [render.wasm_filter(wasm, sidecar_plugin_config(sidecar, SIDECAR_CLUSTER), hold=True,
                                               vm_id=f"tollgate_{name}")])


def start_envoy(envoy_bin: str, builds: dict, plains: dict, sidecar: BenchSidecar) -> BenchEnvoy:
    names = ("passthrough", *plains, *builds, "fake_upstream")
    ports = free_ports(names, exclude={sidecar.port})
    listeners = [render.listener("passthrough", ports["passthrough"], [route_to("upstream")], []),
                 *(plain_listener(name, ports[name], wasm, sidecar) for name, wasm in plains.items()),
                 *(guard_listener(name, ports[name], wasm, sidecar) for name, wasm in builds.items()),
                 render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], [])]
    clusters = [render.cluster("upstream", ports["fake_upstream"]), render.cluster(SIDECAR_CLUSTER, sidecar.port)]
    admin = harness.free_port()
    config = render.bootstrap(admin, listeners, clusters)
    validate_config(envoy_bin, config)
    return BenchEnvoy(config, envoy=envoy_bin, ports=ports, admin_port=admin)


def pin(envoy_pid: int) -> None:
    """Envoy (every thread) on the last CPU, wrk on the rest."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError("--pin needs two CPUs")
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpus[-1]), str(envoy_pid)], check=True,
                   stdout=subprocess.DEVNULL)
    wrapper = pathlib.Path(tempfile.mkdtemp(prefix="tollgate-pin-")) / "wrk"
    wrapper.write_text(f'#!/bin/sh\nexec taskset -c {",".join(map(str, cpus[:-1]))} {load.WRK} "$@"\n')
    wrapper.chmod(0o755)
    load.WRK = str(wrapper)


def per_round(summary: dict, a: str, b: str, field: str) -> float:
    return statistics.median(x[field] / y[field] for x, y in zip(summary[a]["rounds"], summary[b]["rounds"]))


def measure_rss(envoy_bin: str, label: str, wasm: str | None, plugin_config: dict, sidecar: BenchSidecar,
                basic: str | None, track) -> tuple[int, int]:
    """VmRSS and RssAnon of a 2-worker Envoy with one filter listener (or
    none: wasm None) after 5 s of GETs on 8 connections."""
    ports = free_ports(("gateway", "fake_upstream"), exclude={sidecar.port})
    filters = [] if wasm is None else [render.wasm_filter(wasm, plugin_config, hold=True, vm_id="rss")]
    listeners = [render.listener("gateway", ports["gateway"], [route_to("upstream")], filters),
                 render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], [])]
    clusters = [render.cluster("upstream", ports["fake_upstream"]), render.cluster(SIDECAR_CLUSTER, sidecar.port)]
    admin = harness.free_port()
    config = render.bootstrap(admin, listeners, clusters)
    if wasm is None:
        config = without_wasm(config)
    env = track(BenchEnvoy(config, envoy=envoy_bin, ports=ports, admin_port=admin, concurrency=2))
    headers = ()
    if basic is not None:
        # The token endpoint is the same filter, on this listener's routes.
        token = mint_until(ports["gateway"], basic, SNAPSHOT_TIMEOUT_S, f"{label} snapshot")
        headers = (f"Authorization: Bearer {token}",)
    r = run_wrk(f"http://127.0.0.1:{ports['gateway']}{API_PATH}", duration=5, connections=8, headers=headers)
    if r.errors():
        raise BenchError(f"rss {label}: {'; '.join(r.errors())}")
    time.sleep(1)
    out = rss_bytes(env.proc.pid), rss_bytes(env.proc.pid, "RssAnon")
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/memory", timeout=5) as resp:
        heap = json.loads(resp.read())
    print(f"compare: {label}: Envoy /memory " + " ".join(f"{k}={int(v) / 2**20:.1f}MiB" for k, v in heap.items()
                                                         if str(v).isdigit()), flush=True)
    env.stop()
    env.cleanup()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", action="append", metavar="NAME=PATH",
                    help=f"a build of the filter (repeatable; default: current={DEFAULT_WASM})")
    ap.add_argument("--plain", action="append", metavar="NAME=PATH", default=[],
                    help="another module that is not Tollgate (a variant of the floor), measured without a token")
    ap.add_argument("--envoy", default=DEFAULT_ENVOY)
    ap.add_argument("--sidecar", default=DEFAULT_SIDECAR)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--pin", action="store_true",
                    help="Envoy's threads on the last CPU, wrk on the others (taskset): less interference")
    ap.add_argument("--rss", action="store_true", help="also each build's Envoy RSS at 2 workers")
    ap.add_argument("--no-throughput", action="store_true", help="only --rss")
    a = ap.parse_args(argv)
    def named(specs, flag, taken):
        out = {}
        for spec in specs:
            name, sep, path = spec.partition("=")
            if not sep or not name.isidentifier() or name in taken or name in out:
                ap.error(f"{flag} {spec!r}: want NAME=PATH, NAME an identifier used once, not {', '.join(taken)}")
            if not pathlib.Path(path).is_file():
                ap.error(f"{flag} {spec!r}: no such file")
            out[name] = str(pathlib.Path(path).resolve())
        return out
    plains = named(a.plain, "--plain", ("passthrough", "floor", "fake_upstream"))
    builds = named(a.wasm or [f"current={DEFAULT_WASM}"], "--wasm", ("passthrough", "floor", "fake_upstream", *plains))
    procs = []

    def track(p):
        procs.append(p)
        return p

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tollgate-compare-", dir=scratch_dir()))
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        ensure_sidecar(a.sidecar)
        plains = {"floor": build_floor(), **plains}
        sidecar = track(BenchSidecar(tmp / "compare.db", binary=str(pathlib.Path(a.sidecar).resolve()),
                                     port=harness.free_port()))
        admin = sidecar.admin_connection()
        try:
            created = admin.create("bench-compare")
        finally:
            admin.close()
        basic = basic_auth(created["profile"]["client_id"], created["client_secret"])
        fields = []
        if not a.no_throughput:
            env = track(start_envoy(a.envoy, builds, plains, sidecar))
            if a.pin:
                pin(env.proc.pid)
            # The token endpoint answers on each guard listener (the filter
            # takes /oauth2/token before routing): one token per build, each
            # minted once its snapshot is in.
            tokens = {name: mint_until(env.ports[name], basic, SNAPSHOT_TIMEOUT_S, f"{name} snapshot")
                      for name in builds}
            for name, tok in tokens.items():
                expect_status(env.ports[name], "GET", API_PATH, 200, f"{name} with its token",
                              {"Authorization": f"Bearer {tok}"})
                expect_status(env.ports[name], "GET", API_PATH, 401, f"{name} without a token")
            for name in plains:
                expect_status(env.ports[name], "GET", API_PATH, 200, name)
            scs = [Scenario("passthrough", "passthrough", API_PATH),
                   *(Scenario(name, name, API_PATH) for name in plains),
                   *(Scenario(name, name, API_PATH, (f"Authorization: Bearer {tok}",))
                     for name, tok in tokens.items())]
            results = run_rounds(env, scs, rounds=a.rounds, duration=a.duration, connections=a.connections, log=log)
            env.stop()
            env.cleanup()
            summary = summarize(results)
            print()
            print(table(summary))
            print()
            for name in plains:
                fields.append(f"{name}/passthrough={per_round(summary, name, 'passthrough', 'rps'):.3f}")
            for name in builds:
                fields.append(f"{name}/passthrough={per_round(summary, name, 'passthrough', 'rps'):.3f}")
                fields.append(f"{name}/floor={per_round(summary, name, 'floor', 'rps'):.3f}")
            cpu = {k: summary[k]["median_cpu_us_per_req"] for k in summary}
            fields.append("cpu_us_per_req: " + " ".join(f"{k}={v:.1f}" for k, v in cpu.items()))
            fields.append("cpu_over_floor_us: " + " ".join(
                f"{k}={statistics.median(x['cpu_us_per_req'] - y['cpu_us_per_req'] for x, y in zip(summary[k]['rounds'], summary['floor']['rounds'])):.1f}"
                for k in [*builds, *plains] if k != "floor"))
        if a.rss:
            base = measure_rss(a.envoy, "no filter", None, {}, sidecar, None, track)
            rows = {name: measure_rss(a.envoy, name, wasm, {}, sidecar, None, track) for name, wasm in plains.items()}
            for name, wasm in builds.items():
                rows[name] = measure_rss(a.envoy, name, wasm, sidecar_plugin_config(sidecar, SIDECAR_CLUSTER),
                                         sidecar, basic, track)
            log(f"compare: Envoy RSS, 2 workers, without a filter: {base[0] / 2**20:.1f} MiB "
                f"(anonymous {base[1] / 2**20:.1f} MiB)")
            for name, (rss, anon) in rows.items():
                log(f"compare: {name:<12} adds {(rss - base[0]) / 2**20:+6.1f} MiB RSS, "
                    f"{(anon - base[1]) / 2**20:+6.1f} MiB anonymous")
            fields.append("rss_added_mib: " + " ".join(f"{k}={(v[0] - base[0]) / 2**20:.1f}" for k, v in rows.items()))
            fields.append("anon_added_mib: " + " ".join(f"{k}={(v[1] - base[1]) / 2**20:.1f}"
                                                       for k, v in rows.items()))
        print("compare: " + " ".join(fields), flush=True)
        return 0
    except (BenchError, RuntimeError, OSError) as e:
        print(f"compare: ERROR: {e}", file=sys.stderr, flush=True)
        for p in procs:
            if p.log_path.exists():
                print(f"compare: {p.name} log: {p.log_path}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Tollgate benchmark: one Envoy (--concurrency 1, one worker) with one
listener per scenario, driven by wrk in interleaved rounds; per scenario the
median over rounds of requests/sec, p50 and p99 latency.

Scenarios (all on the same Envoy, the same worker, the same cheap upstream):
  passthrough        no auth filter, GET /api/bench            -> upstream
  passthrough_bearer the same with the guard's Authorization header (forwarded)
  floor_bearer       the empty proxy-wasm filter (tests/bench/floor), that header
  guard              Tollgate wasm filter, Bearer token         -> upstream
  guard_nometrics    the same with "metrics": false (no counter hostcall)
  guard_route        the same with identity_headers.set_by "route"
  guard_sidecar_1    the same, profiles from a sidecar holding 1 profile
  guard_sidecar_10k  the same, profiles from a sidecar holding 10,000 profiles
  jwt_authn          Envoy's native jwt_authn (HS256, no cache) -> upstream
  jwt_authn_cached   the same with jwt_cache_config             -> upstream
  token              POST /oauth2/token to Tollgate (Basic + form)
  direct             the same POST to a direct_response of the token response's size
The upstream is a direct_response listener inside the same Envoy
(`fake_upstream`), so it costs the same, and little, for the guarded ones.

Before that, the rotation measurement: the real sidecar and an Envoy with 2
workers in sidecar mode; N times, rotate a profile through the admin API and
time how long after the rotate call returns the old token is refused (first
401 on any worker, and 401 on both workers, using keep-alive connections
pinned to known workers).

Last, the memory measurement (issue 6): a 2-worker gateway in sidecar mode
(render.gateway, one profile) receives 100,000 refused token requests, each
with a new 12 KB client id (form body, Basic-free), sent by wrk; Envoy's RSS
(VmRSS) is read after a warm-up of the same requests and after the 100,000.
Per-worker caches bounded in bytes that never keep attacker-chosen bytes keep
the growth under 5 MiB.

The machine is assumed shared and noisy: the ratios of one run are the result,
absolute numbers are not. The last line printed is

  bench: guard/passthrough=R guard_sidecar/passthrough=R guard_sidecar/passthrough_bearer=R
  floor_bearer/passthrough=R guard_sidecar/floor_bearer=R guard_sidecar/guard=R jwt_authn/passthrough=R jwt_authn_cached/passthrough=R token/direct=R guard10k/guard1=R rotation_p50_ms=X rotation_p99_ms=Y rss_growth_mib_100k_unknown_clients=M cpu_us_per_req: passthrough=U guard=U guard_sidecar=U jwt_authn=U token=U

and the results are written to var/bench/results.json. Every wrk run also
samples Envoy's CPU time (utime + stime): `cpu_us_per_req` is the median
over rounds of CPU microseconds per request served.

The parts, each a module of this directory: `scenarios` (the bench Envoy's
listeners, the sidecars, the pre-flight checks), `load` (wrk, the
interleaved rounds, the CPU sampling), `rotation` (the rotation probe),
`memory` (RSS), `report` (ratios, tables, the last line), `common` (the
processes and requests they share). `build_config`, `BenchEnvoy`,
`run_wrk`, `parse_wrk`, `Scenario`, `run_rounds`, `summarize` are
re-exported here for other bench scripts; `main(argv)`.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import http.client
import json
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time

from common import (API_PATH, BenchError, BenchSidecar, DEFAULT_ENVOY, DEFAULT_SIDECAR, DEFAULT_WASM, RESULTS, RESULTS_QUICK,
    SIDECAR_LISTENERS, UPSTREAM_BODY, basic_auth, ensure_sidecar, ensure_wasm, envoy_version, expect_status, mint_token, mint_until, SNAPSHOT_TIMEOUT_S,
    scratch_dir)
from scenarios import (JWT_CACHE_SIZE, preflight, sample_token_response, scenarios, start, start_sidecars, wait_for_snapshots)
from load import run_rounds, summarize
from rotation import measure_rotation
from memory import UNKNOWN_CLIENTS, measure_filter_rss, measure_unknown_clients, unknown_clients_field
from report import cpu_field, cpu_ratios, last_line, ratios, rotation_table, table
# Everything the single-file bench.py offered stays reachable as bench.<name>
# for other bench scripts (build_config, BenchEnvoy, run_wrk, parse_wrk,
# Scenario, run_rounds, summarize, the constants and request helpers).
from common import *  # noqa: F401,F403,E402
from scenarios import *  # noqa: F401,F403,E402
from load import *  # noqa: F401,F403,E402
from rotation import *  # noqa: F401,F403,E402
from memory import *  # noqa: F401,F403,E402
from report import *  # noqa: F401,F403,E402
from common import harness, render  # noqa: F401,E402 (re-exported)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", default=DEFAULT_WASM, help="the built filter (default: %(default)s)")
    ap.add_argument("--envoy", default=DEFAULT_ENVOY, help="Envoy binary (default: %(default)s)")
    ap.add_argument("--sidecar", default=os.environ.get("TOLLGATE_SIDECAR", DEFAULT_SIDECAR),
                    help="tollgate-sidecar binary (default: $TOLLGATE_SIDECAR or %s)" % DEFAULT_SIDECAR)
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default: 3)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default: 9)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default: 16)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per scenario (default: 1)")
    ap.add_argument("--rotations", type=int, default=60, help="profile rotations timed (default: 60)")
    ap.add_argument("--unknown-clients", type=int, default=UNKNOWN_CLIENTS,
                    help="refused token requests with distinct 12 KB client ids for the RSS figure "
                         "(default: %(default)s)")
    ap.add_argument("--memory-only", action="store_true",
                    help="run only the unknown-client-id memory measurement and print its bench line")
    ap.add_argument("--baseline-wasm", help="another build of the filter, measured as guard_baseline and "
                    "token_baseline in the same rounds (ratios guard/guard_baseline, token/token_baseline)")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the throughput rounds (no rotation, no memory measurement)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s, 1 round, 10 rotations")
    ap.add_argument("--results", help=f"JSON output (default: {RESULTS}; with --quick {RESULTS_QUICK})")
    a = ap.parse_args(argv)
    if a.quick:
        a.duration, a.rounds, a.rotations = 1, 1, 10
    if a.results is None:
        a.results = str(RESULTS_QUICK if a.quick else RESULTS)
    if a.duration < 1 or a.rounds < 1 or a.connections < 1 or a.rotations < 1 or a.unknown_clients < 1:
        ap.error("--duration, --rounds, --connections, --rotations and --unknown-clients must be positive")
    return a


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    procs: list = []  # every process started here, stopped in the finally

    def track(proc):
        procs.append(proc)
        return proc

    tmp = None
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        ensure_wasm(a.wasm)
        ensure_sidecar(a.sidecar)
        wasm = str(pathlib.Path(a.wasm).resolve())
        sidecar_bin = str(pathlib.Path(a.sidecar).resolve())
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="tollgate-bench-", dir=scratch_dir()))

        if a.memory_only:
            sidecar = track(BenchSidecar(tmp / "memory.db", binary=sidecar_bin, port=harness.free_port()))
            memory = measure_unknown_clients(a.envoy, wasm, sidecar, track, log, a.unknown_clients)
            filter_rss = measure_filter_rss(a.envoy, wasm, sidecar, track, log)
            print(f"bench: {unknown_clients_field(memory, a.unknown_clients)} "
                  f"envoy_rss_filter_mib={filter_rss['filter_rss_mib']:.1f} "
                  f"envoy_rss_anon_filter_mib={filter_rss['filter_rss_anon_mib']:.1f}", flush=True)
            return 0

        rotation = rotation_10k = memory = filter_rss = None
        if not a.throughput_only:
            # Rotation first, on its own sidecar holding just the rotated profile.
            sidecar = track(BenchSidecar(tmp / "rotation.db", binary=sidecar_bin, port=harness.free_port()))
            rotation = measure_rotation(a.envoy, wasm, sidecar, a.rotations, track, log)
            sidecar.stop()
            sidecar.cleanup()

        profile, secret = harness.new_profile(allowed=("/api/",))
        basic = basic_auth(profile["client_id"], secret)
        print("bench: minting a sample token response for the direct listener's body", flush=True)
        direct_body = sample_token_response(a.envoy, wasm, profile, basic, track)

        sidecars, sidecar_basics, sidecar_info = start_sidecars(sidecar_bin, tmp, track, log)
        baseline = str(pathlib.Path(a.baseline_wasm).resolve()) if a.baseline_wasm else None
        env = track(start(a.envoy, wasm, profile, direct_body.decode(), sidecars, baseline))
        sidecar_tokens = wait_for_snapshots(env, sidecar_basics, sidecar_info, log)
        token, body = mint_token(env.ports["tollgate"], basic)
        if len(body) != len(direct_body):
            raise BenchError(f"token response is {len(body)} bytes, the sample was {len(direct_body)}")
        preflight(env, token, basic, direct_body, sidecar_tokens)

        if baseline:
            expect_status(env.ports["baseline"], "GET", API_PATH, 200, "baseline with the token",
                          {"Authorization": f"Bearer {token}"})
            if "baseline_sidecar_1" in env.ports:
                mint_until(env.ports["baseline_sidecar_1"], sidecar_basics["sidecar_1"][0], SNAPSHOT_TIMEOUT_S,
                           "baseline_sidecar_1 snapshot")
                expect_status(env.ports["baseline_sidecar_1"], "GET", API_PATH, 200, "baseline_sidecar_1 with its token",
                              {"Authorization": f"Bearer {sidecar_tokens['sidecar_1']}"})
        scs = scenarios(token, basic, sidecar_tokens, baseline=bool(baseline))
        print(f"bench: envoy {envoy_version(a.envoy)}, --concurrency 1; wrk -t1 -c{a.connections} "
              f"-d{a.duration}s; {a.rounds} round(s) x {len(scs)} scenarios; "
              f"token response {len(direct_body)} bytes", flush=True)
        results = run_rounds(env, scs, rounds=a.rounds, duration=a.duration, connections=a.connections,
                             warmup=a.warmup, log=log)
        env.stop()
        env.cleanup()
        if not a.throughput_only:
            # The same rotation measurement with 10,000 other profiles loaded
            # (each change republishes the profile index): reported, not on the
            # last line. It adds a profile to sidecar_10k, so it runs last.
            rotation_10k = measure_rotation(a.envoy, wasm, sidecars["sidecar_10k"], a.rotations, track, log,
                                            label="rotation_10k")
        for sidecar in sidecars.values():
            sidecar.stop()
            sidecar.cleanup()
        if not a.throughput_only:
            sidecar = track(BenchSidecar(tmp / "memory.db", binary=sidecar_bin, port=harness.free_port()))
            memory = measure_unknown_clients(a.envoy, wasm, sidecar, track, log, a.unknown_clients)
            filter_rss = measure_filter_rss(a.envoy, wasm, sidecar, track, log)
            sidecar.stop()
            sidecar.cleanup()
        summary = summarize(results)
        rs = ratios(summary)
        elapsed = time.monotonic() - started
        out = pathlib.Path(a.results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "envoy": envoy_version(a.envoy),
            "wasm": wasm,
            "wasm_sha256": hashlib.sha256(pathlib.Path(wasm).read_bytes()).hexdigest(),
            "settings": {"duration_s": a.duration, "rounds": a.rounds, "connections": a.connections,
                         "wrk_threads": 1, "envoy_concurrency": 1, "warmup_s": a.warmup,
                         "token_response_bytes": len(direct_body), "upstream_body_bytes": len(UPSTREAM_BODY),
                         "jwt_cache_size": JWT_CACHE_SIZE, "rotations": a.rotations},
            "scenarios": {sc.name: {"listener": sc.listener, "path": sc.path, "note": sc.note,
                                    **summary[sc.name]} for sc in scs},
            "ratios": rs,
            "cpu_ratios": cpu_ratios(summary),
            "sidecars": sidecar_info,
            "rotation": rotation,
            "rotation_10k_profiles": rotation_10k,
            "unknown_clients_memory": memory,
            "filter_rss": filter_rss,
            "elapsed_s": round(elapsed, 1),
        }, indent=1) + "\n")
        print()
        print(table(summary))
        print()
        if rotation:
            print(rotation_table({"1 profile": rotation,
                                  f"{SIDECAR_LISTENERS['sidecar_10k']:,} other profiles loaded": rotation_10k}))
            print()
        print("cpu per request, median of per-round ratios: "
              + " ".join(f"{k}={v:.3f}" for k, v in cpu_ratios(summary).items()))
        print(f"(results: {out}; {elapsed:.0f} s)")
        memory_fields = memory and (f"{unknown_clients_field(memory, a.unknown_clients)} "
                                    f"envoy_rss_filter_mib={filter_rss['filter_rss_mib']:.1f} "
                                    f"envoy_rss_anon_filter_mib={filter_rss['filter_rss_anon_mib']:.1f}")
        print(last_line(rs, rotation, memory_fields, cpu_field(summary)), flush=True)
        return 0
    except (BenchError, RuntimeError, OSError, http.client.HTTPException) as e:
        print(f"bench: ERROR: {e}", file=sys.stderr, flush=True)
        for proc in procs:
            if proc.log_path.exists():
                print(f"bench: {proc.name} log: {proc.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr, flush=True)
        for proc in procs:
            proc.stop()
            proc.cleanup()
        return 130
    finally:
        for proc in reversed(procs):
            proc.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)



if __name__ == "__main__":
    sys.exit(main())

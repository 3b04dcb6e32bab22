"""What every part of the bench shares: paths and constants, the Envoy and
sidecar processes it starts (`BenchEnvoy`, `BenchSidecar` and its admin
connection), plain HTTP requests and token minting, small statistics."""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import pathlib
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

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


# Sidecar-backed guard listeners: listener name -> profiles its sidecar holds.
SIDECAR_LISTENERS = {"sidecar_1": 1, "sidecar_10k": 10_000}


CREATE_CONNECTIONS = 4  # keep-alive admin connections creating profiles in parallel
SNAPSHOT_TIMEOUT_S = 60  # Envoy start to the first token minted from a sidecar's profiles


# Rotation: an Envoy with 2 workers, like the end-to-end tests.
ROTATION_CONCURRENCY = 2


class BenchError(Exception):
    """A benchmark that would measure the wrong thing (errors, wrong status)."""


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


def percentile(values, q: float) -> float:
    """Nearest-rank percentile: with fewer than 100 values p99 is the max."""
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


def describe(values) -> dict:
    return {"p50": statistics.median(values), "p99": percentile(values, 99), "max": max(values)}


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


def envoy_version(envoy_bin: str) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"version: (\S+)", out)
        return m.group(1) if m else out.strip()
    return "unknown"


def scratch_dir() -> str | None:
    """Where the sidecars' throwaway databases go: tmpfs if there is one.
    The sidecar commits with synchronous=FULL, so on a disk every profile
    created waits for an fsync (10,000 of them took 4 to 12 s here, with
    the disk shared); no measured figure includes a sidecar write."""
    shm = pathlib.Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


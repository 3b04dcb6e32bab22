"""The rotation probe: a 2-worker gateway in sidecar mode, keep-alive
connections pinned to known workers, and for each rotation the time from
the sidecar's rotate call returning to the old token's first 401 (and to
401 on both workers)."""
from __future__ import annotations

import http.client
import gc
import json
import re
import time
import urllib.parse
import urllib.request

from common import (API_PATH, AdminConnection, BenchEnvoy, BenchError, BenchSidecar, ROTATION_CONCURRENCY, SNAPSHOT_TIMEOUT_S,
    UPSTREAM_BODY, basic_auth, describe, direct_route, free_ports, http_request, mint_until, sidecar_plugin_config)
from common import harness, render

ROTATION_TIMEOUT_S = 5.0  # per rotation, until both workers refuse the old token
PINS_PER_WORKER = 2  # keep-alive probe connections per worker
FRESH_CONFIRMS = 4  # fresh-connection probes that must refuse the old token afterwards


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


"""Fleet bench: one PostgreSQL (Debian's, started here), 3 sidecars on it, 3 Envoys (2 workers each) with the built
filter, one upstream, all on loopback.

* Rotation latency: for each rotation (through the sidecars in turn), the time from sending the admin request to
  the old token being refused (401) on all 3 Envoys, over >= 50 rotations; p50 and p99.
* Resync: with 10,000 profiles in the store, PostgreSQL is stopped and started again; the time from PostgreSQL
  accepting connections to a sidecar serving the full snapshot again (no sidecar restart), and the time for a
  fresh Envoy to load those 10,000 profiles from a sidecar.

Ends with one line: `fleet: envoys=3 rotation_p50_ms=… rotation_p99_ms=… rotations=N resync_10k_ms=…
envoy_load_10k_ms=…`. Timings on a shared machine are noise-prone; read them as orders of magnitude."""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import harness  # noqa: E402
import requests  # noqa: E402

FORM = {"grant_type": "client_credentials"}


def percentile(values, q):
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


class Poller:
    """Keep-alive connections to one Envoy (two, so both workers tend to be hit), asking with one token."""

    def __init__(self, gw, n=2):
        self.port = gw.port
        self.conns = [http.client.HTTPConnection("127.0.0.1", self.port, timeout=10) for _ in range(n)]

    def status(self, token: str) -> int:
        worst = 200
        for i, c in enumerate(self.conns):
            try:
                c.request("GET", "/api/x", headers={"authorization": f"Bearer {token}"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    worst = r.status
            except (OSError, http.client.HTTPException):
                c.close()
                self.conns[i] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                worst = 0
        return worst


def wait(predicate, timeout, what, interval=0.0005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(what)


def mint(gw, cid, secret) -> str:
    r = requests.post(gw.url + "/oauth2/token", auth=(cid, secret), data=FORM)
    r.raise_for_status()
    return r.json()["access_token"]


def measure_rotations(sidecars, gateways, rotations: int) -> list[float]:
    s0 = sidecars[0]
    r = s0.admin("POST", "/profiles", json={"name": "bench-rotation", "allowed_prefixes": ["/api/"]})
    r.raise_for_status()
    pid, cid, secret = r.json()["profile"]["id"], r.json()["profile"]["client_id"], r.json()["client_secret"]
    pollers = [Poller(gw) for gw in gateways]
    for gw in gateways:
        harness.wait_for(lambda: requests.post(gw.url + "/oauth2/token", auth=(cid, secret),
                                               data=FORM).status_code == 200, 20, "profile on every Envoy")
    sessions = [requests.Session() for _ in sidecars]
    samples = []
    with concurrent.futures.ThreadPoolExecutor(len(gateways)) as pool:
        for i in range(rotations):
            token = mint(gateways[i % len(gateways)], cid, secret)
            for p in pollers:
                wait(lambda: p.status(token) == 200, 10, "fresh token accepted everywhere")
            s = sidecars[i % len(sidecars)]
            t0 = time.perf_counter()
            r = sessions[i % len(sidecars)].post(f"{s.url}/admin/v1/profiles/{pid}/rotate",
                                                 headers={"authorization": f"Bearer {s.admin_token}"}, timeout=10)
            r.raise_for_status()
            secret = r.json()["client_secret"]

            def refused(p):
                wait(lambda: p.status(token) == 401, 10, "old token refused")
                return time.perf_counter()
            done = list(pool.map(refused, pollers))
            samples.append((max(done) - t0) * 1000)
    return samples


def create_many(sidecar, n: int) -> None:
    def work(chunk):
        with requests.Session() as session:
            for k in chunk:
                r = session.post(f"{sidecar.url}/admin/v1/profiles",
                                 headers={"authorization": f"Bearer {sidecar.admin_token}"},
                                 json={"name": f"p{k}", "allowed_prefixes": ["/api/"]}, timeout=30)
                r.raise_for_status()
    chunks = [range(i, n, 8) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(work, chunks))


def measure_resync(pg, sidecar, upstream, n: int) -> tuple[float, float]:
    def full_snapshot():
        r = requests.get(f"{sidecar.url}/data/v1/snapshot", headers={"authorization": f"Bearer {sidecar.data_token}"},
                         timeout=30)
        return r.status_code == 200 and len(r.json()["profiles"]) >= n
    pg.stop()
    harness.wait_for(lambda: requests.get(sidecar.url + "/readyz", timeout=5).status_code == 503, 20,
                     "sidecar notices PostgreSQL is gone")
    pg.start()
    t0 = time.perf_counter()
    harness.wait_for(full_snapshot, 120, "full snapshot after reconnect", interval=0.005)
    resync_ms = (time.perf_counter() - t0) * 1000

    # A fresh Envoy loading every profile through that sidecar.
    last = sidecar.admin("POST", "/profiles", json={"name": "last", "allowed_prefixes": ["/api/"]}).json()
    t0 = time.perf_counter()
    gw = harness.start_gateway(upstream, sidecar.plugin_config(), sidecar_port=sidecar.port)
    try:
        harness.wait_for(lambda: requests.post(gw.url + "/oauth2/token",
                                               auth=(last["profile"]["client_id"], last["client_secret"]),
                                               data=FORM).status_code == 200, 120, "Envoy loaded", interval=0.005)
        load_ms = (time.perf_counter() - t0) * 1000
    finally:
        gw.stop()
    return resync_ms, load_ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rotations", type=int, default=60)
    ap.add_argument("--profiles", type=int, default=10_000)
    args = ap.parse_args(argv)
    if args.rotations < 50:
        ap.error("--rotations must be at least 50")
    procs = []
    pg = harness.Postgres()
    upstream = None
    try:
        upstream = harness.Upstream()
        url = pg.create_database("fleet")
        key_file = pg.dir / "fleet.key"  # the fleet's one key file, removed with PostgreSQL's directory
        sidecars = [harness.Sidecar(url, key_file=key_file) for _ in range(3)]
        procs += sidecars
        gateways = []
        for s in sidecars:
            gw = harness.start_gateway(upstream, s.plugin_config(), sidecar_port=s.port)
            procs.append(gw)
            gateways.append(gw)
        for gw in gateways:
            harness.wait_for(lambda: requests.get(gw.url + "/api/x").status_code == 401, 30, "first snapshot")
        print(f"fleet: {len(sidecars)} sidecars, {len(gateways)} Envoys x 2 workers, PostgreSQL on :{pg.port}",
              flush=True)

        samples = measure_rotations(sidecars, gateways, args.rotations)
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"rotation to 401 on all {len(gateways)} Envoys: n={len(samples)} p50={p50:.1f} ms "
              f"p99={p99:.1f} ms max={max(samples):.1f} ms mean={statistics.mean(samples):.1f} ms", flush=True)

        t0 = time.perf_counter()
        create_many(sidecars[0], args.profiles)
        print(f"created {args.profiles} profiles in {time.perf_counter() - t0:.1f} s", flush=True)
        resync_ms, load_ms = measure_resync(pg, sidecars[1], upstream, args.profiles)
        print(f"resync of {args.profiles} profiles after PostgreSQL restart: {resync_ms:.0f} ms; "
              f"a fresh Envoy loading them: {load_ms:.0f} ms", flush=True)
        print(f"fleet: envoys={len(gateways)} rotation_p50_ms={p50:.1f} rotation_p99_ms={p99:.1f} "
              f"rotations={len(samples)} resync_{args.profiles // 1000}k_ms={resync_ms:.0f} "
              f"envoy_load_{args.profiles // 1000}k_ms={load_ms:.0f}")
        return 0
    finally:
        for p in reversed(procs):
            p.stop()
        if upstream is not None:
            upstream.stop()
        pg.cleanup()


if __name__ == "__main__":
    sys.exit(main())

"""Envoy's memory: RSS growth over refused token requests with distinct
12 KB client ids (issue 6), and the RSS the filter adds to a 2-worker Envoy
(issue 10)."""
from __future__ import annotations

import json
import pathlib
import time

from common import (BenchEnvoy, BenchError, BenchSidecar, FORM, ROTATION_CONCURRENCY, SNAPSHOT_TIMEOUT_S, TOKEN_PATH,
    UPSTREAM_BODY, basic_auth, direct_route, free_ports, http_request, mint_until,
    sidecar_plugin_config)
from load import WrkResult, run_wrk, run_wrk_until
from common import harness, render

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


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of a process (VmRSS, or RssAnon, RssFile), in bytes."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no {field} for pid {pid}")


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


FILTER_RSS_LOAD_S = 3  # guarded GETs (and the same GETs without the filter) before RSS is read


def without_wasm(cfg: dict) -> dict:
    """The same bootstrap with every Wasm HTTP filter removed."""
    cfg = json.loads(json.dumps(cfg))
    for lst in cfg["static_resources"]["listeners"]:
        for chain in lst.get("filter_chains", []):
            for f in chain["filters"]:
                hf = f.get("typed_config", {}).get("http_filters")
                if hf is not None:
                    hf[:] = [x for x in hf if x.get("name") != "envoy.filters.http.wasm"]
    return cfg


def measure_filter_rss(envoy_bin: str, wasm: str, sidecar: BenchSidecar, track, log=print) -> dict:
    """Envoy's RSS (VmRSS) with the filter and without it, 2 workers each:
    the product's gateway in sidecar mode (one profile), after
    FILTER_RSS_LOAD_S of guarded GETs (every worker's VM has run), and the
    same bootstrap without the Wasm filter after the same GETs."""
    admin = sidecar.admin_connection()
    try:
        created = admin.create("bench-filter-rss")
    finally:
        admin.close()
    basic = basic_auth(created["profile"]["client_id"], created["client_secret"])
    rss = {}
    for label in ("with_filter", "without_filter"):
        ports, admin_port = free_ports(("gateway", "fake_upstream"), exclude={sidecar.port}), harness.free_port()
        cfg = render.gateway(port=ports["gateway"], admin_port=admin_port, upstream_port=ports["fake_upstream"],
                             wasm_path=wasm, plugin_config=sidecar_plugin_config(sidecar, "tollgate_sidecar"),
                             hold=True, sidecar_port=sidecar.port)
        cfg["static_resources"]["listeners"].append(
            render.listener("fake_upstream", ports["fake_upstream"], [direct_route(UPSTREAM_BODY)], []))
        if label == "without_filter":
            cfg = without_wasm(cfg)
        gw = track(BenchEnvoy(cfg, envoy=envoy_bin, ports=ports, admin_port=admin_port,
                              concurrency=ROTATION_CONCURRENCY))
        port = gw.ports["gateway"]
        headers = ()
        if label == "with_filter":
            token = mint_until(port, basic, SNAPSHOT_TIMEOUT_S, "filter-rss gateway")
            headers = (f"Authorization: Bearer {token}",)
        r = run_wrk(f"http://127.0.0.1:{port}/api/bench", duration=FILTER_RSS_LOAD_S, connections=8,
                    headers=headers)
        if r.errors() or r.requests == 0:
            raise BenchError(f"filter RSS ({label}): {'; '.join(r.errors())}\n{r.raw}")
        time.sleep(1)
        rss[label] = rss_bytes(gw.proc.pid)
        rss[label + "_anon"] = rss_bytes(gw.proc.pid, "RssAnon")
        gw.stop()
        gw.cleanup()
    added = (rss["with_filter"] - rss["without_filter"]) / 2**20
    added_anon = (rss["with_filter_anon"] - rss["without_filter_anon"]) / 2**20
    log(f"bench: envoy RSS, 2 workers: {rss['with_filter'] / 2**20:.1f} MiB with the filter, "
        f"{rss['without_filter'] / 2**20:.1f} MiB without ({added:+.1f} MiB, of which anonymous "
        f"{added_anon:+.1f} MiB; the rest is V8's code in the Envoy binary, paged in)")
    return {"envoy_concurrency": ROTATION_CONCURRENCY, "load_s": FILTER_RSS_LOAD_S,
            "rss_with_filter_bytes": rss["with_filter"], "rss_without_filter_bytes": rss["without_filter"],
            "rss_with_filter_anon_bytes": rss["with_filter_anon"],
            "rss_without_filter_anon_bytes": rss["without_filter_anon"],
            "filter_rss_mib": added, "filter_rss_anon_mib": added_anon}


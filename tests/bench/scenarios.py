"""The throughput scenarios: one Envoy bootstrap with a listener per
scenario (passthrough, the guard with static and sidecar profiles, Envoy's
jwt_authn with and without its cache, the token endpoint and a
direct_response of the same bytes), the sidecars that feed the sidecar-mode
listeners, the pre-flight checks that each scenario measures its success
path, and the list of wrk targets."""
from __future__ import annotations

import json
import pathlib
import time

from common import (API_PATH, BenchEnvoy, BenchError, BenchSidecar, CREATE_CONNECTIONS, FORM, SIDECAR_LISTENERS,
    SNAPSHOT_TIMEOUT_S, TOKEN_BODY, TOKEN_PATH, UPSTREAM_BODY, b64url, basic_auth, create_profiles, direct_route,
    expect_status, free_ports, http_request, mint_token, mint_until, route_to, sidecar_plugin_config,
    validate_config)
from common import harness, render
from load import Scenario
from compare import build_floor

JWT_PROVIDER = "tollgate"
JWT_CACHE_SIZE = 1000


# The headers Tollgate puts on its token response, copied onto `direct`.
TOKEN_RESPONSE_HEADERS = {"content-type": "application/json", "cache-control": "no-store", "pragma": "no-cache"}


BUFFER_FILTER = {"name": "envoy.filters.http.buffer",
                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                                  "max_request_bytes": 16384}}


LISTENERS = ("passthrough", "floor", "tollgate", "tollgate_nometrics", "tollgate_route", "jwt_authn", "jwt_authn_cached", "direct", "fake_upstream")


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


ROUTE_MODE = {"identity_headers": {"set_by": "route"}}


def plugin_config(profile: dict, **extra) -> dict:
    return {"profiles": [profile], "realm": "tollgate-bench", **extra}


def build_config(ports: dict, *, admin_port: int, wasm_path: str, profile: dict, direct_body: str,
                 extra_listeners: list | None = None, extra_clusters: list | None = None) -> dict:
    """One bootstrap with every scenario's listener (ports: LISTENERS -> port)
    and one `upstream` cluster pointing at the `fake_upstream` listener."""
    sink_listener, sink_cluster = render.token_sink()
    listeners = [
        render.listener("passthrough", ports["passthrough"], [route_to("upstream")], []),
        # The empty proxy-wasm filter (tests/bench/floor): what any Wasm
        # filter costs before it does anything.
        render.listener("floor", ports["floor"], [route_to("upstream")],
                        [render.wasm_filter(build_floor(), {}, hold=True, vm_id="tollgate_floor")]),
        render.listener("tollgate", ports["tollgate"], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            route_to("upstream"),
        ], [render.wasm_filter(wasm_path, plugin_config(profile), hold=True)]),
        # The same filter, profile and routes with its metrics off: what
        # counting costs.
        render.listener("tollgate_nometrics", ports["tollgate_nometrics"], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            route_to("upstream"),
        ], [render.wasm_filter(wasm_path, plugin_config(profile, metrics=False), hold=True,
                               vm_id="tollgate_nometrics")]),
        # identity_headers.set_by "route": filter state, and the route sets
        # the headers and drops Authorization (its own vm_id: another config).
        render.listener("tollgate_route", ports["tollgate_route"], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            dict(route_to("upstream"), **render.identity_route_headers(ROUTE_MODE)),
        ], [render.wasm_filter(wasm_path, plugin_config(profile, **ROUTE_MODE), hold=True, vm_id="tollgate_route")]),
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


def token_lua(basic: str) -> str:
    return "\n".join([
        'wrk.method = "POST"',
        f'wrk.body = "{TOKEN_BODY}"',
        f'wrk.headers["Content-Type"] = "{FORM}"',
        f'wrk.headers["Authorization"] = "{basic}"',
        "",
    ])


def start(envoy_bin: str, wasm: str, profile: dict, direct_body: str, sidecars: dict | None = None,
          baseline_wasm: str | None = None) -> BenchEnvoy:
    """The bench Envoy; `sidecars` (listener name -> BenchSidecar) adds one
    sidecar-backed guard listener each; `baseline_wasm` adds a `baseline`
    listener, the static guard with another build of the filter (its own
    vm_id), to compare two builds in the same rounds."""
    sidecars = sidecars or {}
    baseline_sidecar = "sidecar_1" in sidecars and baseline_wasm
    names = (LISTENERS + tuple(sidecars) + (("baseline",) if baseline_wasm else ())
             + (("baseline_sidecar_1",) if baseline_sidecar else ()))
    ports = free_ports(names, exclude={s.port for s in sidecars.values()})
    admin = harness.free_port()
    extra_listeners, extra_clusters = sidecar_listeners(ports, wasm, sidecars)
    if baseline_wasm:
        extra_listeners.append(render.listener("baseline", ports["baseline"], [
            {"match": {"path": TOKEN_PATH}, "route": {"cluster": render.SINK_LISTENER, "timeout": "30s"}},
            route_to("upstream"),
        ], [render.wasm_filter(baseline_wasm, plugin_config(profile), hold=True, vm_id="tollgate_baseline")]))
    if baseline_sidecar:
        # The other build in sidecar mode on sidecar_1's cluster, its own
        # vm_id (its own poller and shared data): the same tokens work.
        extra_listeners.append(render.listener("baseline_sidecar_1", ports["baseline_sidecar_1"], [
            route_to("upstream"),
        ], [render.wasm_filter(baseline_wasm, sidecar_plugin_config(sidecars["sidecar_1"], "sidecar_1_cluster"),
                               hold=True, vm_id="tollgate_baseline_sidecar_1")]))
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
    expect_status(env.ports["floor"], "GET", API_PATH, 200, "floor", {"Authorization": f"Bearer {token}"})
    guarded = {name: token for name in ("tollgate", "tollgate_nometrics", "tollgate_route", "jwt_authn",
                                        "jwt_authn_cached")} | sidecar_tokens
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


def scenarios(token: str, basic: str, sidecar_tokens: dict | None = None, baseline: bool = False) -> list:
    bearer = (f"Authorization: Bearer {token}",)
    lua = token_lua(basic)
    sidecar_scs = [
        Scenario(f"guard_{name}", name, API_PATH, (f"Authorization: Bearer {tok}",),
                 note=f"Tollgate verifies the bearer token; profiles from a sidecar holding "
                      f"{SIDECAR_LISTENERS[name]:,} profile(s), via shared data")
        for name, tok in (sidecar_tokens or {}).items()]
    return [
        Scenario("passthrough", "passthrough", API_PATH, note="no auth filter"),
        # The guarded request's bytes without the guard: the 300-byte
        # Authorization header alone costs Envoy (parse, and forward upstream).
        Scenario("passthrough_bearer", "passthrough", API_PATH, bearer,
                 note="no auth filter, the guard's Authorization header (forwarded upstream)"),
        Scenario("floor_bearer", "floor", API_PATH, bearer,
                 note="the empty proxy-wasm filter, the guard's Authorization header"),
        Scenario("guard", "tollgate", API_PATH, bearer, note="Tollgate verifies the bearer token"),
        Scenario("guard_nometrics", "tollgate_nometrics", API_PATH, bearer,
                 note='the same with "metrics": false'),
        Scenario("guard_route", "tollgate_route", API_PATH, bearer,
                 note="guard with identity_headers.set_by route: filter state, no header mutation"),
        *([Scenario("guard_baseline", "baseline", API_PATH, bearer, note="guard, the --baseline-wasm build")]
          if baseline else []),
        *sidecar_scs,
        *([Scenario("guard_sidecar_baseline", "baseline_sidecar_1", API_PATH,
                    (f"Authorization: Bearer {sidecar_tokens['sidecar_1']}",),
                    note="guard_sidecar_1, the --baseline-wasm build")]
          if baseline and sidecar_tokens and "sidecar_1" in sidecar_tokens else []),
        Scenario("jwt_authn", "jwt_authn", API_PATH, bearer, note="envoy.filters.http.jwt_authn, no cache"),
        Scenario("jwt_authn_cached", "jwt_authn_cached", API_PATH, bearer,
                 note=f"jwt_authn with jwt_cache_size {JWT_CACHE_SIZE}"),
        Scenario("token", "tollgate", TOKEN_PATH, lua=lua, note="Tollgate mints a token"),
        *([Scenario("token_baseline", "baseline", TOKEN_PATH, lua=lua, note="token, the --baseline-wasm build")]
          if baseline else []),
        Scenario("direct", "direct", TOKEN_PATH, lua=lua, note="direct_response of the token response's size"),
    ]


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


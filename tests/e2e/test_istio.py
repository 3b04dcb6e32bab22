"""The filter as Istio loads it, end to end: Envoy (2 workers) with exactly
the ECDS resource istiod and its agent generate from envoy/istio/wasmplugin.yaml
(and from trafficextension.yaml) (no vm_id, root_id = pluginName, pluginConfig as a JSON string, no
allow_on_headers_stop_iteration, fail-closed), the sidecar reached through a
cluster named like Istio's outbound cluster, and the token-path routing of
envoy/istio/token-route.yaml. Then two such plugins in one proxy, which share
one shared-data space, kept apart by shared_data_namespace."""
from __future__ import annotations

import contextlib
import copy
import json
import pathlib
import shutil
import tempfile
import time
import urllib.request

import pytest
import requests
import yaml

import harness
from harness import render

ISTIO_DIR = harness.ROOT / "envoy" / "istio"
FORM = {"grant_type": "client_credentials"}


def manifest(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ISTIO_DIR / name).read_text()) if d]


def wasmplugin() -> dict:
    (wp,) = manifest("wasmplugin.yaml")
    return wp


def wasm_spec(kind: str) -> dict:
    """The plugin fields of wasmplugin.yaml or trafficextension.yaml."""
    if kind == "WasmPlugin":
        return wasmplugin()["spec"]
    (te,) = manifest("trafficextension.yaml")
    return te["spec"]["wasm"]


def plugin_config_for(sidecar: harness.Sidecar, kind: str = "WasmPlugin", **overrides) -> dict:
    """The manifest's pluginConfig with only the deployment secrets (and,
    for a second plugin, its namespace and cluster) filled in."""
    cfg = copy.deepcopy(wasm_spec(kind)["pluginConfig"])
    cfg["sidecar"]["data_token"] = sidecar.data_token
    for key, value in overrides.items():
        if key in ("cluster", "authority"):
            cfg["sidecar"][key] = value
        else:
            cfg[key] = value
    return cfg


class IstioEnvoy(harness.Envoy):
    """Envoy with one gateway listener per plugin; the ECDS files are written
    beside the bootstrap."""

    def __init__(self, upstream: harness.Upstream, plugins: list[dict], sidecars: dict[str, int], mutate=None):
        self.ecds_dir = pathlib.Path(tempfile.mkdtemp(prefix="tollgate-ecds-"))
        gateways = []
        self.extensions = []
        for i, p in enumerate(plugins):
            kind = p.get("kind", "WasmPlugin")
            ext = render.istio_wasm_extension(harness.WASM, p["config"], name=p["name"], kind=kind,
                                              plugin_name=wasm_spec(kind)["pluginName"])
            path = self.ecds_dir / f"{p['name']}.json"
            path.write_text(json.dumps(render.ecds_document(ext)))
            gateways.append({"name": f"gateway_{i}", "port": harness.free_port(),
                             "extension_name": ext["name"], "ecds_path": path})
            self.extensions.append(ext)
        self.urls = [f"http://127.0.0.1:{g['port']}" for g in gateways]
        admin = harness.free_port()
        cfg = render.istio_gateway(admin_port=admin, upstream_port=upstream.port, gateways=gateways,
                                   sidecars=sidecars)
        if mutate:
            mutate(cfg)
        super().__init__(cfg, port=gateways[0]["port"], admin_port=admin, name="envoy-istio")

    def stop(self, *args, **kwargs) -> None:
        super().stop(*args, **kwargs)
        shutil.rmtree(self.ecds_dir, ignore_errors=True)

    def config_dump(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/config_dump", timeout=5) as r:
            return json.load(r)


def until(predicate, timeout=10.0, what="condition"):
    return harness.wait_for(predicate, timeout, what, interval=0.02)


def create(sidecar: harness.Sidecar, *allow: str) -> tuple[str, str, dict]:
    args = ["create", "--name", "istio"]
    for a in allow or ("/sales/",):
        args += ["--allow", a]
    out = json.loads(sidecar.cli(*args).stdout)
    return out["client_id"], out["client_secret"], out["profile"]


def token(url: str, cid: str, secret: str) -> requests.Response:
    return requests.post(url + "/oauth2/token", auth=(cid, secret), data=FORM, headers={"connection": "close"})


def call(url: str, tok: str, path: str = "/sales/orders") -> requests.Response:
    return requests.get(url + path, headers={"authorization": f"Bearer {tok}", "connection": "close"})


@pytest.fixture()
def sidecar(tmp_path):
    s = harness.Sidecar(tmp_path / "tollgate.db")
    yield s
    s.stop()


@pytest.mark.parametrize("kind", ["WasmPlugin", "TrafficExtension"])
def test_istio_shaped_filter_token_guard_rotation(upstream, sidecar, kind):
    cluster = wasm_spec(kind)["pluginConfig"]["sidecar"]["cluster"]
    assert cluster == render.istio_cluster("tollgate-sidecar", "tollgate", 8081)
    envoy = IstioEnvoy(upstream, [{"name": "tollgate", "kind": kind, "config": plugin_config_for(sidecar, kind)}],
                       {cluster: sidecar.port})
    try:
        url = envoy.url
        # What Envoy runs is the Istio shape (its own view, not ours).
        dump = json.dumps(envoy.config_dump())
        (ext,) = envoy.extensions
        suffix = "~istio-translated-wasmplugin" if kind == "WasmPlugin" else ""
        assert ext["name"] == "extensions.istio.io/trafficextension/istio-system.tollgate" + suffix
        assert ext["name"] in dump
        plugin = ext["typed_config"]["config"]
        assert "vm_id" not in plugin["vm_config"] and '"vm_id"' not in dump
        assert "allow_on_headers_stop_iteration" not in plugin and "allow_on_headers_stop_iteration" not in dump
        assert plugin["root_id"] == "tollgate" and plugin["failure_policy"] == "FAIL_CLOSED"
        assert json.loads(plugin["configuration"]["value"])["hold_token_request_headers"] is False

        until(lambda: call(url, "x").status_code == 401, 10, "first snapshot")
        cid, secret, profile = create(sidecar, "/sales/")
        until(lambda: token(url, cid, secret).status_code == 200, 2, "new profile")

        # The token endpoint, in the four shapes, answered by the filter.
        shapes = [
            token(url, cid, secret),
            requests.post(url + "/oauth2/token",
                          json={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}),
            requests.post(url + "/oauth2/token",
                          data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}),
            requests.post(url + "/oauth2/token", files={"grant_type": (None, "client_credentials"),
                                                        "client_id": (None, cid), "client_secret": (None, secret)}),
        ]
        for r in shapes:
            assert r.status_code == 200, r.text
            assert r.json()["token_type"] == "bearer" and r.headers["cache-control"] == "no-store"
        bad = token(url, cid, "wrong" + secret)
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
        r = requests.post(url + "/oauth2/token", data="grant_type=client_credentials",
                          headers={"content-type": "application/json"}, auth=(cid, secret))
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"

        # The guard.
        tok = shapes[0].json()["access_token"]
        for _ in range(6):  # new connections over both workers
            r = call(url, tok)
            assert r.status_code == 200, r.text
            assert r.json()["headers"]["x-tollgate-client-id"] == [cid]
            assert "authorization" not in r.json()["headers"]
        assert call(url, tok, "/hr/x").status_code == 403
        assert requests.get(url + "/sales/orders").status_code == 401
        none = harness.craft_token(None, {"alg": "none", "kid": profile["kid"], "typ": "JWT"},
                                   {"sub": profile["id"], "exp": int(time.time()) + 60})
        assert call(url, none).status_code == 401
        assert requests.get(url + "/healthz").status_code == 200

        # Rotation: old secret and every old token die on both workers.
        rotated = sidecar.admin("POST", f"/profiles/{profile['id']}/rotate")
        assert rotated.status_code == 200
        until(lambda: call(url, tok).status_code == 401, 2, "old token refused")
        for _ in range(6):
            assert call(url, tok).status_code == 401
            assert token(url, cid, secret).status_code == 401
        new = token(url, cid, rotated.json()["client_secret"])
        assert new.status_code == 200
        assert call(url, new.json()["access_token"]).status_code == 200

        # No token request's headers ever reached an upstream, and the sink
        # route's 404 was never what a client saw.
        assert not [q for q in upstream.received() if q["path"].startswith("/oauth2/token")]
        log = envoy.output()
        assert secret not in log and tok not in log and sidecar.data_token not in log
    finally:
        envoy.stop()


def test_fail_closed_before_the_first_snapshot(upstream, sidecar):
    # The sidecar cluster points at a port nobody listens on.
    cluster = render.istio_cluster("tollgate-sidecar", "tollgate", 8081)
    envoy = IstioEnvoy(upstream, [{"name": "tollgate", "config": plugin_config_for(sidecar)}],
                       {cluster: harness.free_port()})
    try:
        r = token(envoy.url, "c", "s")
        assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
        assert requests.get(envoy.url + "/sales/x").status_code == 503
    finally:
        envoy.stop()


@contextlib.contextmanager
def two_gateways(upstream, tmp_path, *, namespaces: bool):
    """One Envoy, two gateway listeners, each with its own Tollgate plugin
    and its own sidecar (Istio names gw-a and gw-b), no vm_id; with
    `namespaces`, the plugins' shared_data_namespace are gw-a and gw-b,
    otherwise both keep the default."""
    sidecars = {ns: harness.Sidecar(tmp_path / f"{ns}.db") for ns in ("gw-a", "gw-b")}
    envoy = None
    try:
        plugins, clusters = [], {}
        for ns, side in sidecars.items():
            cluster = render.istio_cluster("tollgate-sidecar", ns, 8081)
            extra = {"shared_data_namespace": ns} if namespaces else {}
            plugins.append({"name": f"tollgate-{ns}", "config": plugin_config_for(
                side, cluster=cluster, authority=f"tollgate-sidecar.{ns}.svc.cluster.local", **extra)})
            clusters[cluster] = side.port
        envoy = IstioEnvoy(upstream, plugins, clusters)
        yield envoy, sidecars["gw-a"], sidecars["gw-b"]
    finally:
        if envoy:
            envoy.stop()
        for side in sidecars.values():
            side.stop()


def test_two_plugins_in_one_proxy_do_not_collide(upstream, tmp_path):
    """Two gateways, two sidecars with their own profiles, one Envoy, no
    vm_id: each plugin knows only its own clients, and a rotation in one
    leaves the other alone."""
    with two_gateways(upstream, tmp_path, namespaces=True) as (envoy, side_a, side_b):
        url_a, url_b = envoy.urls
        for u in envoy.urls:
            until(lambda u=u: call(u, "x").status_code == 401, 10, "first snapshot")
        cid_a, sec_a, prof_a = create(side_a)
        cid_b, sec_b, _ = create(side_b)
        until(lambda: token(url_a, cid_a, sec_a).status_code == 200, 2, "profile a")
        until(lambda: token(url_b, cid_b, sec_b).status_code == 200, 2, "profile b")

        tok_a = token(url_a, cid_a, sec_a).json()["access_token"]
        tok_b = token(url_b, cid_b, sec_b).json()["access_token"]
        for _ in range(4):  # both workers
            assert token(url_b, cid_a, sec_a).status_code == 401, "b does not know a's client"
            assert token(url_a, cid_b, sec_b).status_code == 401, "a does not know b's client"
            assert call(url_b, tok_a).status_code == 401 and call(url_a, tok_b).status_code == 401
            assert call(url_a, tok_a).status_code == 200 and call(url_b, tok_b).status_code == 200

        assert side_a.admin("POST", f"/profiles/{prof_a['id']}/rotate").status_code == 200
        until(lambda: call(url_a, tok_a).status_code == 401, 2, "a's old token refused")
        for _ in range(4):
            assert call(url_b, tok_b).status_code == 200, "a rotation in a leaves b alone"
            assert token(url_b, cid_b, sec_b).status_code == 200
        # Each namespace elected its own poller.
        log = envoy.output()
        assert log.count("this worker is now the profile poller") >= 2


def without_token_route_buffer(cfg: dict) -> None:
    for lst in cfg["static_resources"]["listeners"]:
        hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            route.pop("typed_per_filter_config", None)


def test_without_the_envoyfilter_the_sink_route_answers_first(upstream, sidecar):
    """Why token-route.yaml has an EnvoyFilter: without the buffer on the
    token route, the router's 404 goes out before the filter has the body."""
    cluster = render.istio_cluster("tollgate-sidecar", "tollgate", 8081)
    cid, secret, _ = create(sidecar)
    envoy = IstioEnvoy(upstream, [{"name": "tollgate", "config": plugin_config_for(sidecar)}],
                       {cluster: sidecar.port}, mutate=without_token_route_buffer)
    try:
        envoy.wait_output(r"loaded profile snapshot: revision \d+, 1 profile")
        # A valid client, a loaded profile, and still no token.
        r = token(envoy.url, cid, secret)
        assert r.status_code == 404 and "access_token" not in r.text
    finally:
        envoy.stop()


def test_without_namespaces_two_plugins_do_collide(upstream, tmp_path):
    """Why shared_data_namespace exists: with the same (default) namespace,
    two plugins in one proxy publish into the same keys, and one gateway
    accepts the other's clients."""
    with two_gateways(upstream, tmp_path, namespaces=False) as (envoy, side_a, side_b):
        url_a, url_b = envoy.urls
        cid_a, sec_a, _ = create(side_a)
        cid_b, sec_b, _ = create(side_b)
        # One poller for both: whichever sidecar it polls, the other
        # gateway now serves that sidecar's clients.
        until(lambda: token(url_b, cid_a, sec_a).status_code == 200
              or token(url_a, cid_b, sec_b).status_code == 200, 10, "a client accepted by the wrong gateway")

"""The fleet of issue 9 as a compose topology (envoy/compose/fleet.yaml): one PostgreSQL container (Debian's
package), three sidecars on it sharing one key file, three Envoys (2 workers each) in sidecar mode with
max_staleness_seconds, one upstream, driven from the host through the published 127.0.0.1 ports. Containers give
the cut-off a real network to cut: `docker network disconnect` takes one sidecar off PostgreSQL's network while
its Envoy still reaches it. Brought up under a unique project on free ports, always taken down."""
import datetime
import json
import os
import secrets
import subprocess

import harness
import pytest
import render
import requests
import stack
from conftest import distinct_free_ports

FORM = {"grant_type": "client_credentials"}
CELLS = stack.CELLS


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if not stack.docker_ready():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Docker engine answers (docker info): the compose tier cannot run")
        pytest.skip("SKIPPED: no Docker engine answers (docker info)")
    # build.sh's trap takes `<project>-fleet` down too if pytest is killed.
    base = os.environ.get("TOLLGATE_COMPOSE_PROJECT") or f"tollgate-test-{secrets.token_hex(4)}"
    free = iter(distinct_free_ports(3 * len(CELLS)))
    f = stack.Fleet(f"{base}-fleet", {n: (next(free), next(free), next(free)) for n in CELLS})
    try:
        try:
            f.clients = f.up(tmp_path_factory.mktemp("fleet") / "fleet.json")
        except SystemExit as e:  # stack.py's way to fail, made a test error
            pytest.fail(str(e))
        yield f
    finally:
        f.down(grace=1)  # its volumes go with it: nothing to flush


def until(predicate, timeout, what):
    return harness.wait_for(predicate, timeout, what, interval=0.1)


def mint(fleet, n, cid, secret):
    return requests.post(fleet.base_url(n) + "/oauth2/token", auth=(cid, secret), data=FORM,
                         headers={"connection": "close"}, timeout=10)


def call(fleet, n, token, path="/demo/orders"):
    return requests.get(fleet.base_url(n) + path, headers={"authorization": f"Bearer {token}",
                                                           "connection": "close"}, timeout=10)


def create(fleet, n, name):
    status, body = fleet.admin(n, "POST", "/profiles", {"name": name, "allowed_prefixes": ["/demo/"]})
    assert status == 201, body
    profile, secret = body["profile"], body["client_secret"]
    for cell in CELLS:
        until(lambda: mint(fleet, cell, profile["client_id"], secret).status_code == 200, 20,
              f"profile {name} on envoy-{cell}")
    return profile, secret


def logs_since(fleet, service, since):
    out = subprocess.run(["docker", "logs", "--since", since, fleet.container(service)],
                         capture_output=True, text=True, timeout=30)
    return out.stdout + out.stderr


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def snapshot_age(fleet, n):
    """The filter's tollgate_snapshot_age_seconds gauge on envoy-n (seconds since its last sync)."""
    stats = requests.get(fleet.admin_url(n) + "/stats?filter=tollgate_snapshot_age_seconds", timeout=10).text
    values = [int(line.rsplit(":", 1)[1]) for line in stats.splitlines() if line.strip()]
    assert values, stats
    return max(values)


def started(fleet, services):
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}",
                          *(fleet.container(s) for s in services)], capture_output=True, text=True, check=True)
    return out.stdout.split("\n")


def test_the_envoy_config_is_rendered_and_sets_max_staleness():
    cfg = json.loads((render.COMPOSE_DIR / "envoy-fleet.json").read_text())
    assert cfg == render.compose_fleet()
    plugin = json.loads(cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["config"]["configuration"]["value"])
    assert plugin["sidecar"]["max_staleness_seconds"] == render.FLEET_MAX_STALENESS_SECONDS
    assert plugin["sidecar"]["authority"] == "sidecar"


def test_topology_only_loopback_is_published(fleet):
    ids = fleet.run("ps", "-q").stdout.split()
    assert len(ids) == 2 + 2 * len(CELLS)
    out = subprocess.run(["docker", "inspect", "-f", "{{.Name}} {{json .NetworkSettings.Ports}}", *ids],
                         capture_output=True, text=True, check=True).stdout
    published = 0
    for line in out.splitlines():
        name, ports = line.split(" ", 1)
        bindings = [b for bs in (json.loads(ports) or {}).values() for b in bs or []]
        assert all(b["HostIp"] == "127.0.0.1" for b in bindings), (name, bindings)
        if "postgres" in name or "upstream" in name:
            assert not bindings, name
        published += len(bindings)
    assert published == 3 * len(CELLS)  # per cell: Envoy, its admin, the sidecar API
    # Every sidecar uses PostgreSQL and the one key file, not a SQLite file of its own.
    for n in CELLS:
        env = fleet.run("exec", "-T", f"sidecar-{n}", "sh", "-c",
                        "ls /var/lib/tollgate; tr '\\0' '\\n' < /proc/1/environ | grep -E '^TOLLGATE_(STORE|KEY_FILE)='"
                        " | sed 's/:[0-9a-f]*@/:***@/'").stdout
        assert "TOLLGATE_STORE=postgres://tollgate:***@postgres:5432/tollgate" in env, env
        assert "TOLLGATE_KEY_FILE=/run/tollgate-fleet/tollgate.key" in env
        assert "tollgate.db" not in env


def test_rotation_through_one_sidecar_refuses_the_old_token_on_every_envoy(fleet):
    profile, secret = create(fleet, 1, "rotated")
    cid = profile["client_id"]
    old = [mint(fleet, n, cid, secret).json()["access_token"] for n in CELLS]
    for n in CELLS:  # one key for the fleet: any Envoy accepts any Envoy's token
        for token in old:
            assert call(fleet, n, token).status_code == 200

    status, rotated = fleet.admin(2, "POST", f"/profiles/{profile['id']}/rotate")
    assert status == 200, rotated
    for n in CELLS:
        until(lambda: call(fleet, n, old[0]).status_code == 401, 15, f"old token refused on envoy-{n}")
    for n in CELLS:
        for _ in range(2):  # new connections, spread over both workers
            for token in old:
                r = call(fleet, n, token)
                assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
            assert mint(fleet, n, cid, secret).status_code == 401
    fresh = mint(fleet, 3, cid, rotated["client_secret"])
    assert fresh.status_code == 200, fresh.text
    for n in CELLS:
        assert call(fleet, n, fresh.json()["access_token"]).status_code == 200


def test_sidecar_cut_off_from_postgres_keeps_stale_view_refuses_when_too_stale_and_catches_up(fleet):
    profile, secret = create(fleet, 1, "cut-off")
    cid = profile["client_id"]
    token = mint(fleet, 3, cid, secret).json()["access_token"]
    network, lone = fleet.store_network(), fleet.container("sidecar-3")
    since = now_rfc3339()
    subprocess.run(["docker", "network", "disconnect", network, lone], check=True, timeout=60)
    try:
        status, rotated = fleet.admin(2, "POST", f"/profiles/{profile['id']}/rotate")
        assert status == 200, rotated
        for n in (1, 2):
            until(lambda: call(fleet, n, token).status_code == 401, 15, f"rotation on the connected envoy-{n}")
        # The cut-off Envoy keeps its stale view: the old token still passes there.
        assert call(fleet, 3, token).status_code == 200
        until(lambda: "store unavailable" in logs_since(fleet, "sidecar-3", since), 30, "the sidecar's error log")
        until(lambda: "serving the last snapshot" in logs_since(fleet, "envoy-3", since), 30,
              "the Envoy's stale-snapshot log")
        # Past max_staleness_seconds it refuses rather than trust a stale view, and its snapshot-age
        # metric says how stale; the connected Envoys are not stale.
        until(lambda: call(fleet, 3, token).status_code == 503, render.FLEET_MAX_STALENESS_SECONDS + 45,
              "503 once too stale")
        until(lambda: snapshot_age(fleet, 3) > render.FLEET_MAX_STALENESS_SECONDS, 15, "envoy-3's snapshot age")
        for n in (1, 2):
            assert snapshot_age(fleet, n) < render.FLEET_MAX_STALENESS_SECONDS
        assert mint(fleet, 3, cid, secret).status_code == 503
        for n in (1, 2):  # the others are unaffected
            assert mint(fleet, n, cid, rotated["client_secret"]).status_code == 200
    finally:
        subprocess.run(["docker", "network", "connect", network, lone], check=True, timeout=60)
    until(lambda: call(fleet, 3, token).status_code == 401, 45, "catch-up after the network is back")
    until(lambda: snapshot_age(fleet, 3) < render.FLEET_MAX_STALENESS_SECONDS, 15, "envoy-3's age back down")
    assert mint(fleet, 3, cid, rotated["client_secret"]).status_code == 200


def test_postgres_stopped_envoys_serve_their_snapshot_writes_503_then_resync_without_restarts(fleet):
    profile, secret = create(fleet, 1, "outage")
    cid = profile["client_id"]
    tokens = [mint(fleet, n, cid, secret).json()["access_token"] for n in CELLS]
    sidecars = [f"sidecar-{n}" for n in CELLS]
    before = started(fleet, sidecars)

    fleet.run("stop", "--timeout", "10", "postgres", timeout=60)
    try:
        failures = calls = 0
        for _ in range(5):
            for n, token in zip(CELLS, tokens):
                failures += call(fleet, n, token).status_code != 200
                failures += mint(fleet, n, cid, secret).status_code != 200
                calls += 2
        assert failures == 0, f"{failures} of {calls}: known clients must see no failure while PostgreSQL is down"
        for n in CELLS:
            status, body = fleet.admin(n, "POST", f"/profiles/{profile['id']}/rotate")
            assert status == 503 and body["error"] == "store_unavailable", (status, body)
            status, body = fleet.admin(n, "POST", "/profiles", {"name": "lost", "allowed_prefixes": ["/x/"]})
            assert status == 503, (status, body)
    finally:
        fleet.run("start", "postgres", timeout=60)

    rotated = until(lambda: (lambda r: r[1] if r[0] == 200 else None)(
        fleet.admin(3, "POST", f"/profiles/{profile['id']}/rotate")), 60, "admin write after PostgreSQL is back")
    _, listed = fleet.admin(2, "GET", "/profiles")
    assert "lost" not in [p["name"] for p in listed["profiles"]], "a refused write must not appear later"
    for n, token in zip(CELLS, tokens):
        until(lambda: call(fleet, n, token).status_code == 401, 45, f"the rotation after the outage on envoy-{n}")
        assert mint(fleet, n, cid, rotated["client_secret"]).status_code == 200
    assert started(fleet, sidecars) == before, "the sidecars resynced without a restart"

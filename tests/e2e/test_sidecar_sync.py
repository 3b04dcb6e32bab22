"""Profiles from the sidecar, end to end: the real tollgate-sidecar (SQLite),
Envoy with 2 workers running the built filter, the lease-elected poller, and
real clients. Rotation, disable, delete and prefix changes must reach every
worker within a second; the filter keeps serving its cache while the sidecar
is down and fails closed before its first snapshot or when too stale."""
import json
import time

import pytest
import requests

import harness

FORM = {"grant_type": "client_credentials"}


def token_for(gw, client_id, secret):
    r = requests.post(gw.url + "/oauth2/token", auth=(client_id, secret), data=FORM)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def call(gw, token, path="/sales/orders"):
    return requests.get(gw.url + path, headers={"authorization": f"Bearer {token}", "connection": "close"})


def worker_connections(gw) -> list[int]:
    """Per-worker accepted connections on the gateway listener (Envoy stats)."""
    import re
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/stats?filter=worker_.*downstream_cx_total",
                                timeout=5) as r:
        text = r.read().decode()
    return [int(n) for n in re.findall(rf"listener\.127\.0\.0\.1_{gw.port}\.worker_\d+\.downstream_cx_total: (\d+)",
                                       text)]


def until(predicate, timeout=5.0, what="condition"):
    return harness.wait_for(predicate, timeout, what, interval=0.01)


@pytest.fixture()
def sidecar(tmp_path):
    s = harness.Sidecar(tmp_path / "tollgate.db")
    yield s
    s.stop()


@pytest.fixture()
def gateway(upstream, sidecar):
    gw = harness.start_gateway(upstream, sidecar.plugin_config(), sidecar_port=sidecar.port)
    until(lambda: requests.get(gw.url + "/sales/x").status_code == 401, 10, "first snapshot")
    yield gw
    gw.stop()


def create(sidecar, *allow, name="demo"):
    args = ["create", "--name", name]
    for a in allow or ("/sales/",):
        args += ["--allow", a]
    out = json.loads(sidecar.cli(*args).stdout)
    return out["client_id"], out["client_secret"], out["profile"]


def test_cli_profile_four_shapes_and_identity(sidecar, gateway):
    cid, secret, profile = create(sidecar, "/sales/")
    url = gateway.url + "/oauth2/token"
    # Creation reaches the filter within a second.
    until(lambda: requests.post(url, auth=(cid, secret), data=FORM).status_code == 200, 1.0, "new profile")
    shapes = [
        requests.post(url, auth=(cid, secret), data=FORM),
        requests.post(url, json={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}),
        requests.post(url, data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret}),
        requests.post(url, files={"grant_type": (None, "client_credentials"), "client_id": (None, cid),
                                  "client_secret": (None, secret)}),
    ]
    for r in shapes:
        assert r.status_code == 200, r.text
        header, claims = harness.decode_jwt(r.json()["access_token"])
        assert json.loads(header)["kid"] == profile["kid"]
        assert claims["sub"] == profile["id"]
        echo = call(gateway, r.json()["access_token"]).json()
        assert echo["headers"]["x-tollgate-client-id"] == [cid]
        assert echo["headers"]["x-tollgate-profile-id"] == [profile["id"]]
    assert call(gateway, shapes[0].json()["access_token"], "/hr/x").status_code == 403


def test_rotation_revokes_old_secret_and_tokens_on_every_worker(sidecar, gateway):
    cid, secret, profile = create(sidecar)
    until(lambda: requests.post(gateway.url + "/oauth2/token", auth=(cid, secret), data=FORM).status_code == 200, 1.0)
    old_tokens = [token_for(gateway, cid, secret) for _ in range(4)]
    for t in old_tokens:
        assert call(gateway, t).status_code == 200  # now cached as verified on the workers
    before = worker_connections(gateway)

    rotated = sidecar.admin("POST", f"/profiles/{profile['id']}/rotate")
    t0 = time.monotonic()
    assert rotated.status_code == 200
    new_secret = rotated.json()["client_secret"]
    assert rotated.json()["profile"]["kid"] != profile["kid"]

    until(lambda: call(gateway, old_tokens[0]).status_code == 401, 1.0, "old token refused")
    elapsed = time.monotonic() - t0
    # Every old token, on new connections spread over both workers, fails now.
    for _ in range(6):
        for t in old_tokens:
            r = call(gateway, t)
            assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = requests.post(gateway.url + "/oauth2/token", auth=(cid, secret), data=FORM,
                          headers={"connection": "close"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    after = worker_connections(gateway)
    assert len(after) == 2 and all(a > b for a, b in zip(after, before)), (before, after)
    assert elapsed < 1.0, elapsed
    new_token = token_for(gateway, cid, new_secret)
    assert json.loads(harness.decode_jwt(new_token)[0])["kid"] == rotated.json()["profile"]["kid"]
    for _ in range(6):
        assert call(gateway, new_token).status_code == 200


def test_disable_enable_delete_and_prefix_changes(sidecar, gateway):
    cid, secret, profile = create(sidecar, "/sales/")
    until(lambda: requests.post(gateway.url + "/oauth2/token", auth=(cid, secret), data=FORM).status_code == 200, 1.0)
    token = token_for(gateway, cid, secret)
    assert call(gateway, token).status_code == 200

    sidecar.cli("set-prefixes", profile["id"], "--allow", "/hr/")
    until(lambda: call(gateway, token).status_code == 403, 1.0, "prefix change")
    assert call(gateway, token, "/hr/people").status_code == 200

    sidecar.cli("disable", cid)
    until(lambda: call(gateway, token, "/hr/people").status_code == 401, 1.0, "disable")
    r = requests.post(gateway.url + "/oauth2/token", auth=(cid, secret), data=FORM)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"

    sidecar.cli("enable", cid)
    until(lambda: call(gateway, token, "/hr/people").status_code == 200, 1.0, "enable")

    sidecar.admin("DELETE", f"/profiles/{profile['id']}").raise_for_status()
    until(lambda: call(gateway, token, "/hr/people").status_code == 401, 1.0, "delete")
    assert requests.post(gateway.url + "/oauth2/token", auth=(cid, secret), data=FORM).status_code == 401


def test_sidecar_down_serves_cache_then_catches_up(sidecar, gateway):
    cid, secret, _ = create(sidecar)
    until(lambda: requests.post(gateway.url + "/oauth2/token", auth=(cid, secret), data=FORM).status_code == 200, 1.0)
    sidecar.stop()
    # Changes made while it is down (CLI on the same file) must arrive later.
    cid2, secret2, _ = create(sidecar, name="made-while-down")
    time.sleep(1.0)
    token = token_for(gateway, cid, secret)  # still minted from the cache
    assert call(gateway, token).status_code == 200
    assert requests.post(gateway.url + "/oauth2/token", auth=(cid2, secret2), data=FORM).status_code == 401
    assert "serving the last snapshot" in gateway.output()

    restarted = sidecar.restart()
    try:
        until(lambda: requests.post(gateway.url + "/oauth2/token", auth=(cid2, secret2), data=FORM).status_code
              == 200, 10, "catch-up after restart")
        assert call(gateway, token).status_code == 200
    finally:
        restarted.stop()


def test_envoy_restart_resyncs(upstream, sidecar):
    cid, secret, _ = create(sidecar)
    for _ in range(2):
        gw = harness.start_gateway(upstream, sidecar.plugin_config(), sidecar_port=sidecar.port)
        try:
            until(lambda: requests.post(gw.url + "/oauth2/token", auth=(cid, secret), data=FORM).status_code == 200,
                  10, "sync after start")
            assert call(gw, token_for(gw, cid, secret)).status_code == 200
        finally:
            gw.stop()


def test_fail_closed_before_first_snapshot(upstream, tmp_path):
    # The cluster points at a port where nothing listens: no snapshot, ever.
    s = harness.Sidecar(tmp_path / "t.db")
    s.stop()
    gw = harness.start_gateway(upstream, s.plugin_config(), sidecar_port=s.port)
    seen_before = len(upstream.received())
    try:
        r = requests.post(gw.url + "/oauth2/token",
                          data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"})
        assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
        assert "access_token" not in r.text
        r = requests.get(gw.url + "/sales/x", headers={"authorization": "Bearer a.b.c"})
        assert r.status_code == 503 and "snapshot" in r.json()["error_description"]
        assert len(upstream.received()) == seen_before, "nothing reached the upstream"
    finally:
        gw.stop()


def test_max_staleness_turns_into_503_and_recovers(upstream, sidecar):
    cid, secret, _ = create(sidecar)
    gw = harness.start_gateway(upstream, sidecar.plugin_config(long_poll_seconds=1, max_staleness_seconds=6),
                               sidecar_port=sidecar.port)
    try:
        until(lambda: requests.post(gw.url + "/oauth2/token", auth=(cid, secret), data=FORM).status_code == 200, 10)
        token = token_for(gw, cid, secret)
        sidecar.stop()
        assert call(gw, token).status_code == 200, "fresh enough right after the outage"
        until(lambda: call(gw, token).status_code == 503, 15, "stale snapshot refused")
        restarted = sidecar.restart()
        try:
            until(lambda: call(gw, token).status_code == 200, 15, "recovery")
        finally:
            restarted.stop()
    finally:
        gw.stop()


def test_one_poller_per_envoy(sidecar, gateway):
    """Two workers, one long poll in flight (the lease), not one per worker."""
    time.sleep(1.0)
    active = gateway.stat("cluster.tollgate_sidecar.upstream_rq_active")
    assert active == 1, active


def test_bad_admin_input_changes_nothing(sidecar, gateway):
    cid, secret, profile = create(sidecar)
    rev = sidecar.admin("GET", "/profiles").json()["revision"]
    cases = [
        sidecar.admin("POST", "/profiles/" + "0" * 64 + "/rotate"),
        sidecar.admin("POST", "/profiles", json={"name": "x", "allowed_prefixes": ["no-slash"]}),
        sidecar.admin("PUT", f"/profiles/{profile['id']}/allowed_prefixes", json={"allowed_prefixes": ["/a/../b/"]}),
        sidecar.admin("POST", f"/profiles/{profile['id']}/rotate", token=None),
        sidecar.admin("POST", f"/profiles/{profile['id']}/rotate", token="wrong-" + sidecar.admin_token),
        sidecar.admin("POST", f"/profiles/{profile['id']}/rotate", token=sidecar.data_token),
        sidecar.admin("POST", "/profiles", data="{not json", headers={"content-type": "application/json"}),
    ]
    assert [r.status_code for r in cases] == [404, 400, 400, 401, 401, 401, 400]
    for r in cases:
        assert r.json()["error"] and r.json()["message"]
    assert sidecar.admin("GET", "/profiles").json()["revision"] == rev
    out = sidecar.cli("rotate", "nope", check=False)
    assert out.returncode == 3 and out.stderr.startswith("error: ")
    out = sidecar.cli("set-prefixes", cid, "--allow", "bad", check=False)
    assert out.returncode == 2 and "error: " in out.stderr
    assert sidecar.admin("GET", "/profiles").json()["revision"] == rev
    # And the old credentials still work.
    until(lambda: requests.post(gateway.url + "/oauth2/token", auth=(cid, secret), data=FORM).status_code == 200, 1.0)


def test_store_files_are_private_and_keys_sealed_at_rest(sidecar):
    """Defect: var/tollgate.db (and -wal/-shm) were 0644 with plaintext HMAC
    keys. Now every store file is 0600 and the database file holds no key."""
    import os
    import stat
    create(sidecar)
    r = requests.get(sidecar.url + "/data/v1/snapshot", headers={"authorization": f"Bearer {sidecar.data_token}"})
    assert r.status_code == 200 and r.json()["version"] == 1
    signing_key = r.json()["profiles"][0]["signing_key"]
    db = sidecar.db
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.with_suffix(".key")]
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    for f in files[:3]:
        assert signing_key.encode() not in f.read_bytes(), f
    assert signing_key not in sidecar.output()

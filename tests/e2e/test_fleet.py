"""A fleet on one PostgreSQL store, as processes on loopback: one PostgreSQL (Debian's, started here), three
sidecars, three Envoys with 2 workers each running the built filter, one upstream. A rotation through any one
sidecar's admin API reaches every Envoy; PostgreSQL stopped leaves every Envoy serving its last snapshot while
admin writes fail with 503 and lose nothing, and PostgreSQL back resyncs every sidecar without a restart; a
sidecar cut off from PostgreSQL while the others rotate keeps its Envoy on the stale view, says so, refuses
after max_staleness_seconds and catches up once the link is back."""
import time

import pytest
import requests

import harness

FORM = {"grant_type": "client_credentials"}
SIDECARS = 3


def mint(gw, cid, secret):
    return requests.post(gw.url + "/oauth2/token", auth=(cid, secret), data=FORM, headers={"connection": "close"})


def call(gw, token, path="/api/orders"):
    return requests.get(gw.url + path, headers={"authorization": f"Bearer {token}", "connection": "close"})


def until(predicate, timeout, what):
    return harness.wait_for(predicate, timeout, what, interval=0.02)


@pytest.fixture(scope="module")
def pg():
    p = harness.Postgres()
    yield p
    p.cleanup()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    """The fleet's one key file (signing keys are sealed with it; every sidecar needs the same)."""
    return tmp_path_factory.mktemp("fleet-key") / "tollgate.key"


@pytest.fixture(scope="module")
def fleet(pg, upstream, key_file):
    url = pg.create_database("fleet")
    sidecars, gateways = [], []
    try:
        for _ in range(SIDECARS):
            sidecars.append(harness.Sidecar(url, key_file=key_file))
        for s in sidecars:
            gateways.append(harness.start_gateway(upstream, s.plugin_config(long_poll_seconds=5),
                                                  sidecar_port=s.port))
        for gw in gateways:
            until(lambda: requests.get(gw.url + "/api/x").status_code == 401, 20, "first snapshot")
        yield sidecars, gateways
    finally:
        for p in gateways + sidecars:
            p.stop()


def create(sidecar, name="fleet"):
    r = sidecar.admin("POST", "/profiles", json={"name": name, "allowed_prefixes": ["/api/"]})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["profile"], body["client_secret"]


def test_rotation_through_one_sidecar_refuses_the_old_token_on_every_envoy(fleet):
    sidecars, gateways = fleet
    profile, secret = create(sidecars[0])
    cid = profile["client_id"]
    for gw in gateways:
        until(lambda: mint(gw, cid, secret).status_code == 200, 10, "new profile on every Envoy")
    old = [mint(gw, cid, secret).json()["access_token"] for gw in gateways]
    # Tokens are HS256 with the profile's key: any Envoy of the fleet accepts any of them.
    for gw in gateways:
        for token in old:
            assert call(gw, token).status_code == 200

    rotated = sidecars[1].admin("POST", f"/profiles/{profile['id']}/rotate")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    for gw in gateways:
        until(lambda: call(gw, old[0]).status_code == 401, 10, f"old token refused on {gw.url}")
    for gw in gateways:
        for _ in range(2):  # new connections, spread over both workers
            for token in old:
                r = call(gw, token)
                assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
            assert mint(gw, cid, secret).status_code == 401
    fresh = mint(gateways[2], cid, new_secret)
    assert fresh.status_code == 200, fresh.text
    for gw in gateways:
        assert call(gw, fresh.json()["access_token"]).status_code == 200


def test_racing_admins_on_two_sidecars_one_wins_one_gets_409(fleet):
    sidecars, gateways = fleet
    profile, _ = create(sidecars[0], "raced")
    rev = profile["revision"]
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(
            lambda s: s.admin("POST", f"/profiles/{profile['id']}/rotate", headers={"if-match": f'"{rev}"'}),
            sidecars[:2]))
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    winner = next(r for r in answers if r.status_code == 200).json()
    loser = next(r for r in answers if r.status_code == 409).json()
    assert loser["error"] == "conflict"
    for gw in gateways:
        until(lambda: mint(gw, profile["client_id"], winner["client_secret"]).status_code == 200, 10,
              "the winner's secret on every Envoy")


def test_postgres_down_envoys_serve_their_snapshot_writes_503_then_resync(pg, fleet):
    sidecars, gateways = fleet
    profile, secret = create(sidecars[0], "outage")
    cid = profile["client_id"]
    for gw in gateways:
        until(lambda: mint(gw, cid, secret).status_code == 200, 10, "profile on every Envoy")
    tokens = [mint(gw, cid, secret).json()["access_token"] for gw in gateways]

    pg.stop()
    try:
        failures = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for gw, token in zip(gateways, tokens):
                failures += call(gw, token).status_code != 200
                failures += mint(gw, cid, secret).status_code != 200
        assert failures == 0, "known clients must see no failure while PostgreSQL is down"
        for s in sidecars:
            r = s.admin("POST", f"/profiles/{profile['id']}/rotate")
            assert r.status_code == 503 and r.json()["error"] == "store_unavailable", r.text
            r = s.admin("POST", "/profiles", json={"name": "lost", "allowed_prefixes": ["/x/"]})
            assert r.status_code == 503, r.text
    finally:
        pg.start()

    # No sidecar or Envoy restarts: the next write through any sidecar reaches every Envoy.
    r = until(lambda: (lambda r: r if r.status_code == 200 else None)(
        sidecars[2].admin("POST", f"/profiles/{profile['id']}/rotate")), 20, "admin write after PostgreSQL is back")
    names = [p["name"] for p in sidecars[1].admin("GET", "/profiles").json()["profiles"]]
    assert "lost" not in names, "a refused write must not appear later"
    for gw, token in zip(gateways, tokens):
        until(lambda: call(gw, token).status_code == 401, 15, "rotation after the outage on every Envoy")
    for gw in gateways:
        assert mint(gw, cid, r.json()["client_secret"]).status_code == 200


def test_sidecar_cut_off_keeps_stale_view_refuses_when_too_stale_and_catches_up(pg, upstream, fleet, key_file):
    sidecars, gateways = fleet
    url = pg.url("fleet")
    link = harness.CuttableLink(pg.port)
    cut_url = url.replace(f":{pg.port}/", f":{link.port}/")
    lone = harness.Sidecar(cut_url, key_file=key_file)
    gw = harness.start_gateway(upstream, lone.plugin_config(long_poll_seconds=1, max_staleness_seconds=8),
                               sidecar_port=lone.port)
    try:
        profile, secret = create(sidecars[0], "cut-off")
        cid = profile["client_id"]
        until(lambda: mint(gw, cid, secret).status_code == 200, 10, "profile on the lone Envoy")
        token = mint(gw, cid, secret).json()["access_token"]

        link.cut()
        rotated = sidecars[1].admin("POST", f"/profiles/{profile['id']}/rotate")
        assert rotated.status_code == 200
        for other in gateways:
            until(lambda: call(other, token).status_code == 401, 10, "rotation on the connected Envoys")
        # The cut-off Envoy keeps its stale view (the old token still passes there) and says so.
        assert call(gw, token).status_code == 200
        until(lambda: "serving the last snapshot" in gw.output(), 10, "the Envoy's stale-snapshot log")
        until(lambda: "store unavailable" in lone.output(), 10, "the sidecar's error log")
        # Past max_staleness_seconds it refuses rather than trust a stale view.
        until(lambda: call(gw, token).status_code == 503, 20, "503 once too stale")

        link.heal()
        until(lambda: call(gw, token).status_code == 401, 20, "catch-up after the link is back")
        assert mint(gw, cid, rotated.json()["client_secret"]).status_code == 200
    finally:
        gw.stop()
        lone.stop()
        link.close()

"""Tollgate's metrics as an operator scrapes them: Envoy's admin endpoint
(/stats and /stats/prometheus) after known traffic, spread over both workers
of a fresh Envoy, so every count is exact."""
import re
import time
import urllib.request

import pytest
import requests

import harness

FORM = {"grant_type": "client_credentials"}
TOKEN_ERRORS = ("invalid_request", "invalid_client", "unsupported_grant_type", "temporarily_unavailable", "other")
GUARD_CAUSES = ("missing", "malformed", "algorithm", "unknown_key", "signature", "expired", "not_yet_valid",
                "revoked", "insufficient_scope", "unavailable", "other")
SYNC_CAUSES = ("dispatch", "unreachable", "unauthorized", "status", "contract", "publish")


def admin(gw, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}{path}", timeout=5) as r:
        return r.read().decode()


def prometheus(gw) -> dict:
    """`tollgate_*` samples of /stats/prometheus: (name, labels) -> value,
    and each name's TYPE."""
    samples, types = {}, {}
    for line in admin(gw, "/stats/prometheus").splitlines():
        if m := re.fullmatch(r"# TYPE (tollgate_\w+) (\w+)", line):
            types[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"(tollgate_\w+)\{(.*)\} (\d+)", line):
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2))))
            samples[(m.group(1), labels)] = int(m.group(3))
    return {"samples": samples, "types": types}


def stats(gw) -> dict:
    """/stats?filter= for the raw (wasmcustom.) names."""
    text = admin(gw, "/stats?filter=" + urllib.request.quote(r"^wasmcustom\..*tollgate_"))
    return {k: int(v) for k, v in re.findall(r"^(wasmcustom\.\S+): (\d+)$", text, re.M)}


def total(gw, name: str) -> int:
    """A metric summed over its label values."""
    return sum(v for (n, _), v in prometheus(gw)["samples"].items() if n == name)


def worker_connections(gw) -> list[int]:
    text = admin(gw, "/stats?filter=worker_.*downstream_cx_total")
    return [int(n) for n in re.findall(rf"listener\.127\.0\.0\.1_{gw.port}\.worker_\d+\.downstream_cx_total: (\d+)",
                                       text)]


def fresh(method, url, **kw):
    """One request on its own connection, so requests spread over workers."""
    headers = dict(kw.pop("headers", {}), connection="close")
    return requests.request(method, url, headers=headers, timeout=10, **kw)


@pytest.fixture()
def gw(upstream, static_profiles):
    profiles = [p for p, _ in static_profiles.values()]
    env = harness.start_gateway(upstream, {"profiles": profiles, "public_paths": ["/public/"],
                                           "realm": "tollgate-test", "issuers": ["https://api.example.com"]})
    yield env
    env.stop()


def test_counts_after_known_traffic_on_two_workers(gw, static_profiles):
    (sales, secret), (hr, hr_secret) = static_profiles["sales"], static_profiles["hr"]
    url = gw.url + "/oauth2/token"
    tokens = []
    for _ in range(4):
        r = fresh("POST", url, auth=(sales["client_id"], secret), data=FORM)
        assert r.status_code == 200
        tokens.append(r.json()["access_token"])
    r = fresh("POST", url, data={**FORM, "client_id": hr["client_id"], "client_secret": hr_secret})
    assert r.status_code == 200
    hr_token = r.json()["access_token"]
    refused = [
        (fresh("POST", url, auth=(sales["client_id"], "wrong"), data=FORM), 401),
        (fresh("POST", url, auth=("nobody", "x"), data=FORM), 401),
        (fresh("POST", url, auth=(sales["client_id"], secret), data={"grant_type": "password"}), 400),
        (fresh("GET", url), 405),
        (fresh("POST", url, data="grant_type=client_credentials", headers={"content-type": "text/plain"}), 400),
    ]
    for r, status in refused:
        assert r.status_code == status, r.text

    api = gw.url + "/sales/orders"
    for t in tokens + tokens[:2]:
        assert fresh("GET", api, headers={"authorization": f"Bearer {t}"}).status_code == 200
    key = sales["signing_key"]
    now = int(time.time())
    header = {"alg": "HS256", "kid": sales["kid"], "typ": "JWT"}
    claims = {"sub": sales["id"], "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    guard_refused = {
        "missing": [{}],
        "insufficient_scope": [{"authorization": f"Bearer {hr_token}"}, {"authorization": f"Bearer {tokens[0]}",
                                                                         "x-path": "/hr/x"}],
        "expired": [{"authorization": "Bearer " + harness.craft_token(key, header, claims)}],
        "algorithm": [{"authorization": "Bearer " + harness.craft_token(None, dict(header, alg="none"), claims)}],
        "unknown_key": [{"authorization": "Bearer " + harness.craft_token(key, dict(header, kid="ab" * 32), claims)}],
        "signature": [{"authorization": "Bearer " + harness.craft_token("cd" * 32, header,
                                                                        dict(claims, exp=now + 600))}],
        "malformed": [{"authorization": "Bearer not-a-jwt"}],
    }
    for cause, calls in guard_refused.items():
        for headers in calls:
            path = headers.pop("x-path", "/sales/orders")
            r = fresh("GET", gw.url + path, headers=headers)
            assert r.status_code in (401, 403), (cause, r.status_code, r.text)
    # Neither public paths nor discovery are the guard's business.
    assert fresh("GET", gw.url + "/public/x").status_code == 200
    assert fresh("GET", gw.url + "/.well-known/oauth-authorization-server",
                 headers={"host": "api.example.com"}).status_code == 200

    conns = worker_connections(gw)
    assert len(conns) == 2 and all(n > 0 for n in conns), f"traffic did not reach both workers: {conns}"

    want_refused = {"invalid_client": 2, "unsupported_grant_type": 1, "invalid_request": 2}
    want_guard = {c: len(v) for c, v in guard_refused.items()}
    prom = prometheus(gw)
    samples = prom["samples"]
    assert samples[("tollgate_tokens_issued_total", ())] == 5
    assert samples[("tollgate_guard_allowed_total", ())] == 6
    for e in TOKEN_ERRORS:
        assert samples[("tollgate_token_refused_total", (("error", e),))] == want_refused.get(e, 0), e
    for c in GUARD_CAUSES:
        assert samples[("tollgate_guard_refused_total", (("cause", c),))] == want_guard.get(c, 0), c
    assert samples[("tollgate_lockouts_total", ())] == 0
    assert samples[("tollgate_sync_successes_total", ())] == 0
    for c in SYNC_CAUSES:
        assert samples[("tollgate_sync_failures_total", (("cause", c),))] == 0, c
    assert samples[("tollgate_profiles_loaded", ())] == 3
    assert samples[("tollgate_snapshot_age_seconds", ())] == 0
    assert prom["types"]["tollgate_token_refused_total"] == "counter"
    assert prom["types"]["tollgate_profiles_loaded"] == "gauge"
    assert len(samples) == 6 + len(TOKEN_ERRORS) + len(GUARD_CAUSES) + len(SYNC_CAUSES), sorted(samples)

    # The same numbers under their raw names, as /stats?filter= shows them.
    raw = stats(gw)
    assert raw["wasmcustom.tollgate_tokens_issued_total"] == 5
    assert raw["wasmcustom.error=.=invalid_client;.;tollgate_token_refused_total"] == 2
    assert raw["wasmcustom.cause=.=insufficient_scope;.;tollgate_guard_refused_total"] == 2

    # Label values are our fixed vocabulary: no client id, kid or token.
    text = admin(gw, "/stats/prometheus")
    for p, _ in static_profiles.values():
        assert p["client_id"] not in text and p["kid"] not in text


def test_metrics_can_be_switched_off(upstream, static_profiles):
    """`"metrics": false` defines nothing (how the bench measures their cost)."""
    env = harness.start_gateway(upstream, {"profiles": [p for p, _ in static_profiles.values()], "metrics": False})
    try:
        record, secret = static_profiles["sales"]
        r = requests.post(env.url + "/oauth2/token", auth=(record["client_id"], secret), data=FORM)
        assert r.status_code == 200
        assert stats(env) == {}
        assert not prometheus(env)["samples"]
    finally:
        env.stop()


def test_sync_metrics_follow_the_sidecar(upstream, tmp_path):
    sidecar = harness.Sidecar(tmp_path / "tollgate.db")
    try:
        for name in ("a", "b"):
            sidecar.cli("create", "--name", name, "--allow", "/sales/")
        gw = harness.start_gateway(upstream, sidecar.plugin_config(long_poll_seconds=1), sidecar_port=sidecar.port)
        try:
            sample = lambda name: prometheus(gw)["samples"].get((name, ()))  # noqa: E731
            harness.wait_for(lambda: sample("tollgate_profiles_loaded") == 2, 15, "profiles_loaded == 2")
            harness.wait_for(lambda: sample("tollgate_sync_successes_total") >= 2, 15, "quiet long polls counted")
            assert total(gw, "tollgate_sync_failures_total") == 0
            assert sample("tollgate_snapshot_age_seconds") <= 3
            sidecar.cli("create", "--name", "c", "--allow", "/sales/")
            harness.wait_for(lambda: sample("tollgate_profiles_loaded") == 3, 15, "profiles_loaded == 3")

            sidecar.stop()
            harness.wait_for(lambda: total(gw, "tollgate_sync_failures_total") >= 1, 15, "a failure counted")
            # Envoy answers the callout itself (503, no healthy upstream) or it
            # finds no answer at all, depending on when the sidecar went away.
            by_cause = {dict(labels)["cause"]: v for (n, labels), v in prometheus(gw)["samples"].items()
                        if n == "tollgate_sync_failures_total" and v}
            assert set(by_cause) <= {"status", "unreachable"}, by_cause
            harness.wait_for(lambda: sample("tollgate_snapshot_age_seconds") >= 3, 15, "the age grows")
            assert sample("tollgate_profiles_loaded") == 3, "the last snapshot is still served"

            sidecar = sidecar.restart()
            harness.wait_for(lambda: sample("tollgate_snapshot_age_seconds") <= 1, 20, "the age drops")
        finally:
            gw.stop()
    finally:
        sidecar.stop()


def test_a_lockout_is_counted_once(upstream, static_profiles):
    record, secret = static_profiles["sales"]
    env = harness.start_gateway(upstream, {"profiles": [p for p, _ in static_profiles.values()],
                                           "lockout": {"max_failures": 2, "base_seconds": 60}})
    try:
        url = env.url + "/oauth2/token"
        for _ in range(2):
            assert fresh("POST", url, auth=(record["client_id"], "wrong"), data=FORM).status_code == 401
        for _ in range(3):  # locked: the right secret gets 429 too
            assert fresh("POST", url, auth=(record["client_id"], secret), data=FORM).status_code == 429
        samples = prometheus(env)["samples"]
        assert samples[("tollgate_lockouts_total", ())] == 1
        assert samples[("tollgate_token_refused_total", (("error", "invalid_client"),))] == 2
        assert samples[("tollgate_token_refused_total", (("error", "temporarily_unavailable"),))] == 3
        assert samples[("tollgate_tokens_issued_total", ())] == 0
    finally:
        env.stop()

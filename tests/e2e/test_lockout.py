"""Brute-force lockout at the token endpoint, end to end: a real Envoy with 2
workers, whose workers share the failure counters through proxy-wasm shared
data. A locked client id gets the same 429 + Retry-After with the right secret
as with a wrong one; locks double and expire; unknown client ids sprayed from
one address lock that address."""
import http.client
import re
import time
import urllib.request

import pytest
import requests

import harness

FORM = {"grant_type": "client_credentials"}


def worker_connections(gw) -> list[int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}/stats?filter=worker_.*downstream_cx_total",
                                timeout=5) as r:
        text = r.read().decode()
    return [int(n) for n in re.findall(rf"listener\.127\.0\.0\.1_{gw.port}\.worker_\d+\.downstream_cx_total: (\d+)",
                                       text)]


@pytest.fixture()
def profiles():
    return {"a": harness.new_profile(), "b": harness.new_profile()}


def start(upstream, profiles, lockout, hold=True):
    cfg = {"profiles": [p for p, _ in profiles.values()], "realm": "tollgate-test", "lockout": lockout}
    return harness.start_gateway(upstream, cfg, hold=hold)


def post(gw, client_id, secret, conn=None, close=True):
    """A body-credentials token request; on `conn` (keep-alive) if given."""
    body = f"grant_type=client_credentials&client_id={client_id}&client_secret={secret}"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if conn is not None:
        conn.request("POST", "/oauth2/token", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    if close:
        headers["connection"] = "close"
    r = requests.post(gw.url + "/oauth2/token", data=body, headers=headers)
    return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content


def assert_locked(status, headers, body):
    assert status == 429, body
    assert 1 <= int(headers["retry-after"]) <= 900
    assert headers["content-type"] == "application/json"
    assert b'"error":"temporarily_unavailable"' in body
    assert b"access_token" not in body


def test_ten_wrong_secrets_lock_out_every_secret_on_every_worker_then_expire(upstream, profiles):
    gw = start(upstream, profiles, {"max_failures": 10, "window_seconds": 60, "base_seconds": 2, "max_seconds": 4})
    try:
        (a, a_secret), (b, b_secret) = profiles["a"], profiles["b"]
        cid = a["client_id"]
        # Ten failures on one keep-alive connection: one worker counts them.
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        for _ in range(10):
            status, _, body = post(gw, cid, "wrong-" + a_secret, conn=conn)
            assert status == 401 and b"invalid_client" in body
        conn.close()
        before = worker_connections(gw)
        # New connections spread over both workers: every one refuses, the
        # right secret exactly like a wrong one.
        answers = []
        for i in range(12):
            wrong = post(gw, cid, "wrong-" + a_secret)
            right = post(gw, cid, a_secret)
            assert_locked(*wrong)
            assert_locked(*right)
            assert right[2] == wrong[2], "the same body: no oracle"
            answers.append(int(right[1]["retry-after"]))
        after = worker_connections(gw)
        assert len(after) == 2 and all(x > y for x, y in zip(after, before)), (before, after)
        r = requests.post(gw.url + "/oauth2/token", auth=(cid, a_secret), data=FORM)
        assert r.status_code == 429 and "www-authenticate" not in r.headers, "Basic too, and no challenge"
        # Another client is not affected.
        assert post(gw, b["client_id"], b_secret)[0] == 200

        # The lock expires (base 2 s): the right secret works again.
        harness.wait_for(lambda: post(gw, cid, a_secret)[0] == 200, 6, "the first lock to expire", interval=0.2)
        # The next lock doubles (4 s, the cap).
        for _ in range(10):
            assert post(gw, cid, "wrong")[0] == 401
        status, headers, body = post(gw, cid, a_secret)
        assert_locked(status, headers, body)
        assert int(headers["retry-after"]) >= 3, headers
        t0 = time.monotonic()
        harness.wait_for(lambda: post(gw, cid, a_secret)[0] == 200, 10, "the second lock to expire", interval=0.2)
        assert time.monotonic() - t0 >= 2.5, "the second lock lasted longer than the first"
        assert "locked out for 2 s" in gw.output() and "locked out for 4 s" in gw.output()
        assert a_secret not in gw.output()
    finally:
        gw.stop()


@pytest.mark.parametrize("hold", [True, False], ids=["hold", "fallback"])
def test_unknown_client_ids_from_one_address_lock_that_address(upstream, profiles, hold):
    gw = start(upstream, profiles, {"per_source_max_failures": 20, "base_seconds": 60}, hold=hold)
    try:
        (a, a_secret) = profiles["a"]
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        for i in range(20):
            status, _, _ = post(gw, f"sprayed-{i}-" + "x" * 2000, "guess", conn=conn)
            assert status == 401
        conn.close()
        # Every further unknown id from this address, on any worker: 429.
        for i in range(8):
            assert_locked(*post(gw, f"sprayed-again-{i}", "guess"))
        # A known client from the same address is judged by its own record.
        assert post(gw, a["client_id"], a_secret)[0] == 200
        assert post(gw, a["client_id"], "wrong")[0] == 401
    finally:
        gw.stop()


def test_lockout_can_be_turned_off(upstream, profiles):
    gw = start(upstream, profiles, {"enabled": False})
    try:
        (a, a_secret) = profiles["a"]
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        for i in range(40):
            assert post(gw, a["client_id"], "wrong", conn=conn)[0] == 401
            assert post(gw, f"unknown-{i}", "wrong", conn=conn)[0] == 401
        assert post(gw, a["client_id"], a_secret, conn=conn)[0] == 200
        conn.close()
    finally:
        gw.stop()


def test_invalid_lockout_config_is_refused_naming_the_field(upstream, profiles):
    # Envoy refuses the listener and exits; the harness's error carries its log.
    with pytest.raises(RuntimeError, match=r"lockout\.max_seconds: must be between base_seconds"):
        start(upstream, profiles, {"max_seconds": 10, "base_seconds": 60})

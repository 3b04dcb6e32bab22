"""The bearer guard, end to end, in a real Envoy with 2 workers."""
import time

import pytest
import requests

import harness


def get_token(gw, profiles, name="sales"):
    record, secret = profiles[name]
    r = requests.post(gw.url + "/oauth2/token", auth=(record["client_id"], secret),
                      data={"grant_type": "client_credentials"})
    r.raise_for_status()
    return r.json()["access_token"]


def bearer_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="tollgate-test"')
    if code:
        assert f'error="{code}"' in challenge and "error_description=" in challenge
        assert r.json()["error"] == code
    else:
        assert "error=" not in challenge, "RFC 6750 §3.1: no error code without credentials"
        assert "error" not in r.json(), "nor in the body"
    assert r.json()["error_description"]
    return r.json()


def test_valid_token_reaches_upstream_with_identity(gateway, static_profiles):
    token = get_token(gateway, static_profiles)
    record = static_profiles["sales"][0]
    for _ in range(8):  # new connections spread over both workers
        r = requests.get(gateway.url + "/sales/orders?email=john-doe%40acme.com",
                         headers={"authorization": f"Bearer {token}", "x-tollgate-client-id": "forged",
                                  "x-tollgate-profile-id": "forged", "connection": "close"})
        assert r.status_code == 200, r.text
        echo = r.json()
        assert echo["path"] == "/sales/orders?email=john-doe%40acme.com"
        assert echo["headers"]["x-tollgate-client-id"] == [record["client_id"]]
        assert echo["headers"]["x-tollgate-profile-id"] == [record["id"]]
        assert "authorization" not in echo["headers"]
    # A second allowed prefix of the same profile.
    assert requests.get(gateway.url + "/hr/reports/q1", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_missing_token(gateway):
    bearer_error(requests.get(gateway.url + "/sales/x"), 401, None)
    bearer_error(requests.get(gateway.url + "/sales/x", headers={"authorization": "Basic abc"}), 401, None)


def test_public_paths_need_no_token_but_lose_forged_identity(gateway):
    r = requests.get(gateway.url + "/public/info", headers={"x-tollgate-client-id": "forged"})
    assert r.status_code == 200
    assert "x-tollgate-client-id" not in r.json()["headers"]
    assert requests.get(gateway.url + "/healthz").status_code == 200
    # An exact public path is not a prefix.
    bearer_error(requests.get(gateway.url + "/healthz/deeper"), 401, None)


def test_outside_allowed_prefixes(gateway, static_profiles):
    token = get_token(gateway, static_profiles)
    for path in ("/hr/salaries", "/salesforce/x", "/", "/hr/reportsx"):
        bearer_error(requests.get(gateway.url + path, headers={"authorization": f"Bearer {token}"}), 403,
                     "insufficient_scope")


def test_dot_segments_do_not_escape_a_prefix(gateway, static_profiles):
    token = get_token(gateway, static_profiles)
    # Envoy normalises /sales/../hr/x to /hr/x before the filter sees it.
    r = requests.Request("GET", gateway.url + "/sales/../hr/salaries",
                         headers={"authorization": f"Bearer {token}"}).prepare()
    r.url = gateway.url + "/sales/../hr/salaries"
    with requests.Session() as s:
        resp = s.send(r)
    assert resp.status_code in (400, 403)
    assert resp.status_code != 200


def invalid(gateway, token, fragment=None):
    body = bearer_error(requests.get(gateway.url + "/sales/x", headers={"authorization": f"Bearer {token}"}), 401,
                        "invalid_token")
    if fragment:
        assert fragment in body["error_description"], body


def test_invalid_tokens(gateway, static_profiles):
    record = static_profiles["sales"][0]
    now = int(time.time())
    good_claims = {"sub": record["id"], "exp": now + 600, "nbf": now, "iat": now}
    hdr = {"alg": "HS256", "kid": record["kid"], "typ": "JWT"}
    invalid(gateway, "not-a-jwt", "malformed")
    invalid(gateway, "a.b", "malformed")
    invalid(gateway, harness.craft_token(None, {"alg": "none", "kid": record["kid"], "typ": "JWT"}, good_claims),
            "HS256")
    for alg in ("HS384", "HS512", "RS256", "ES256"):
        invalid(gateway, harness.craft_token(record["signing_key"], dict(hdr, alg=alg), good_claims), "HS256")
    invalid(gateway, harness.craft_token(record["signing_key"], dict(hdr, kid="00" * 32), good_claims), "unknown")
    invalid(gateway, harness.craft_token("11" * 32, hdr, good_claims), "signature")
    invalid(gateway, harness.craft_token(record["signing_key"], hdr, dict(good_claims, exp=now - 120, iat=now - 3720,
                                                                         nbf=now - 3720)), "expired")
    invalid(gateway, harness.craft_token(record["signing_key"], hdr, dict(good_claims, nbf=now + 600, iat=now + 600,
                                                                         exp=now + 4200)), "not valid yet")
    # A token of one profile re-labelled with another profile's subject.
    other = static_profiles["hr"][0]
    invalid(gateway, harness.craft_token(record["signing_key"], hdr, dict(good_claims, sub=other["id"])), "subject")
    # Tampered payload with the original signature.
    token = get_token(gateway, static_profiles)
    h, c, s = token.split(".")
    forged = harness.b64url(harness.b64url_decode(c).replace(b'"exp":', b'"exp":9'))
    invalid(gateway, f"{h}.{forged}.{s}", "signature")


def test_leeway_accepts_small_skew(gateway, static_profiles):
    record = static_profiles["sales"][0]
    now = int(time.time())
    hdr = {"alg": "HS256", "kid": record["kid"], "typ": "JWT"}
    t = harness.craft_token(record["signing_key"], hdr, {"sub": record["id"], "exp": now + 600, "nbf": now + 10,
                                                         "iat": now + 10})
    assert requests.get(gateway.url + "/sales/x", headers={"authorization": f"Bearer {t}"}).status_code == 200


def test_disabled_profile_tokens_fail(gateway, static_profiles):
    record = static_profiles["off"][0]
    now = int(time.time())
    t = harness.craft_token(record["signing_key"], {"alg": "HS256", "kid": record["kid"], "typ": "JWT"},
                            {"sub": record["id"], "exp": now + 600, "nbf": now, "iat": now})
    invalid(gateway, t, "revoked")


def test_keep_authorization_option(upstream, static_profiles):
    from conftest import plugin_config
    gw = harness.start_gateway(upstream, plugin_config(static_profiles, keep_authorization=True,
                                                       identity_headers={"client_id": "x-client",
                                                                         "profile_id": "x-profile"}),
                               concurrency=1)
    try:
        token = get_token(gw, static_profiles)
        echo = requests.get(gw.url + "/sales/x", headers={"authorization": f"Bearer {token}"}).json()
        assert echo["headers"]["authorization"] == [f"Bearer {token}"]
        assert echo["headers"]["x-client"] == [static_profiles["sales"][0]["client_id"]]
        assert "x-tollgate-client-id" not in echo["headers"]
    finally:
        gw.stop()


@pytest.mark.parametrize("bad, field", [
    ({"token_path": "oauth"}, "token_path"),
    ({"tokn_path": "/x"}, "tokn_path"),
    ({"profiles": [{"id": "nothex"}]}, "profiles"),
    ({"token_lifetime_seconds": 1}, "token_lifetime_seconds"),
])
def test_invalid_config_is_refused_with_the_field_named(upstream, bad, field, tmp_path):
    import json
    import subprocess
    cfg = harness.render.gateway(port=harness.free_port(), admin_port=harness.free_port(), upstream_port=upstream.port,
                                 wasm_path=harness.WASM, plugin_config=dict({"profiles": []}, **bad))
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    out = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert "invalid tollgate configuration" in log and field in log, log[-2000:]

"""RFC 8414 metadata at /.well-known/oauth-authorization-server, answered by
the filter in a real Envoy (2 workers): the issuer comes from the configured
list, selected by :authority, never from the Host header itself; discovery
never reaches the upstream; a real OAuth client library (authlib) finds the
token endpoint there and uses it."""
import json
import subprocess

import pytest
import requests

import harness

WELL_KNOWN = "/.well-known/oauth-authorization-server"
ISSUERS = ["https://api.example.com", "https://eu.api.example.com:8443", "http://legacy.example.com"]


@pytest.fixture(scope="module")
def gw(upstream, static_profiles):
    port = harness.free_port()
    issuers = [f"http://127.0.0.1:{port}"] + ISSUERS
    env = harness.start_gateway(upstream, {"profiles": [p for p, _ in static_profiles.values()],
                                           "realm": "tollgate-test", "issuers": issuers}, port=port)
    env.local_issuer = issuers[0]
    yield env
    env.stop()


def get(gw, path=WELL_KNOWN, host=None, method="GET", **headers):
    if host is not None:
        headers["host"] = host
    return requests.request(method, gw.url + path, headers={**headers, "connection": "close"}, timeout=10)


def test_metadata_document_per_configured_host(gw):
    for _ in range(4):  # both workers
        r = get(gw, host="api.example.com")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {
            "issuer": "https://api.example.com",
            "token_endpoint": "https://api.example.com/oauth2/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": [],
        }
    # Host compared without case; the port explicit or the scheme's default.
    assert get(gw, host="API.Example.COM:443").json()["issuer"] == "https://api.example.com"
    assert get(gw, host="eu.api.example.com:8443").json()["token_endpoint"] == \
        "https://eu.api.example.com:8443/oauth2/token"
    assert get(gw, host="legacy.example.com:80").json()["issuer"] == "http://legacy.example.com"
    assert get(gw, WELL_KNOWN + "?ignored=1", host="api.example.com").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "api.example.com:8443", "eu.api.example.com",
                                  "api.example.com.", "x.api.example.com"])
def test_unconfigured_host_gets_json_404(gw, host):
    r = get(gw, host=host)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "not_found"
    assert "example" not in r.text, "nothing of the request is echoed"


def test_forwarded_host_headers_are_not_trusted(gw):
    r = get(gw, host="evil.example", **{"x-forwarded-host": "api.example.com", "forwarded": "host=api.example.com"})
    assert r.status_code == 404


def test_openid_configuration_is_a_json_404(gw):
    for path in ("/.well-known/openid-configuration", "/.well-known/openid-configuration/x",
                 WELL_KNOWN + "/tenant"):
        r = get(gw, path, host="api.example.com")
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/json"
        assert json.loads(r.text)["error"] == "not_found"


def test_head_and_other_methods(gw):
    full = get(gw, host="api.example.com")
    r = get(gw, host="api.example.com", method="HEAD")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(full.content))
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        r = get(gw, host="api.example.com", method=method)
        assert r.status_code == 405, method
        assert r.headers["allow"] == "GET, HEAD"
        assert r.json()["error"] == "invalid_request"


def test_discovery_is_public_and_never_routed(gw, upstream):
    before = len(upstream.received())
    # No token needed, and a bad one does not turn it into a 401.
    assert get(gw, host="api.example.com", authorization="Bearer x.y.z").status_code == 200
    assert get(gw, "/.well-known/openid-configuration").status_code == 404
    assert not any("/.well-known/" in r["path"] for r in upstream.received()[before:])
    # Elsewhere under /.well-known/ the guard is still in charge.
    assert get(gw, "/.well-known/other").status_code == 401


def test_authlib_discovers_and_uses_the_token_endpoint(gw, static_profiles, monkeypatch):
    """authlib builds the RFC 8414 §3 URL from the issuer, reads the metadata
    with its RFC 8414 model, then gets a token with each advertised client
    authentication method and calls the API with it."""
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata, get_well_known_url

    # authlib insists on https; these tests talk to Envoy on loopback.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    issuer = gw.local_issuer
    with OAuth2Session() as s:
        # As authlib's own load_server_metadata() fetches it.
        url = get_well_known_url(issuer, external=True)
        meta = AuthorizationServerMetadata(s.request("GET", url, withhold_token=True, timeout=10).json())
    meta.validate_issuer()
    meta.validate_token_endpoint()
    meta.validate_grant_types_supported()
    meta.validate_token_endpoint_auth_methods_supported()
    meta.validate_authorization_endpoint()  # not required: no grant type uses it
    assert meta["issuer"] == issuer
    assert meta.grant_types_supported == ["client_credentials"]

    record, secret = static_profiles["sales"]
    for method in meta.token_endpoint_auth_methods_supported:
        with OAuth2Session(record["client_id"], secret, token_endpoint_auth_method=method) as client:
            token = client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
            assert token["token_type"] == "bearer" and token["expires_in"] == 3600
            r = client.get(gw.url + "/sales/orders", timeout=10)
            assert r.status_code == 200, (method, r.text)
            assert r.json()["headers"]["x-tollgate-client-id"] == [record["client_id"]]


@pytest.mark.parametrize("issuers, field", [
    (["api.example.com"], "issuers[0]"),
    (["https://api.example.com", "https://api.example.com/tenant"], "issuers[1]"),
    (["https://api.example.com", "https://API.example.com:443"], "issuers[1]"),
    ("https://api.example.com", "issuers"),
])
def test_invalid_issuers_are_refused_with_the_field_named(upstream, issuers, field, tmp_path):
    cfg = harness.render.gateway(port=harness.free_port(), admin_port=harness.free_port(), upstream_port=upstream.port,
                                 wasm_path=harness.WASM, plugin_config={"profiles": [], "issuers": issuers})
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    out = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert f"invalid tollgate configuration: {field}:" in log, log[-2000:]

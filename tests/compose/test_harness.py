"""The docker-compose harness, driven from the host through its published
127.0.0.1 ports only: the four token shapes in each region, the guard, the
cross-region refusal, the custom domain, and a rotation done with the CLI
inside the sidecar container."""
import json
import subprocess

import harness
import pytest
import requests

SHAPES = ["basic", "json", "form", "multipart"]


def token_request(client: dict, shape: str, *, host: str | None = None, secret: str | None = None,
                  base_url: str | None = None) -> requests.Response:
    cid, sec = client["client_id"], secret or client["client_secret"]
    url = (base_url or client["base_url"]) + "/oauth2/token"
    headers = {"Host": host or client["hosts"][0]}
    grant = {"grant_type": "client_credentials"}
    if shape == "basic":
        return requests.post(url, data=grant, auth=(cid, sec), headers=headers, timeout=10)
    creds = {**grant, "client_id": cid, "client_secret": sec}
    if shape == "json":
        return requests.post(url, json=creds, headers=headers, timeout=10)
    if shape == "form":
        return requests.post(url, data=creds, headers=headers, timeout=10)
    return requests.post(url, files={k: (None, v) for k, v in creds.items()}, headers=headers, timeout=10)


def mint(client: dict, **kw) -> str:
    r = token_request(client, "basic", **kw)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def call(client: dict, path: str, token: str | None, *, host: str | None = None,
         base_url: str | None = None) -> requests.Response:
    headers = {"Host": host or client["hosts"][0]}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get((base_url or client["base_url"]) + path, headers=headers, timeout=10)


def test_clients_file_describes_each_region(compose):
    written = json.loads(compose.clients_path.read_text())
    assert set(written) == {"us", "eu"}
    assert written["us"]["hosts"] == ["us.api.tollgate.test", "api.example.test"]
    assert written["eu"]["hosts"] == ["eu.api.tollgate.test"]
    for region, c in written.items():
        assert c["base_url"] == f"http://127.0.0.1:{compose.ports[region][0]}"
        assert c["token_url"] == c["base_url"] + "/oauth2/token"
        assert len(c["client_id"]) == 32 and len(c["client_secret"]) == 43
    assert compose.clients_path.stat().st_mode & 0o077 == 0


def test_only_loopback_is_published(compose):
    ids = compose.containers()
    assert len(ids) == 6
    out = subprocess.run(["docker", "inspect", "-f", "{{.Name}} {{json .NetworkSettings.Ports}}", *ids],
                         capture_output=True, text=True, check=True).stdout
    published = 0
    for line in out.splitlines():
        name, ports = line.split(" ", 1)
        for bindings in (json.loads(ports) or {}).values():
            for b in bindings or []:
                assert b["HostIp"] == "127.0.0.1", (name, b)
                published += 1
        if "upstream" in name:
            assert all(not b for b in (json.loads(ports) or {}).values()), name
    assert published == 6  # per region: Envoy, its admin, the sidecar API


@pytest.mark.parametrize("region", ["us", "eu"])
@pytest.mark.parametrize("shape", SHAPES)
def test_token_shapes(compose, region, shape):
    client = compose.clients[region]
    r = token_request(client, shape)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["token_type"], body["expires_in"]) == ("bearer", 3600)
    header, claims = harness.decode_jwt(body["access_token"])
    assert json.loads(header) == {"alg": "HS256", "kid": client["kid"], "typ": "JWT"}
    assert claims["exp"] == claims["iat"] + 3600


@pytest.mark.parametrize("region", ["us", "eu"])
def test_guard(compose, region):
    client = compose.clients[region]
    r = call(client, "/demo/hello", None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith(f'Bearer realm="tollgate-{region}"')
    token = mint(client)
    r = call(client, "/demo/hello", token)
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["path"] == "/demo/hello"
    assert echo["headers"]["x-tollgate-client-id"] == [client["client_id"]]
    assert "authorization" not in echo["headers"]
    r = call(client, "/billing/invoices", token)
    assert (r.status_code, r.json()["error"]) == (403, "insufficient_scope")
    assert call(client, "/demo/public/status", None).status_code == 200


def test_cross_region_tokens_are_refused(compose):
    us, eu = compose.clients["us"], compose.clients["eu"]
    for minted_in, presented_to in ((us, eu), (eu, us)):
        r = call(presented_to, "/demo/hello", mint(minted_in))
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # and a region's credentials mean nothing in the other one
    r = token_request(us, "basic", base_url=eu["base_url"], host=eu["hosts"][0])
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")


def curl_resolve(host: str, port: int, *args: str) -> tuple[int, str]:
    """curl as the README shows it: the public name pinned to 127.0.0.1."""
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--resolve", f"{host}:{port}:127.0.0.1", *args],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    body, status = out.rsplit("\n", 1)
    return int(status), body


def test_custom_domain_is_served_by_us_only(compose):
    us, eu = compose.clients["us"], compose.clients["eu"]
    custom = "api.example.test"
    us_port, eu_port = compose.ports["us"][0], compose.ports["eu"][0]
    status, body = curl_resolve(custom, us_port, "-u", f"{us['client_id']}:{us['client_secret']}",
                                "-d", "grant_type=client_credentials", f"http://{custom}:{us_port}/oauth2/token")
    assert status == 200, body
    from_custom = json.loads(body)["access_token"]
    # one region, one key: tokens cross between its regional host and its custom domain
    status, body = curl_resolve(custom, us_port, "-H", f"Authorization: Bearer {mint(us)}",
                                f"http://{custom}:{us_port}/demo/hello")
    assert status == 200, body
    assert json.loads(body)["headers"]["host"] == [custom]
    assert call(us, "/demo/hello", from_custom).status_code == 200
    # eu does not serve the custom domain: no token, no route, whatever the credentials
    status, body = curl_resolve(custom, eu_port, "-u", f"{eu['client_id']}:{eu['client_secret']}",
                                "-d", "grant_type=client_credentials", f"http://{custom}:{eu_port}/oauth2/token")
    assert (status, json.loads(body)) == (404, {"error": "unknown_host"})
    # nor does us answer for eu's host, or for a name nobody configured
    for host in ("eu.api.tollgate.test", "evil.example"):
        r = token_request(us, "basic", host=host)
        assert (r.status_code, r.json()) == (404, {"error": "unknown_host"}), host


def test_discovery_names_each_region_by_its_own_hosts(compose):
    """RFC 8414 metadata in the harness: each served name is its own issuer,
    never taken from a Host the region does not serve."""
    for region, client in compose.clients.items():
        for host in client["hosts"]:
            r = call(client, "/.well-known/oauth-authorization-server", None, host=host)
            assert r.status_code == 200, (region, host, r.text)
            meta = r.json()
            assert meta["issuer"] == f"https://{host}"
            assert meta["token_endpoint"] == f"https://{host}/oauth2/token"
            assert meta["grant_types_supported"] == ["client_credentials"]
        # the loopback names reach the region but are no issuer of it
        r = call(client, "/.well-known/oauth-authorization-server", None, host="127.0.0.1")
        assert (r.status_code, r.headers["content-type"]) == (404, "application/json"), r.text
        r = call(client, "/.well-known/openid-configuration", None)
        assert (r.status_code, r.headers["content-type"]) == (404, "application/json"), r.text


def test_rotation_with_the_cli_inside_the_sidecar_container(compose):
    created = compose.cli("us", "create", "--name", "rotation", "--allow", "/demo/")
    client = {**compose.clients["us"], "client_id": created["client_id"], "client_secret": created["client_secret"]}
    old_secret = created["client_secret"]
    token = harness.wait_for(lambda: token_request(client, "form").status_code == 200 and mint(client), 30,
                             "the new profile to reach Envoy")
    assert call(client, "/demo/hello", token).status_code == 200

    rotated = compose.cli("us", "rotate", created["client_id"])
    assert rotated["client_secret"] != old_secret

    def old_token_refused():
        r = call(client, "/demo/hello", token)
        return r.status_code == 401 and r.json()["error"] == "invalid_token"
    harness.wait_for(old_token_refused, 30, "the rotation to reach Envoy")
    r = token_request(client, "json", secret=old_secret)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    new_token = mint(client, secret=rotated["client_secret"])
    assert call(client, "/demo/hello", new_token).status_code == 200
    # the other region never heard of it
    assert call(compose.clients["eu"], "/demo/hello", new_token).status_code == 401


def test_sidecar_admin_api_on_loopback(compose):
    token = compose.exec("us-sidecar", "cat", "/var/lib/tollgate/admin-token").stdout.strip()
    us = compose.clients["us"]
    r = requests.get(us["sidecar_url"] + "/admin/v1/profiles", headers={"Authorization": f"Bearer {token}"},
                     timeout=10)
    assert r.status_code == 200
    assert us["client_id"] in {p["client_id"] for p in r.json()["profiles"]}
    assert requests.get(us["sidecar_url"] + "/admin/v1/profiles", timeout=10).status_code == 401


def test_up_again_keeps_or_repairs_the_demo_clients(compose):
    """`up` on a running stack keeps each demo client; one rotated behind its
    back (here with the CLI) is rotated again so the recorded secret works."""
    before = compose.clients
    compose.cli("eu", "rotate", before["eu"]["client_id"])
    after = compose.up(compose.clients_path)
    compose.clients = after  # later tests use the repaired credentials
    assert after["us"] == before["us"]
    assert after["eu"]["client_id"] == before["eu"]["client_id"]
    assert after["eu"]["client_secret"] != before["eu"]["client_secret"]
    assert json.loads(compose.clients_path.read_text()) == after
    for region in ("us", "eu"):
        assert call(after[region], "/demo/hello", mint(after[region])).status_code == 200

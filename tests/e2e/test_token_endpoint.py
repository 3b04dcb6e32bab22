"""The token endpoint, end to end: a real Envoy (2 workers) running the built
filter, driven by real clients (Python requests, curl, Node's fetch/FormData,
raw sockets for the documentation's literal examples)."""
import base64
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse

import pytest
import requests

import harness

FORM = "application/x-www-form-urlencoded"


def token_url(gw):
    return gw.url + "/oauth2/token"


def creds(static_profiles, name="sales"):
    record, secret = static_profiles[name]
    return record["client_id"], secret


def assert_token_response(r, record, lifetime=3600):
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == lifetime
    header, claims = harness.decode_jwt(body["access_token"])
    assert header == ('{"alg":"HS256","kid":"%s","typ":"JWT"}' % record["kid"]).encode()
    assert re.fullmatch(r"[0-9a-f]{64}", claims["sub"]) and claims["sub"] == record["id"]
    assert claims["exp"] == claims["iat"] + lifetime
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 30
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    return body["access_token"]


def raw_http(gw, request: bytes) -> tuple[int, dict, bytes]:
    """Sends bytes as they are (the documentation's examples) and reads one response."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


def doc_request(body: str, content_type: str, extra_headers: str = "") -> bytes:
    """The documentation's request shape: `Host: apim.workato.com`, LF inside the body."""
    raw = body.encode()
    return (f"POST /oauth2/token HTTP/1.1\r\nHost: apim.workato.com\r\n{extra_headers}"
            f"Content-Type: {content_type}\r\nContent-Length: {len(raw)}\r\nConnection: close\r\n\r\n").encode() + raw


class TestFourShapes:
    def test_basic_header_with_form_body(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        r = requests.post(token_url(gateway), auth=(cid, secret), data={"grant_type": "client_credentials"})
        assert_token_response(r, static_profiles["sales"][0])

    def test_json_body(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        r = requests.post(token_url(gateway), json={"grant_type": "client_credentials", "client_id": cid,
                                                     "client_secret": secret})
        assert_token_response(r, static_profiles["sales"][0])

    def test_urlencoded_body(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        r = requests.post(token_url(gateway), data={"client_secret": secret, "client_id": cid,
                                                     "grant_type": "client_credentials"})
        assert_token_response(r, static_profiles["sales"][0])

    def test_multipart_requests(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        r = requests.post(token_url(gateway), files={"grant_type": (None, "client_credentials"),
                                                      "client_id": (None, cid), "client_secret": (None, secret)})
        assert r.request.headers["content-type"].startswith("multipart/form-data; boundary=")
        assert_token_response(r, static_profiles["sales"][0])

    def test_each_request_mints_a_new_token(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        tokens = {requests.post(token_url(gateway), auth=(cid, secret),
                                data={"grant_type": "client_credentials"}).json()["access_token"] for _ in range(6)}
        assert len(tokens) == 6, "same-second requests still get different tokens (jti)"


class TestDocumentationExamples:
    """The literal request examples from the product documentation."""

    def test_basic(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        b64 = base64.b64encode(f"{cid}:{secret}".encode()).decode()
        status, headers, body = raw_http(gateway, doc_request("grant_type=client_credentials", FORM,
                                                              f"Authorization: Basic {b64}\r\n"))
        assert status == 200, body
        assert json.loads(body)["token_type"] == "bearer"

    def test_json(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        body = '{\n  "grant_type": "client_credentials",\n  "client_id": "%s",\n  "client_secret": "%s"\n}' % (cid, secret)
        status, _, resp = raw_http(gateway, doc_request(body, "application/json"))
        assert status == 200, resp

    def test_urlencoded(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        body = f"client_secret={secret}&client_id={cid}&grant_type=client_credentials"
        status, _, resp = raw_http(gateway, doc_request(body, FORM))
        assert status == 200, resp

    def test_multipart_as_documented(self, gateway, static_profiles):
        # Bare boundary lines, no closing "--", LF line endings: verbatim shape.
        cid, secret = creds(static_profiles)
        b = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
        body = (f"{b}\nContent-Disposition: form-data; name=\"grant_type\"\n\nclient_credentials\n"
                f"{b}\nContent-Disposition: form-data; name=\"client_id\"\n\n{cid}\n"
                f"{b}\nContent-Disposition: form-data; name=\"client_secret\"\n\n{secret}\n{b}")
        status, _, resp = raw_http(gateway, doc_request(body, f"multipart/form-data; boundary={b}"))
        assert status == 200, resp
        header, claims = harness.decode_jwt(json.loads(resp)["access_token"])
        assert claims["sub"] == static_profiles["sales"][0]["id"]


class TestRealClients:
    def test_curl_basic_and_form(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        out = subprocess.run(["curl", "-sS", "-u", f"{cid}:{secret}", "-d", "grant_type=client_credentials",
                              token_url(gateway)], capture_output=True, text=True, check=True).stdout
        assert json.loads(out)["expires_in"] == 3600

    def test_curl_multipart(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        out = subprocess.run(["curl", "-sS", "-F", "grant_type=client_credentials", "-F", f"client_id={cid}",
                              "-F", f"client_secret={secret}", token_url(gateway)],
                             capture_output=True, text=True, check=True).stdout
        assert json.loads(out)["token_type"] == "bearer"

    @pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
    def test_node_formdata(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        script = """
const [url, id, secret] = process.argv.slice(1);
const fd = new FormData();
fd.append('grant_type', 'client_credentials'); fd.append('client_id', id); fd.append('client_secret', secret);
fetch(url, {method: 'POST', body: fd}).then(async r => { console.log(JSON.stringify({status: r.status, body: await r.json()})); });
"""
        out = subprocess.run(["node", "-e", script, token_url(gateway), cid, secret],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        result = json.loads(out)
        assert result["status"] == 200 and result["body"]["token_type"] == "bearer"

    def test_basic_parts_are_form_urlencoded(self, gateway, upstream):
        # RFC 6749 §2.3.1: a client id with ':' and a secret with '%' and '+'.
        record, _ = harness.new_profile()
        secret = "p%+:s&ec"
        # This profile lives only in a dedicated gateway with its odd client id.
        record["client_id"] = "id:with+plus%"
        record["client_secret_sha256"] = __import__("hashlib").sha256(secret.encode()).hexdigest()
        gw = harness.start_gateway(upstream, {"profiles": [record]}, concurrency=1)
        try:
            user = urllib.parse.quote_plus(record["client_id"])
            pw = urllib.parse.quote_plus(secret)
            r = requests.post(gw.url + "/oauth2/token", auth=(user, pw), data={"grant_type": "client_credentials"})
            assert_token_response(r, record)
        finally:
            gw.stop()


def error_of(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["error"] == code, body
    assert body["error_description"]
    assert "access_token" not in body
    return body


class TestErrors:
    def test_wrong_method(self, gateway):
        for method in ("GET", "PUT", "DELETE"):
            r = requests.request(method, token_url(gateway))
            error_of(r, 405, "invalid_request")
            assert r.headers["allow"] == "POST"

    def test_content_type_required_and_matching(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        form = f"grant_type=client_credentials&client_id={cid}&client_secret={secret}"
        js = json.dumps({"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
        cases = [
            ({}, form),  # missing Content-Type
            ({"content-type": "text/plain"}, form),
            ({"content-type": "application/json"}, form),
            ({"content-type": FORM}, js),
            ({"content-type": "multipart/form-data"}, form),
            ({"content-type": "multipart/form-data; boundary=abc"}, form),
            ({"content-type": "application/json; charset=latin1"}, js),
        ]
        for headers, body in cases:
            r = requests.post(token_url(gateway), headers=headers, data=body.encode())
            error_of(r, 400, "invalid_request")

    def test_charset_parameter_allowed(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        js = json.dumps({"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
        r = requests.post(token_url(gateway), headers={"content-type": "application/json; charset=utf-8"}, data=js)
        assert r.status_code == 200

    def test_malformed_bodies(self, gateway):
        for ct, body in [("application/json", '{"grant_type": '), ("application/json", '["x"]'),
                         (FORM, "grant_type=%zz"), ("multipart/form-data; boundary=XX", "--XX\r\nnope\r\n")]:
            error_of(requests.post(token_url(gateway), headers={"content-type": ct}, data=body), 400, "invalid_request")

    def test_duplicated_parameter(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        body = f"grant_type=client_credentials&client_id={cid}&client_secret={secret}&client_id={cid}"
        error_of(requests.post(token_url(gateway), headers={"content-type": FORM}, data=body), 400, "invalid_request")
        js = '{"grant_type":"client_credentials","grant_type":"client_credentials","client_id":"%s","client_secret":"%s"}' % (cid, secret)
        error_of(requests.post(token_url(gateway), headers={"content-type": "application/json"}, data=js), 400,
                 "invalid_request")

    def test_credentials_in_query(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        r = requests.post(token_url(gateway) + f"?client_id={cid}&client_secret={secret}",
                          data={"grant_type": "client_credentials"})
        error_of(r, 400, "invalid_request")

    def test_two_authentication_methods(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        r = requests.post(token_url(gateway), auth=(cid, secret),
                          data={"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
        error_of(r, 400, "invalid_request")

    def test_body_over_limit(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        big = {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret, "pad": "x" * 5000}
        error_of(requests.post(token_url(gateway), data=big), 413, "invalid_request")

        def chunks():  # no Content-Length: the limit applies while buffering
            yield b"grant_type=client_credentials&pad="
            for _ in range(10):
                yield b"y" * 1000
        error_of(requests.post(token_url(gateway), headers={"content-type": FORM}, data=chunks()), 413,
                 "invalid_request")

    def test_grant_type(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        error_of(requests.post(token_url(gateway), data={"client_id": cid, "client_secret": secret}), 400,
                 "invalid_request")
        error_of(requests.post(token_url(gateway), data={"grant_type": "password", "client_id": cid,
                                                         "client_secret": secret}), 400, "unsupported_grant_type")

    def test_client_authentication_failures(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        off_id, off_secret = creds(static_profiles, "off")
        cases = [
            {"grant_type": "client_credentials"},
            {"grant_type": "client_credentials", "client_id": cid},
            {"grant_type": "client_credentials", "client_id": "unknown", "client_secret": secret},
            {"grant_type": "client_credentials", "client_id": cid, "client_secret": secret + "x"},
            {"grant_type": "client_credentials", "client_id": off_id, "client_secret": off_secret},
        ]
        for data in cases:
            r = requests.post(token_url(gateway), data=data)
            error_of(r, 401, "invalid_client")
            assert "www-authenticate" not in r.headers

    def test_basic_failures_get_a_basic_challenge(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        off_id, off_secret = creds(static_profiles, "off")
        for user, pw in [(cid, "wrong"), ("unknown", secret), (off_id, off_secret)]:
            r = requests.post(token_url(gateway), auth=(user, pw), data={"grant_type": "client_credentials"})
            error_of(r, 401, "invalid_client")
            assert r.headers["www-authenticate"] == 'Basic realm="tollgate-test"'

    def test_malformed_basic(self, gateway):
        r = requests.post(token_url(gateway), headers={"authorization": "Basic %%%"},
                          data={"grant_type": "client_credentials"})
        error_of(r, 400, "invalid_request")


def test_token_requests_never_reach_the_upstream(gateway, static_profiles, upstream):
    cid, secret = creds(static_profiles)
    requests.post(token_url(gateway), auth=(cid, secret), data={"grant_type": "client_credentials"}).raise_for_status()
    requests.post(token_url(gateway), data={"grant_type": "nope"})
    requests.get(token_url(gateway))
    seen = upstream.received()
    assert not [r for r in seen if r["path"].startswith("/oauth2/token")]
    assert not [r for r in seen if secret in json.dumps(r)]
    sink = gateway.stat("http.tollgate_token_sink.downstream_rq_completed")
    if gateway.mode == "hold":
        assert sink == 0, "held headers never leave the filter"


def test_no_secret_or_token_in_logs(gateway, static_profiles):
    cid, secret = creds(static_profiles)
    token = requests.post(token_url(gateway), auth=(cid, secret),
                          data={"grant_type": "client_credentials"}).json()["access_token"]
    requests.get(gateway.url + "/sales/x", headers={"authorization": f"Bearer {token}"})
    requests.post(token_url(gateway), data={"grant_type": "client_credentials", "client_id": cid,
                                            "client_secret": "wrong-" + secret})
    log = gateway.output()
    assert "token refused: 401 invalid_client" in log, "debug logging is on, so refusals are logged"
    for needle in (secret, token, token.split(".")[2], static_profiles["sales"][0]["signing_key"]):
        assert needle not in log


class TestOAuthClientLibrary:
    """oauthlib / requests-oauthlib, a widely used OAuth 2.0 client library,
    doing the client-credentials grant and calling the API, as an
    application would."""

    def session(self, static_profiles, **kw):
        import os
        # oauthlib insists on https; these tests talk to Envoy on loopback.
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        from oauthlib.oauth2 import BackendApplicationClient
        from requests_oauthlib import OAuth2Session
        cid, _ = creds(static_profiles)
        return OAuth2Session(client=BackendApplicationClient(client_id=cid), **kw)

    def test_basic_auth_default(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        s = self.session(static_profiles)
        token = s.fetch_token(token_url=token_url(gateway), client_id=cid, client_secret=secret)
        assert token["token_type"] == "bearer" and token["expires_in"] == 3600
        r = s.get(gateway.url + "/sales/report")
        assert r.status_code == 200 and r.json()["headers"]["x-tollgate-client-id"] == [cid]

    def test_credentials_in_body(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        s = self.session(static_profiles)
        token = s.fetch_token(token_url=token_url(gateway), client_id=cid, client_secret=secret,
                              include_client_id=True)
        assert harness.decode_jwt(token["access_token"])[1]["sub"] == static_profiles["sales"][0]["id"]

    def test_wrong_secret_raises_invalid_client(self, gateway, static_profiles):
        from oauthlib.oauth2.rfc6749.errors import InvalidClientError
        cid, secret = creds(static_profiles)
        with pytest.raises(InvalidClientError):
            self.session(static_profiles).fetch_token(token_url=token_url(gateway), client_id=cid,
                                                      client_secret=secret + "x")

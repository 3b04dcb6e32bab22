"""Issue 6's defects, end to end against the real Envoy, in both token-body
modes: trailers ending a token request (HTTP/2 and chunked HTTP/1.1),
look-alike identity headers, the bearer token on public paths, multipart
with two possible readings."""
import json
import socket

import h2.config
import h2.connection
import h2.events
import pytest
import requests

import harness
from conftest import plugin_config

FORM = "application/x-www-form-urlencoded"
SINK_UPSTREAM = "cluster.tollgate_token_sink.upstream_rq_total"
SINK_ANSWERED = "http.tollgate_token_sink.downstream_rq_completed"


def creds(static_profiles, name="sales"):
    record, secret = static_profiles[name]
    return record["client_id"], secret


def form_body(static_profiles) -> bytes:
    cid, secret = creds(static_profiles)
    return f"grant_type=client_credentials&client_id={cid}&client_secret={secret}".encode()


def h2_request(port: int, headers: list, data: bytes, trailers: list) -> tuple[int, dict, bytes]:
    """HTTP/2 with prior knowledge (h2c) over a raw socket: HEADERS without
    END_STREAM, DATA without END_STREAM, trailers HEADERS with END_STREAM."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=False)
        if data:
            conn.send_data(sid, data, end_stream=False)
        conn.send_headers(sid, trailers, end_stream=True)
        s.sendall(conn.data_to_send())
        status, resp_headers, body = None, {}, b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            ended = False
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    resp_headers = dict(ev.headers)
                    status = int(resp_headers[":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                    ended = True
            s.sendall(conn.data_to_send())
            if ended:
                break
        return status, resp_headers, body


def chunked_with_trailers(port: int, content_type: str, body: bytes) -> tuple[int, bytes]:
    """HTTP/1.1, chunked, with a trailer section, over a raw socket."""
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]) if c)
    raw = (b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + content_type.encode() +
           b"\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\nConnection: close\r\n\r\n" +
           chunks + b"0\r\nx-checksum: abc\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


def h2_token_headers(port: int, content_type: str) -> list:
    return [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
            (":path", "/oauth2/token"), ("content-type", content_type)]


def sink_counts(gw) -> tuple[int, int]:
    return gw.stat(SINK_UPSTREAM), gw.stat(SINK_ANSWERED)


def assert_sink_untouched(gw, before):
    upstream, answered = sink_counts(gw)
    # The sink never answers (it would say 404); with held headers nothing
    # even reaches it. Without, the headers go there by design (no
    # credentials among them) and the local answer resets that request.
    assert answered == before[1], "the token sink answered a token request"
    if gw.mode == "hold":
        assert upstream == before[0], "a held token request reached the sink route"


@pytest.fixture(scope="module", params=["hold", "fallback"])
def permissive(request, upstream, static_profiles):
    """A gateway whose Envoy lets underscores and HTTP/1.1 trailers through:
    what the filter must withstand on its own (Istio's defaults allow
    underscores)."""
    env = harness.start_gateway(upstream, plugin_config(static_profiles), hold=request.param == "hold",
                                underscores="ALLOW", http1_trailers=True)
    env.mode = request.param
    yield env
    env.stop()


class TestTrailersEndTheTokenRequest:
    def test_http2_valid_body(self, gateway, static_profiles):
        before = sink_counts(gateway)
        status, headers, body = h2_request(gateway.port, h2_token_headers(gateway.port, FORM),
                                           form_body(static_profiles), [("x-checksum", "abc")])
        assert status == 200, body
        assert json.loads(body)["token_type"] == "bearer"
        assert headers["cache-control"] == "no-store"
        assert_sink_untouched(gateway, before)

    def test_http2_invalid_body(self, gateway):
        before = sink_counts(gateway)
        status, _, body = h2_request(gateway.port, h2_token_headers(gateway.port, "application/json"), b"{",
                                     [("x-checksum", "abc")])
        assert status == 400, body
        assert json.loads(body)["error"] == "invalid_request"
        assert_sink_untouched(gateway, before)

    def test_http2_no_body_only_trailers(self, gateway):
        before = sink_counts(gateway)
        status, _, body = h2_request(gateway.port, h2_token_headers(gateway.port, FORM), b"",
                                     [("x-checksum", "abc")])
        assert status == 400, body
        assert json.loads(body)["error"] == "invalid_request"
        assert_sink_untouched(gateway, before)

    def test_http1_chunked_with_trailers(self, gateway, static_profiles):
        # Shipped configs leave HTTP/1.1 trailers off: Envoy drops them and
        # ends the body with the last chunk.
        self.chunked(gateway, static_profiles)

    def test_http1_chunked_with_trailers_reaching_the_filter(self, permissive, static_profiles):
        self.chunked(permissive, static_profiles)

    def chunked(self, gw, static_profiles):
        before = sink_counts(gw)
        status, body = chunked_with_trailers(gw.port, FORM, form_body(static_profiles))
        assert status == 200, body
        assert b'"token_type":"bearer"' in body
        status, body = chunked_with_trailers(gw.port, "application/json", b"{")
        assert status == 400, body
        assert_sink_untouched(gw, before)

    def test_http2_trailers_reach_the_filter_on_a_permissive_envoy(self, permissive, static_profiles):
        before = sink_counts(permissive)
        status, _, body = h2_request(permissive.port, h2_token_headers(permissive.port, FORM),
                                     form_body(static_profiles), [("x-checksum", "abc")])
        assert status == 200, body
        assert_sink_untouched(permissive, before)


def get_token(gw, static_profiles) -> str:
    cid, secret = creds(static_profiles)
    r = requests.post(gw.url + "/oauth2/token", auth=(cid, secret), data={"grant_type": "client_credentials"})
    r.raise_for_status()
    return r.json()["access_token"]


LOOK_ALIKES = {"x_tollgate_client_id": "admin", "x_tollgate_profile_id": "admin", "X-Tollgate_Client-Id": "admin"}


def raw_get(gw, path: str, headers: dict) -> tuple[int, dict]:
    """A GET whose header names go on the wire exactly as written."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{lines}Connection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body) if body.startswith(b"{") else {}


def identity_like(echo: dict) -> dict:
    return {k: v for k, v in echo["headers"].items() if k.replace("_", "-").startswith("x-tollgate-")}


class TestLookAlikeIdentityHeaders:
    def test_never_reach_the_upstream(self, gateway, static_profiles):
        self.check(gateway, static_profiles, "shipped")

    def test_never_reach_the_upstream_without_envoys_help(self, permissive, static_profiles):
        self.check(permissive, static_profiles, "permissive")

    def check(self, gw, static_profiles, envoy):
        record = static_profiles["sales"][0]
        token = get_token(gw, static_profiles)
        status, echo = raw_get(gw, "/public/info", LOOK_ALIKES)
        assert status == 200
        assert identity_like(echo) == {}, echo["headers"]
        status, echo = raw_get(gw, "/sales/x", dict(LOOK_ALIKES, authorization=f"Bearer {token}"))
        assert status == 200
        assert identity_like(echo) == {"x-tollgate-client-id": [record["client_id"]],
                                       "x-tollgate-profile-id": [record["id"]]}, echo["headers"]
        if envoy == "shipped":
            dropped = gw.stat("http1.dropped_headers_with_underscores")
            assert dropped > 0, "Envoy drops headers with underscores before the filter"
        else:
            # Envoy let it through: the filter alone removed the look-alikes,
            # and only those.
            status, echo = raw_get(gw, "/public/info", {"x_other_header": "kept"})
            assert echo["headers"].get("x_other_header") == ["kept"]


def test_bearer_token_is_not_forwarded_on_public_paths(gateway, static_profiles, upstream):
    token = get_token(gateway, static_profiles)
    echo = requests.get(gateway.url + "/public/info", headers={"authorization": f"Bearer {token}"}).json()
    assert "authorization" not in echo["headers"]
    assert token not in json.dumps(upstream.received())


def test_public_paths_keep_authorization_when_configured(upstream, static_profiles):
    gw = harness.start_gateway(upstream, plugin_config(static_profiles, keep_authorization=True), concurrency=1)
    try:
        echo = requests.get(gw.url + "/public/info", headers={"authorization": "Bearer abc"}).json()
        assert echo["headers"]["authorization"] == ["Bearer abc"]
    finally:
        gw.stop()


class TestMultipartHasOneReading:
    def post(self, gw, content_type: str, body: str):
        return requests.post(gw.url + "/oauth2/token", headers={"content-type": content_type}, data=body.encode())

    def parts(self, b: str, fields: list) -> str:
        return "".join(f'--{b}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in fields) + \
            f"--{b}--\r\n"

    def test_bare_boundary_line_inside_an_rfc7578_value_is_content(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        b = "B0undary"
        body = self.parts(b, [("grant_type", "client_credentials"), ("client_id", cid),
                              ("client_secret", secret), ("note", f"x\r\n{b}\r\ny")])
        r = self.post(gateway, f"multipart/form-data; boundary={b}", body)
        assert r.status_code == 200, r.text

    def test_a_note_cannot_smuggle_the_secret(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        b = "B0undary"
        note = f'{b}\r\nContent-Disposition: form-data; name="client_secret"\r\n\r\n{secret}'
        body = self.parts(b, [("grant_type", "client_credentials"), ("client_id", cid), ("note", note)])
        r = self.post(gateway, f"multipart/form-data; boundary={b}", body)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        assert "access_token" not in r.json()

    def test_a_delimiter_after_a_bare_lf_in_a_crlf_body_is_refused(self, gateway, static_profiles):
        # Finding 4: RFC 2046 and multer read "LF--B" in a CRLF body as
        # content; taken as a delimiter it smuggled a client_secret part.
        cid, secret = creds(static_profiles)
        b = "B0undary"
        note = f'x\n--{b}\r\nContent-Disposition: form-data; name="client_secret"\r\n\r\n{secret}'
        body = self.parts(b, [("grant_type", "client_credentials"), ("client_id", cid), ("note", note)])
        r = self.post(gateway, f"multipart/form-data; boundary={b}", body)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request"
        # The same body with LF line breaks throughout is read (some clients).
        lf = self.parts(b, [("grant_type", "client_credentials"), ("client_id", cid),
                            ("client_secret", secret)]).replace("\r\n", "\n")
        r = self.post(gateway, f"multipart/form-data; boundary={b}", lf)
        assert r.status_code == 200, r.text

    def test_name_inside_a_quoted_filename_is_not_the_name(self, gateway, static_profiles):
        # Finding 7: RFC 2183/7578 name this part "note".
        cid, secret = creds(static_profiles)
        b = "B0undary"
        body = self.parts(b, [("grant_type", "client_credentials"), ("client_id", cid)])[:-len(f"--{b}--\r\n")] + \
            f'--{b}\r\nContent-Disposition: form-data; filename="a; name=client_secret; x="; name="note"\r\n' \
            f"\r\n{secret}\r\n--{b}--\r\n"
        r = self.post(gateway, f"multipart/form-data; boundary={b}", body)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        assert "access_token" not in r.json()

    def test_boundary_given_twice(self, gateway, static_profiles):
        cid, secret = creds(static_profiles)
        body = self.parts("B2", [("grant_type", "client_credentials"), ("client_id", cid), ("client_secret", secret)])
        # The body fits the second boundary (the one a last-wins parser keeps).
        r = self.post(gateway, "multipart/form-data; boundary=B1; boundary=B2", body)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request"


def test_istio_manifest_drops_underscores_as_our_envoy_configs_do(tmp_path, upstream):
    """envoy/istio/headers-with-underscores.yaml validates against Istio's
    EnvoyFilter schema, and its patch, merged into the HTTP connection
    manager we run, is a config Envoy accepts with the same setting."""
    import subprocess

    import test_istio_manifests as m
    (ef,) = m.docs("headers-with-underscores.yaml")
    schema = m.SCHEMAS["networking.istio.io/v1alpha3/EnvoyFilter"]["properties"]["spec"]
    assert m.schema_errors(ef["spec"], schema, ".spec") == []
    (patch,) = ef["spec"]["configPatches"]
    value = patch["patch"]["value"]["typed_config"]
    assert value["@type"] == harness.render.HCM
    assert value["common_http_protocol_options"] == {"headers_with_underscores_action": harness.render.UNDERSCORES}
    cfg = harness.render.gateway(port=harness.free_port(), admin_port=harness.free_port(), upstream_port=upstream.port,
                                 wasm_path=harness.WASM, plugin_config={"profiles": []}, underscores="ALLOW")
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["common_http_protocol_options"].update(value["common_http_protocol_options"])
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    out = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]

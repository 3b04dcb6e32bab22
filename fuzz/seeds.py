#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/seed-*: the RFC
vectors, the README's and the product documentation's literal requests, and
the edge cases each parser must get right. Reproducers of findings are kept
next to them as corpus/<target>/crash-* (never rewritten by this script).

Run from anywhere: python3 fuzz/seeds.py
"""
import base64
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
WEBKIT = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
CURL = "------------------------d74496d66958873e"


class Finding:
    """A reproducer of an open finding (README, "Fuzzing"): written to
    artifacts/<target>/<name>, not to the replayed corpus, until it is fixed;
    then move it to corpus/<target>/ as a regression seed."""

    def __init__(self, name, data):
        self.name, self.data = name, data


class Fixed(Finding):
    """A fixed finding's reproducer under its own name: corpus/<target>/<name>."""


def Regression(data):
    """A fixed finding's reproducer, kept as a seed."""
    return data


def hexs(n, k=32):
    return bytes([n % 256] * k).hex()


def record(n, **over):
    r = {
        "id": hexs(n),
        "client_id": f"client-{n}",
        "client_secret_sha256": hashlib.sha256(f"secret-{n}".encode()).hexdigest(),
        "kid": hexs(n + 100),
        "signing_key": hexs(n + 200),
        "allowed_prefixes": ["/sales/"],
        "disabled": False,
    }
    r.update(over)
    return r


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def rfc_body(b, fields, close=True, eol="\r\n"):
    out = ""
    for name, value in fields:
        out += f"--{b}{eol}Content-Disposition: form-data; name=\"{name}\"{eol}{eol}{value}{eol}"
    if close:
        out += f"--{b}--{eol}"
    return out


def doc_body(b, fields, final_newline=True):
    # The product documentation's literal example: LF, bare boundary lines,
    # the last delimiter without "--".
    out = ""
    for name, value in fields:
        out += f"{b}\nContent-Disposition: form-data; name=\"{name}\"\n\n{value}\n"
    return out + b + ("\n" if final_newline else "")


TRIPLE = [("grant_type", "client_credentials"), ("client_id", "<CLIENT_ID>"), ("client_secret", "<CLIENT_SECRET>")]


def parts(flags, boundary_index, fields):
    """The structured multipart targets' input: flags, boundary choice, then
    name 0xFE value parts separated by 0xFF."""
    out = bytes([flags, boundary_index])
    return out + b"\xff".join(n.encode() + b"\xfe" + v.encode() for n, v in fields)


def seeds():
    s = {}
    s["media_type"] = [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded;charset=utf-8;",
        "Application/JSON; charset=UTF-8",
        f"multipart/form-data; boundary={WEBKIT}",
        'multipart/form-data; boundary="a b:c"',
        'multipart/form-data; boundary="quoted\\"escape"',
        "multipart/form-data; boundary=x; boundary=y",
        "multipart/form-data; boundary=" + "a" * 71,
        "multipart/form-data",
        "application/json; charset=latin1",
        "application/json; charset",
        "text/plain",
        "",
    ]
    s["form"] = [
        "grant_type=client_credentials",
        "client_secret=<CLIENT_SECRET>&client_id=<CLIENT_ID>&grant_type=client_credentials",
        "client_secret=s+e%2Fc%2B&client_id=id&grant_type=client_credentials&",
        "a=1&a=2",
        "a=%zz&b=%ff&c=%E3%81%82",
        "=&&=x&y",
        '{"grant_type":"x"}',
        "Content-Disposition: form-data\nx=1",
    ]
    s["json"] = [
        '{\n  "grant_type": "client_credentials",\n  "client_id": "<CLIENT_ID>",\n  "client_secret": "<CLIENT_SECRET>"\n}',
        '{"a":"1","a":"2"}',
        '{"grant_type":1,"client_id":null,"x":[1,{"y":true}],"z":{"a":"b"}}',
        '{"k":"\\u00e9\\ud83d\\ude00","e":"\\"\\\\\\/\\b\\f\\n\\r\\t"}',
        '["x"]',
        '{"a":"1"',
        " \t\n{}",
        '{"a":1e999}',
        Fixed("finding-5-invalid-utf8-in-skipped-member", b'{"grant_type":"client_credentials","x":{"y":"\xff"}}'),
        Fixed("finding-5-number-out-of-range-in-skipped-member", '{"grant_type":"client_credentials","x":[1e99999]}'),
    ]
    rfc = rfc_body(CURL, [("grant_type", "client_credentials"), ("client_id", "id"), ("client_secret", "s e/c+")])
    s["multipart_multer"] = [
        CURL + "\n" + rfc,
        WEBKIT + "\n" + rfc_body(WEBKIT, TRIPLE),
        Regression("XyZ\n" + rfc_body("XyZ", [("a", "1\r\n2"), ("b", "")])),
        Regression("B\n" + rfc_body("B", [
            ("note", "B\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\nsecret"),
            ("grant_type", "client_credentials")])),
        "B\n" + rfc_body("B", [("note", "x\r\nB\r\ny")]),
        "B\npreamble\r\n" + rfc_body("B", [("a", "1")]) + "epilogue",
        "B\n--B\r\ncontent-disposition: form-data; name=a; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\nv\r\n--B--\r\n",
        "B\n--B  \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--B--\r\n",
        "B\n" + rfc_body("B", [("a", "1"), ("a", "2")]),
        "B\n--B\r\nContent-Disposition: form-data\r\n\r\nv\r\n--B--\r\n",
        "B\n" + rfc_body("B", [("a", "v")], eol="\n"),
        WEBKIT + "\n" + doc_body(WEBKIT, TRIPLE),
        # RFC 2183 reads this part as "note" (with a filename), and so do we
        # since finding 7; multer reads "client_secret" (a multer quirk).
        "B\n--B\r\nContent-Disposition: form-data; filename=\"a; name=client_secret; x=\"; name=\"note\"\r\n"
        "\r\nsecret\r\n--B\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\n"
        "client_credentials\r\n--B--\r\n",
        Fixed("finding-7-quoted-semicolon-in-name",
              "B\n--B\r\nContent-Disposition: form-data; name=\"a; b=\"c\"\r\n\r\nv\r\n--B--\r\n"),
        Regression("B\n--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--x\r\n"
                "--B\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\nsecret\r\n--B--\r\n"),
        Fixed("finding-4-lf-delimiter", "B\n--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\n"
                "--B\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\nsecret\r\n--B--\r\n"),
    ]
    s["multipart_rfc"] = [
        parts(0, 1, [("grant_type", "client_credentials"), ("client_id", "id"), ("client_secret", "s e/c+")]),
        parts(0b111111, 0, TRIPLE),
        Regression(parts(0, 4, [("note", "x\r\nB\r\ny"), ("a", "1")])),
        Regression(parts(0, 4, [
            ("note", "B\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\nsecret")])),
        Regression(parts(0, 3, [("a", "line1\r\nline2"), ("b", "tail\r")])),
        parts(0, 3, [("a", "line1\nline2"), ("b", "tail\r")]),
        parts(0b10000, 6, [("a", "")]),
        parts(0, 3, []),
    ]
    s["multipart_bare"] = [
        parts(0, 0, TRIPLE),
        parts(1, 0, TRIPLE),
        parts(0, 3, [("a", "multi\nline\n\nvalue"), ("b", "")]),
        parts(0b100, 4, [("a", "x"), ("b", "y")]),
        parts(0, 4, [("note", "B\nContent-Disposition: form-data; name=\"client_secret\"\n\nsecret")]),
        parts(0, 7, [("a", "-x")]),
    ]
    basic = lambda i, sec: "Basic " + base64.b64encode(f"{i}:{sec}".encode()).decode()
    s["basic"] = [
        basic("<CLIENT_ID>", "<CLIENT_SECRET>"),
        basic("my%3Aid", "p%40ss+word"),
        basic("id", "s").replace("Basic", "basic"),
        basic("id", "s").rstrip("="),
        basic("", ""),
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
        "Basic !!!",
        "Bearer abc",
        "Basic",
    ]
    def tr(method, path, ct, auth, body):
        return "\n".join([method, path, ct, auth, body])
    form = "application/x-www-form-urlencoded"
    s["token_request"] = [
        tr("POST", "/oauth2/token", form, basic("<CLIENT_ID>", "<CLIENT_SECRET>"), "grant_type=client_credentials"),
        tr("POST", "/oauth2/token", "application/json", "",
           '{"grant_type":"client_credentials","client_id":"i","client_secret":"s"}'),
        tr("POST", "/oauth2/token", form, "", "client_secret=s&client_id=i&grant_type=client_credentials"),
        tr("POST", "/oauth2/token", f"multipart/form-data; boundary={WEBKIT}", "", doc_body(WEBKIT, TRIPLE)),
        tr("POST", "/oauth2/token", f"multipart/form-data; boundary={CURL}", "", rfc),
        tr("GET", "/oauth2/token", form, "", "grant_type=client_credentials"),
        tr("POST", "/oauth2/token?client_secret=x", form, "", "grant_type=client_credentials"),
        tr("POST", "/oauth2/token", "", "", "grant_type=client_credentials"),
        tr("POST", "/oauth2/token", form, basic("i", "s"), "grant_type=client_credentials&client_id=i"),
        tr("POST", "/oauth2/token", form, "", "grant_type=password&client_id=i&client_secret=s"),
        tr("POST", "/oauth2/token", "application/json", "", "grant_type=client_credentials"),
    ]
    r1 = record(1)
    head = json.dumps({"alg": "HS256", "kid": r1["kid"], "typ": "JWT"}, separators=(",", ":"))
    claims = json.dumps({"sub": r1["id"], "exp": 1700003600, "nbf": 1700000000, "iat": 1700000000,
                         "jti": "00" * 16}, separators=(",", ":"))
    signed = lambda h, c: b"\x01" + h.encode() + b"\x00" + c.encode()
    s["jwt"] = [
        signed(head, claims),
        signed(head, json.dumps({"sub": hexs(2), "exp": 1})),
        signed('{"alg":"HS256","kid":"%s","crit":["x"]}' % r1["kid"], claims),
        signed('{"alg":"HS256","kid":"%s","typ":"JOSE+JSON"}' % r1["kid"], claims),
        signed('{"alg":"HS256"}', claims),
        signed(head, '{"sub":"%s"}' % r1["id"]),
        signed(head, '{"sub":"%s","exp":18446744073709551615,"nbf":0}' % r1["id"]),
        Fixed("finding-5-invalid-utf8-in-jwt-header", b"\x01" + ('{"alg":"HS256","kid":"%s","x":"' % r1["kid"]).encode()
                + b'\xd1"}\x00' + claims.encode()),
        b"\x00" + (b64u(b'{"alg":"none","typ":"JWT"}') + "." + b64u(claims.encode()) + ".").encode(),
        b"\x00" + f"{b64u(head.encode())}.{b64u(claims.encode())}.AAAA".encode(),
        b"\x00a.b.c.d",
        b"\x00!!.b.c",
        # RFC 7515 A.1 (the HS256 example), under a key that is not ours.
        b"\x00eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
    ]
    s["config"] = [
        json.dumps({"profiles": [record(1)]}),
        json.dumps({"token_path": "/oauth2/token", "token_lifetime_seconds": 3600, "clock_leeway_seconds": 30,
                    "public_paths": ["/healthz", "/docs/"], "keep_authorization": False, "realm": "tollgate",
                    "max_token_request_bytes": 16384, "hold_token_request_headers": True,
                    "verified_token_cache_size": 4096,
                    "identity_headers": {"client_id": "x-tollgate-client-id", "profile_id": "x-tollgate-profile-id"},
                    "profiles": [record(1), record(2, allowed_prefixes=["/", "/a/b/"])]}),
        json.dumps({"sidecar": {"cluster": "tollgate_sidecar", "data_token": "t", "authority": "tollgate-sidecar",
                                "long_poll_seconds": 25, "max_staleness_seconds": 60}}),
        json.dumps({"public_paths": ["/a", "b"], "profiles": []}),
        json.dumps({"profiles": [record(1), record(1)]}),
        json.dumps({"profiles": [record(1)], "sidecar": {"cluster": "c", "data_token": "t"}}),
        json.dumps({"token_path": "/x/../y", "profiles": [record(1, kid="abc")]}),
        '{"unknown": 1}',
        '{"public_paths":["/"],"profiles":[]}',
        "",
    ]
    s["path"] = [
        "/sales/\n/sales/orders?x=1",
        "/sales/\n/sales",
        "/sales/\n/salesforce/x",
        "/sales/\n/sales/../hr/x",
        "/sales/\n/sales/%2e%2e/hr",
        "/sales/\n/sales/a%2Fb",
        "/sales/\n/sales//x",
        "/sales/\n/sales\\x",
        "/sales/\n/sales/..;/hr/x",
        "/sales/\n/sales/a?q=%2e%2e",
        "/\n/anything/at/all",
        "/healthz\n/healthz?x",
        "/pub/\n/pub/../secret",
        "/a/b/\n/a/b/./c#frag",
        "/sa'/%aes\n/sa'/%aes",
        "/a%41/\n/a%41/x",
        "/s;;;;/\n/s;;;;",
    ]
    stamp = b"3 7 1700000000"
    entry = f"{hexs(101)} client-1".encode()
    s["shared_text"] = [
        b"\x00".join([stamp, b"1 1700000003000", hexs(1).encode() + b"\n", entry]),
        b"\x00".join([stamp, b"7 0", (hexs(1) + "\n" + hexs(2) + "\n").encode(), entry,
                      f"{hexs(102)} client-2".encode()]),
        Fixed("finding-3-stamp-generation-overflow", b"\x00".join(
            [b"18446744073709551615 18446744073709551615 18446744073709551615", b"8 99999999999999", b"", b""])),
        b"\x00".join([b"18446744073709551614 18446744073709551615 18446744073709551615", b"8 99999999999999", b"", b""]),
        b"\x00".join([b"1 2", b"x y", b"\n\n", b"nospace"]),
        b"\x00".join([b"1 2 3 4", b"1  2", hexs(1).encode(), b"kid client id with spaces"]),
        b"",
    ]
    s["profile_record"] = [
        json.dumps(record(1)),
        json.dumps(record(2, name="Sales team", disabled=True)),
        json.dumps(record(3, kid=hexs(103).upper(), allowed_prefixes=["/", "/a/b/"])),
        json.dumps(record(4, signing_key="00" * 64)),
        json.dumps(record(5, signing_key="00" * 16)),
        json.dumps(record(6, allowed_prefixes=[])),
        json.dumps(record(7, allowed_prefixes=["/a/../"])),
        json.dumps(record(8, client_id="")),
        json.dumps(dict(record(9), extra=1)),
        Fixed("finding-6-uppercase-id", json.dumps(record(10, id=hexs(10).upper().replace("0", "A")))),
    ]
    snap = json.dumps({"revision": 4, "profiles": [record(1), record(2)]})
    changes = json.dumps({"revision": 6, "changes": [{"id": hexs(1), "profile": record(1, allowed_prefixes=["/hr/"])},
                                                     {"id": hexs(2), "profile": None},
                                                     {"id": hexs(3), "profile": record(3)}]})
    s["sync_response"] = [
        b"\x00\x00" + snap.encode(),
        b"\x01\x00" + changes.encode(),
        b"\x01\x00" + b'{"revision":5,"changes":[]}',
        b"\x01\x00" + b'{"revision":2,"reset":true,"changes":[]}',
        b"\x00\x00" + json.dumps({"revision": 1, "profiles": [record(1), record(1, id=hexs(9))]}).encode(),
        b"\x00\x00" + json.dumps({"revision": 1, "profiles": [dict(record(1), extra=1)]}).encode(),
        b"\x00\xfa" + b'{"error":"unauthorized"}',
        b"\x01\xff",
        b"\x00\x00not json",
    ]
    import struct
    def entry(fp, window_start, locked_until, failures, strikes):
        return struct.pack("<QQQII", fp, window_start, locked_until, failures, strikes)
    now = 1700000000
    s["lockout"] = [
        b"client-1\n10.0.0.1:5555\n",
        b"client-1\n[2001:db8::1]:443\n" + entry(1, now, 0, 2, 0) + entry(2, now, 0, 4, 0),
        b"client-1\n2001:db8::1\n" + entry(0, now - 10, now + 30, 0, 3) * 4,
        b"\n10.0.0.1\n" + entry(2**64 - 1, 2**64 - 1, 2**64 - 1, 2**32 - 1, 2**32 - 1) * 4,
        b"c\n\n" + b"1 2 3 4 5",
    ]
    def header_map(pairs):
        out = struct.pack("<I", len(pairs))
        for n, v in pairs:
            out += struct.pack("<II", len(n), len(v))
        for n, v in pairs:
            out += n + b"\0" + v + b"\0"
        return out
    s["header_map"] = [
        header_map([(b":path", b"/sales/x"), (b":method", b"GET"), (b"authorization", b"Bearer a.b.c")]),
        header_map([(b"x-tollgate-client-id", b"forged"), (b"X_Tollgate_Profile_Id", b"forged"),
                    (b"x-tollgate-client-id", b"again")]),
        header_map([(b"bad", b"\xff\xfe"), (b"\xff", b"v"), (b"", b"")]),
        header_map([]),
        b"",
        struct.pack("<I", 2**32 - 1),
        struct.pack("<III", 1, 2**32 - 1, 0),
        header_map([(b"a", b"b")])[:-1] + b"x",
    ]
    return s


def main():
    artifacts = ROOT.parent / "artifacts"
    for target, items in seeds().items():
        d = ROOT / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for i, item in enumerate(items):
            if isinstance(item, Fixed):
                path, data = d / item.name, item.data
            elif isinstance(item, Finding):
                (artifacts / target).mkdir(parents=True, exist_ok=True)
                path, data = artifacts / target / item.name, item.data
            else:
                path, data = d / f"seed-{i:02d}", item
            path.write_bytes(data.encode() if isinstance(data, str) else data)


if __name__ == "__main__":
    main()

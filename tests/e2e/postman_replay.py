"""Replays the Postman collection (postman/) the way Postman sends it, with an
environment's variables substituted: newman would need the npm registry,
which our machines do not reach. Covers what the collection uses: `{{var}}`
substitution, raw / urlencoded / formdata bodies, `noauth`, `basic`, and
`oauth2` with the client-credentials grant (Client Authentication "header" =
Basic header, "body" = credentials in the form body), inherited from the
folder or the collection when a request has no `auth`. Each request's
expected status is the one its own test script asserts
(`pm.response.to.have.status(N)`)."""
from __future__ import annotations

import json
import pathlib
import re

import harness
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
POSTMAN = ROOT / "postman"
COLLECTION = POSTMAN / "tollgate.postman_collection.json"
SCHEMA = POSTMAN / "schema" / "collection-v2.1.0.json"
VARIABLE = re.compile(r"\{\{([^{}]+)\}\}")


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def environment(path: pathlib.Path) -> dict[str, str]:
    env = load(path)
    return {v["key"]: v["value"] for v in env["values"] if v.get("enabled", True)}


def substitute(text: str, variables: dict[str, str]) -> str:
    """Postman resolves nested references too ({{token_url}} may hold {{base_url}})."""
    for _ in range(10):
        new = VARIABLE.sub(lambda m: variables[m.group(1)] if m.group(1) in variables else m.group(0), text)
        if new == text:
            break
        text = new
    unresolved = VARIABLE.findall(text)
    if unresolved:
        raise AssertionError(f"unresolved Postman variables {unresolved} in {text!r}")
    return text


def requests_in(node: dict, inherited_auth: dict | None = None):
    """(name, request, effective auth, expected status) in collection order."""
    auth = node.get("auth", inherited_auth)
    for item in node.get("item", []):
        if "request" in item:
            req = item["request"]
            script = "\n".join(line for e in item.get("event", []) if e["listen"] == "test"
                               for line in e["script"]["exec"])
            m = re.search(r"pm\.response\.to\.have\.status\((\d+)\)", script)
            yield item["name"], req, req.get("auth", item.get("auth", auth)), int(m.group(1)) if m else None
        else:
            yield from requests_in(item, auth)


def attrs(auth: dict) -> dict:
    return {a["key"]: a.get("value") for a in auth.get(auth["type"], [])}


def oauth2_token(auth: dict, variables: dict[str, str], session: requests.Session) -> str:
    """What Postman's Get New Access Token does for the client-credentials grant."""
    a = {k: substitute(v, variables) if isinstance(v, str) else v for k, v in attrs(auth).items()}
    assert a["grant_type"] == "client_credentials", a["grant_type"]
    form = {"grant_type": "client_credentials"}
    if a.get("scope"):
        form["scope"] = a["scope"]
    basic = None
    if a.get("client_authentication", "header") == "header":
        basic = (a["clientId"], a["clientSecret"])
    else:
        form.update(client_id=a["clientId"], client_secret=a["clientSecret"])
    r = session.post(a["accessTokenUrl"], data=form, auth=basic, timeout=10,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, f"token request for the OAuth 2.0 helper: {r.status_code} {r.text}"
    body = r.json()
    assert body["token_type"].lower() == "bearer"
    return body["access_token"]


def send(req: dict, auth: dict | None, variables: dict[str, str], session: requests.Session) -> requests.Response:
    url = req["url"]["raw"] if isinstance(req["url"], dict) else req["url"]
    url = substitute(url, variables)
    headers = {h["key"]: substitute(h["value"], variables) for h in req.get("header", []) if not h.get("disabled")}
    kw: dict = {}
    body = req.get("body")
    if body:
        mode = body["mode"]
        fields = [(substitute(p["key"], variables), substitute(p["value"], variables))
                  for p in body.get(mode, []) if isinstance(body.get(mode), list) and not p.get("disabled")]
        if mode == "raw":
            kw["data"] = substitute(body["raw"], variables).encode()
        elif mode == "urlencoded":
            kw["data"] = fields
        elif mode == "formdata":
            assert all(p.get("type", "text") == "text" for p in body["formdata"])
            kw["files"] = [(k, (None, v)) for k, v in fields]
        else:
            raise AssertionError(f"body mode {mode} is not replayed")
    if auth and auth["type"] == "basic":
        a = attrs(auth)
        kw["auth"] = (substitute(a["username"], variables), substitute(a["password"], variables))
    elif auth and auth["type"] == "oauth2":
        a = attrs(auth)
        assert a.get("addTokenTo", "header") == "header"
        headers["Authorization"] = f"{a.get('headerPrefix') or 'Bearer'} {oauth2_token(auth, variables, session)}"
    elif auth and auth["type"] != "noauth":
        raise AssertionError(f"auth type {auth['type']} is not replayed")
    return session.request(req["method"], url, headers=headers, timeout=10, **kw)


def replay(variables: dict, *, expected_client_id: str, kid: str) -> None:
    """Every request of the collection, each checked against its own expected status."""
    replayed = 0
    with requests.Session() as session:
        for name, req, auth, status in requests_in(load(COLLECTION)):
            r = send(req, auth, variables, session)
            assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
            body = r.json()
            if "oauth2/token" in req["url"]["raw"]:
                assert (body["token_type"], body["expires_in"]) == ("bearer", 3600), name
                header, _ = harness.decode_jwt(body["access_token"])
                assert json.loads(header)["kid"] == kid
            elif status == 200:
                assert body["headers"]["x-tollgate-client-id"] == [expected_client_id], name
                assert "authorization" not in body["headers"], name
            else:
                assert r.headers["www-authenticate"].startswith("Bearer"), name
            replayed += 1
    assert replayed == 7

"""The Postman collection and environments in postman/: valid v2.1 as
Postman imports them, and every request replayed against the real Envoy
with the filter, with the `./build.sh run` environment's variables."""
import pathlib
import sys

import harness
import jsonschema
import postman_replay as pm
import pytest
import requests

sys.path.insert(0, str(harness.ROOT / "envoy" / "compose"))
import stack  # noqa: E402

ENVIRONMENTS = {
    "tollgate-local": "http://127.0.0.1:10000",  # envoy/run.py's default TOLLGATE_PORT
    "tollgate-compose-us": f"http://127.0.0.1:{stack.DEFAULT_PORTS['us'][0]}",
    "tollgate-compose-eu": f"http://127.0.0.1:{stack.DEFAULT_PORTS['eu'][0]}",
}


def test_collection_is_valid_v2_1():
    collection = pm.load(pm.COLLECTION)
    jsonschema.Draft7Validator(pm.load(pm.SCHEMA)).validate(collection)
    assert collection["info"]["schema"] == "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    auth = collection["auth"]
    assert auth["type"] == "oauth2"
    assert pm.attrs(auth) | {"tokenName": None} == {
        "grant_type": "client_credentials", "accessTokenUrl": "{{token_url}}", "clientId": "{{client_id}}",
        "clientSecret": "{{client_secret}}", "client_authentication": "header", "addTokenTo": "header",
        "headerPrefix": "Bearer", "tokenName": None}
    reqs = list(pm.requests_in(collection))
    # both of Postman's Client Authentication choices
    assert {pm.attrs(a)["client_authentication"] for _, _, a, _ in reqs if a and a["type"] == "oauth2"} == \
        {"header", "body"}
    # the four token request shapes, each with its own status assertion
    token_reqs = [(r, a) for _, r, a, status in reqs if r["url"]["raw"] == "{{base_url}}/oauth2/token" and status]
    shapes = {(a["type"], r["body"]["mode"], r["body"].get("options", {}).get("raw", {}).get("language"))
              for r, a in token_reqs}
    assert shapes == {("basic", "urlencoded", None), ("noauth", "raw", "json"), ("noauth", "urlencoded", None),
                      ("noauth", "formdata", None)}
    assert all(status is not None for *_, status in reqs)


def test_schema_refuses_what_postman_would_refuse():
    """The embedded schema is not a rubber stamp."""
    collection = pm.load(pm.COLLECTION)
    collection["auth"]["type"] = "oauth3"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(pm.load(pm.SCHEMA)).validate(collection)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(pm.load(pm.SCHEMA)).validate({"info": {"name": "x"}, "item": []})


@pytest.mark.parametrize("name", sorted(ENVIRONMENTS))
def test_environments(name):
    raw = pm.load(pm.POSTMAN / f"{name}.postman_environment.json")
    assert raw["_postman_variable_scope"] == "environment" and raw["name"] and raw["id"]
    env = pm.environment(pm.POSTMAN / f"{name}.postman_environment.json")
    assert env["base_url"] == ENVIRONMENTS[name]
    assert env["token_url"] == env["base_url"] + "/oauth2/token"
    assert env["client_id"] == env["client_secret"] == ""  # never a committed secret
    # every variable the collection uses is defined by the environment
    used = set(pm.VARIABLE.findall(pm.COLLECTION.read_text()))
    assert used <= set(env), used - set(env)


@pytest.fixture(scope="module")
def demo_gateway(upstream):
    profile, secret = harness.new_profile(allowed=("/demo/",))
    env = harness.start_gateway(upstream, {"profiles": [profile], "realm": "tollgate-test"})
    yield env, profile, secret
    env.stop()


def test_replay_collection_against_envoy(demo_gateway):
    env, profile, secret = demo_gateway
    variables = pm.environment(pm.POSTMAN / "tollgate-local.postman_environment.json")
    # the environment as a user fills it in, on this test's port
    variables.update(base_url=variables["base_url"].replace("127.0.0.1:10000", f"127.0.0.1:{env.port}"),
                     token_url=variables["token_url"].replace("127.0.0.1:10000", f"127.0.0.1:{env.port}"),
                     client_id=profile["client_id"], client_secret=secret)
    pm.replay(variables, expected_client_id=profile["client_id"], kid=profile["kid"])


def test_replay_refuses_wrong_credentials(demo_gateway):
    """The replayer's OAuth 2.0 helper really authenticates: a wrong secret
    stops the inherited-auth request at the token endpoint."""
    env, profile, _ = demo_gateway
    variables = {"base_url": env.url, "token_url": env.url + "/oauth2/token", "client_id": profile["client_id"],
                 "client_secret": "0" * 64}
    name, req, auth, _ = next(x for x in pm.requests_in(pm.load(pm.COLLECTION)) if x[2] and x[2]["type"] == "oauth2")
    with requests.Session() as session, pytest.raises(AssertionError, match="401"):
        pm.send(req, auth, variables, session)


def test_environment_files_are_json_postman_imports():
    for path in pathlib.Path(pm.POSTMAN).glob("*.postman_environment.json"):
        values = pm.load(path)["values"]
        assert all(set(v) >= {"key", "value", "enabled"} for v in values), path

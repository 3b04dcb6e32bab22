"""`identity_headers.set_by: "route"` (issue 10): the filter publishes the
identity as filter state and changes no header on an authorized request;
the route (render.identity_route_headers) sets the identity headers and drops
Authorization. The same promises as the default mode, against the real
Envoy: the upstream sees the identity of the token, never a client's copy or
look-alike of it, never the bearer token, and nothing on public paths."""
import json

import pytest
import requests

import harness
from conftest import plugin_config
from test_hardening import LOOK_ALIKES, get_token, identity_like, raw_get

ROUTE_MODE = {"identity_headers": {"set_by": "route"}}


@pytest.fixture(scope="module")
def route_gateway(upstream, static_profiles):
    """Underscores allowed: the filter alone must drop the look-alikes."""
    env = harness.start_gateway(upstream, plugin_config(static_profiles, **ROUTE_MODE), underscores="ALLOW")
    yield env
    env.stop()


def test_upstream_gets_the_identity_and_no_token(route_gateway, static_profiles, upstream):
    record = static_profiles["sales"][0]
    token = get_token(route_gateway, static_profiles)
    status, echo = raw_get(route_gateway, "/sales/x", dict(LOOK_ALIKES, authorization=f"Bearer {token}"))
    assert status == 200
    assert identity_like(echo) == {"x-tollgate-client-id": [record["client_id"]],
                                   "x-tollgate-profile-id": [record["id"]]}, echo["headers"]
    assert "authorization" not in echo["headers"]
    assert token not in json.dumps(upstream.received())


def test_public_paths_get_no_identity(route_gateway, static_profiles):
    token = get_token(route_gateway, static_profiles)
    status, echo = raw_get(route_gateway, "/public/info", dict(LOOK_ALIKES, authorization=f"Bearer {token}"))
    assert status == 200
    assert identity_like(echo) == {}, echo["headers"]
    assert "authorization" not in echo["headers"]


def test_refusals_are_unchanged(route_gateway, static_profiles):
    token = get_token(route_gateway, static_profiles)
    r = requests.get(route_gateway.url + "/hr/x", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 403
    r = requests.get(route_gateway.url + "/sales/x")
    assert r.status_code == 401


def test_keep_authorization_keeps_it(upstream, static_profiles):
    gw = harness.start_gateway(upstream, plugin_config(static_profiles, keep_authorization=True, **ROUTE_MODE),
                               concurrency=1)
    try:
        token = get_token(gw, static_profiles)
        echo = requests.get(gw.url + "/sales/x", headers={"authorization": f"Bearer {token}"}).json()
        assert echo["headers"]["authorization"] == [f"Bearer {token}"]
        assert echo["headers"]["x-tollgate-client-id"] == [static_profiles["sales"][0]["client_id"]]
    finally:
        gw.stop()

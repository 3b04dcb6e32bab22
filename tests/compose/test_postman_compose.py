"""The Postman collection replayed against each region of the harness, with
the environments `up` wrote beside the clients file (postman/'s
environments filled in with the stack's ports and demo credentials)."""
import json

import postman_replay as pm
import pytest


@pytest.mark.parametrize("region", ["us", "eu"])
def test_postman_collection_against_region(compose, region):
    written = compose.clients_path.parent / f"tollgate-compose-{region}.postman_environment.json"
    assert written.stat().st_mode & 0o077 == 0
    committed = pm.load(pm.POSTMAN / written.name)
    assert [v["key"] for v in json.loads(written.read_text())["values"]] == [v["key"] for v in committed["values"]]
    variables = pm.environment(written)
    client = compose.clients[region]
    assert variables["base_url"] == f"http://127.0.0.1:{compose.ports[region][0]}"
    pm.replay(variables, expected_client_id=client["client_id"], kid=client["kid"])

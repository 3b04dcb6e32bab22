"""The compose tier: the harness of envoy/compose brought up once for the
session under a unique project name on free 127.0.0.1 ports, and always
taken down (containers, networks and volumes), whatever the tests did."""
import os
import pathlib
import secrets
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy" / "compose"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "envoy"))
import harness  # noqa: E402
import stack  # noqa: E402


def distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = harness.free_port()
        if p not in ports:
            ports.append(p)
    return ports


@pytest.fixture(scope="session")
def compose(tmp_path_factory):
    if not stack.docker_ready():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Docker engine answers (docker info): the compose tier cannot run")
        pytest.skip("SKIPPED: no Docker engine answers (docker info)")
    project = os.environ.get("TOLLGATE_COMPOSE_PROJECT") or f"tollgate-test-{secrets.token_hex(4)}"
    free = iter(distinct_free_ports(3 * len(stack.REGIONS)))
    s = stack.Stack(project, {r: (next(free), next(free), next(free)) for r in stack.REGIONS})
    clients_path = tmp_path_factory.mktemp("compose") / "clients.json"
    try:
        try:
            s.clients = s.up(clients_path)
        except SystemExit as e:  # stack.py's way to fail, made a test error
            pytest.fail(str(e))
        s.clients_path = clients_path
        yield s
    finally:
        s.down()

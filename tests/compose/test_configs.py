"""The compose harness's Envoy configs, without Docker: the committed files
are what envoy/render.py renders, and Envoy 1.40 accepts them."""
import json
import pathlib
import subprocess

import harness
import pytest
import render


def test_committed_configs_are_rendered_by_render_py():
    files = render.compose_files()
    assert {p.name for p in files} == {"envoy-us.json", "envoy-eu.json", "envoy-fleet.json"}
    for path, text in files.items():
        assert path.read_text() == text, f"{path.name} is stale: run python3 envoy/render.py compose"


@pytest.mark.parametrize("region", list(render.COMPOSE_REGIONS))
def test_envoy_validates_the_region_config(region, tmp_path):
    cfg = render.compose_region(region, wasm_path=harness.WASM, data_token="ab" * 32)
    vhosts = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"]
    assert vhosts[0]["domains"] == render.COMPOSE_REGIONS[region] + ["127.0.0.1", "localhost"]
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    out = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(path), "-l", "error"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_envoy_validates_the_fleet_config(tmp_path):
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(render.compose_fleet(wasm_path=harness.WASM, data_token="ab" * 32)))
    out = subprocess.run([harness.ENVOY, "--mode", "validate", "-c", str(path), "-l", "error"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_entrypoint_fills_in_the_data_token_and_nothing_else(tmp_path):
    """The Envoy image's entrypoint, with its paths pointed at a scratch dir."""
    script = (pathlib.Path(render.COMPOSE_DIR) / "bin" / "tollgate-envoy-entrypoint").read_text()
    for container_path, here in (("/run/tollgate-data/data-token", "data-token"),
                                 ("/etc/tollgate/envoy.json", "committed.json"), ("/tmp/envoy.json", "envoy.json")):
        assert container_path in script
        script = script.replace(container_path, str(tmp_path / here))
    assert "exec envoy -c" in script
    script = script.replace("exec envoy -c", "exec cat")  # print the config Envoy would get
    (tmp_path / "committed.json").write_text((render.COMPOSE_DIR / "envoy-us.json").read_text())
    (tmp_path / "data-token").write_text("cd" * 32 + "\n")
    out = subprocess.run(["sh", "-c", script, "entrypoint"], capture_output=True, text=True, check=True)
    assert (tmp_path / "envoy.json").stat().st_mode & 0o077 == 0
    plugin = json.loads(json.loads(out.stdout)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]["value"])
    assert plugin["sidecar"]["data_token"] == "cd" * 32
    (tmp_path / "data-token").write_text("not hex; rm -rf /\n")
    bad = subprocess.run(["sh", "-c", script, "entrypoint"], capture_output=True, text=True)
    assert bad.returncode == 1 and "hex token" in bad.stderr

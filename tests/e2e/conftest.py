import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import harness  # noqa: E402


def pytest_sessionstart(session):
    missing = [p for p in (harness.ENVOY, harness.WASM) if not pathlib.Path(p).exists()]
    if missing:
        raise pytest.UsageError(f"missing {missing}: run ./build.sh test, which installs and builds them")


@pytest.fixture(scope="session")
def upstream():
    u = harness.Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def static_profiles():
    """Three profiles: one for /sales/ and /hr/reports/, one disabled, one for /hr/."""
    sales, sales_secret = harness.new_profile(allowed=("/sales/", "/hr/reports/"))
    off, off_secret = harness.new_profile(disabled=True)
    hr, hr_secret = harness.new_profile(allowed=("/hr/",))
    return {"sales": (sales, sales_secret), "off": (off, off_secret), "hr": (hr, hr_secret)}


def plugin_config(profiles: dict, **extra) -> dict:
    return {"profiles": [p for p, _ in profiles.values()], "public_paths": ["/public/", "/healthz"],
            "realm": "tollgate-test", "max_token_request_bytes": 4096, **extra}


@pytest.fixture(scope="module", params=["hold", "fallback"])
def gateway(request, upstream, static_profiles):
    """Envoy with 2 workers and the built filter, in both token-body modes."""
    env = harness.start_gateway(upstream, plugin_config(static_profiles), hold=request.param == "hold")
    env.mode = request.param
    yield env
    env.stop()

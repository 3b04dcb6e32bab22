"""Process harness for the end-to-end tests: free loopback ports, child
processes that are always stopped, an Envoy started from envoy/render.py,
and helpers to craft tokens and profiles the way the sidecar does."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pathlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy"))
import render  # noqa: E402

ENVOY = os.environ.get("TOLLGATE_ENVOY", str(ROOT / ".venv" / "bin" / "envoy"))
WASM = os.environ.get("TOLLGATE_WASM", str(ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate.wasm"))
SIDECAR = os.environ.get("TOLLGATE_SIDECAR", str(ROOT / "target" / "release" / "tollgate-sidecar"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except RuntimeError:
            raise  # the process died: no point in waiting
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}: {last!r}")


class Process:
    """A child process whose output goes to a file; stopped on exit."""

    def __init__(self, name: str, cmd: list[str], env: dict | None = None, cwd: str | None = None):
        self.name = name
        self.log_path = pathlib.Path(tempfile.mkstemp(prefix=f"tollgate-{name}-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_output(self, pattern: str, timeout: float = 30) -> re.Match:
        def found():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            return re.search(pattern, self.output())
        return wait_for(found, timeout, f"{self.name} to print {pattern!r}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class Upstream(Process):
    def __init__(self):
        super().__init__("upstream", [sys.executable, str(ROOT / "envoy" / "demo_upstream.py"), "--port", "0"])
        self.port = int(self.wait_output(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def received(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/__received", timeout=5) as r:
            return json.load(r)


class Envoy(Process):
    def __init__(self, config: dict, *, port: int, admin_port: int, concurrency: int = 2, name: str = "envoy"):
        self.port, self.admin_port = port, admin_port
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = pathlib.Path(tempfile.mkstemp(prefix="tollgate-envoy-", suffix=".json")[1])
        self.config_path.write_text(json.dumps(config))
        super().__init__(name, [ENVOY, "-c", str(self.config_path), "--concurrency", str(concurrency),
                                "--disable-hot-restart", "-l", "warning",
                                "--component-log-level", "wasm:debug"])
        try:
            wait_for(self._ready, 60, "envoy /ready")
        except Exception:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2) as r:
            if r.status != 200:
                return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            return True

    def stat(self, name: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats?filter=^{re.escape(name)}$",
                                    timeout=5) as r:
            text = r.read().decode()
        m = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0


def start_gateway(upstream: Upstream, plugin_config: dict, *, hold: bool = True, concurrency: int = 2,
                  sidecar_port: int | None = None, port: int | None = None, **hcm_options) -> Envoy:
    """`port`: the listener's port when the config must name it (an issuer URL)."""
    port, admin = port or free_port(), free_port()
    cfg = render.gateway(port=port, admin_port=admin, upstream_port=upstream.port, wasm_path=WASM,
                         plugin_config=plugin_config, hold=hold, sidecar_port=sidecar_port, **hcm_options)
    return Envoy(cfg, port=port, admin_port=admin, concurrency=concurrency)


# --- profiles and tokens, crafted the way the sidecar and the filter do -----

def new_profile(allowed=("/sales/",), disabled=False) -> tuple[dict, str]:
    """A static-config profile record and its plaintext secret."""
    secret = secrets.token_hex(32)
    record = {
        "id": secrets.token_hex(32),
        "client_id": secrets.token_hex(16),
        "client_secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "kid": secrets.token_hex(32),
        "signing_key": secrets.token_hex(32),
        "allowed_prefixes": list(allowed),
        "disabled": disabled,
    }
    return record, secret


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def craft_token(key_hex: str | None, header: dict, claims: dict) -> str:
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = b"" if key_hex is None else hmac.new(bytes.fromhex(key_hex), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def decode_jwt(token: str) -> tuple[bytes, dict]:
    h, c, _ = token.split(".")
    return b64url_decode(h), json.loads(b64url_decode(c))


# --- the sidecar ---------------------------------------------------------

class Sidecar(Process):
    """The real tollgate-sidecar on a fixed loopback port (so a restart comes
    back where Envoy's cluster points)."""

    def __init__(self, db: pathlib.Path, port: int | None = None, admin_token: str | None = None,
                 data_token: str | None = None):
        self.db = pathlib.Path(db)
        self.port = port or free_port()
        self.admin_token = admin_token or secrets.token_hex(32)
        self.data_token = data_token or secrets.token_hex(32)
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("sidecar", [SIDECAR, "serve", "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}"],
                         env={"TOLLGATE_ADMIN_TOKEN": self.admin_token, "TOLLGATE_DATA_TOKEN": self.data_token})
        self.wait_output(r"tollgate-sidecar listening on http://127\.0\.0\.1:\d+")

    def restart(self) -> "Sidecar":
        self.stop()
        return Sidecar(self.db, self.port, self.admin_token, self.data_token)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return cli(self.db, *args, check=check)

    def admin(self, method: str, path: str, token: str | None = "default", **kw):
        import requests
        headers = kw.pop("headers", {})
        if token == "default":
            token = self.admin_token
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + "/admin/v1" + path, headers=headers, timeout=10, **kw)

    def plugin_config(self, **sidecar) -> dict:
        return {"sidecar": {"cluster": "tollgate_sidecar", "data_token": self.data_token, **sidecar},
                "realm": "tollgate-test"}


def cli(db: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([SIDECAR, "profile", *args, "--db", str(db)], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise AssertionError(f"tollgate-sidecar profile {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out

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
    """A static-config profile record and its plaintext secret (256 bits,
    base64url without padding, as the sidecar generates them)."""
    secret = secrets.token_urlsafe(32)
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

    def __init__(self, db: pathlib.Path | str, port: int | None = None, admin_token: str | None = None,
                 data_token: str | None = None, extra: tuple = (), key_file: pathlib.Path | None = None):
        # `db` is a SQLite path (its key file beside it) or a postgres:// URL (passed as --store), which needs
        # `key_file`, shared by every sidecar of the fleet.
        self.db = db if str(db).startswith("postgres://") else pathlib.Path(db)
        if key_file is None and isinstance(self.db, str):
            raise ValueError("a PostgreSQL sidecar needs key_file (the fleet's shared key file)")
        self.key_file = key_file
        extra = tuple(extra) + (("--key-file", str(key_file)) if key_file else ())
        self.port = port or free_port()
        self.admin_token = admin_token or secrets.token_hex(32)
        self.data_token = data_token or secrets.token_hex(32)
        self.extra = extra
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("sidecar", [SIDECAR, "serve", "--store", str(self.db), "--listen",
                                     f"127.0.0.1:{self.port}", *self.extra],
                         env={"TOLLGATE_ADMIN_TOKEN": self.admin_token, "TOLLGATE_DATA_TOKEN": self.data_token})
        self.wait_output(r"tollgate-sidecar listening on http://127\.0\.0\.1:\d+")

    def restart(self) -> "Sidecar":
        self.stop()
        extra = self.extra[:-2] if self.key_file else self.extra
        return Sidecar(self.db, self.port, self.admin_token, self.data_token, extra, self.key_file)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return cli(self.db, *args, *(("--key-file", str(self.key_file)) if self.key_file else ()), check=check)

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


def cli(db: pathlib.Path | str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([SIDECAR, "profile", *args, "--store", str(db)], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise AssertionError(f"tollgate-sidecar profile {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


# --- PostgreSQL ------------------------------------------------------------

def pg_bin() -> pathlib.Path:
    """Debian's server binaries: $TOLLGATE_PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("TOLLGATE_PG_BIN"):
        return pathlib.Path(os.environ["TOLLGATE_PG_BIN"])
    found = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: ./build.sh installs Debian's postgresql package")
    return found[-1].parent


def _pg_user() -> dict:
    """PostgreSQL refuses to run as root: as root (CI), run it as the `postgres` user Debian's package creates."""
    if os.geteuid() != 0:
        return {}
    import pwd
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


class Postgres:
    """A throw-away PostgreSQL server: initdb into a temp dir, `postgres` on 127.0.0.1 and a free port as our
    child (never a shared system instance); stop() keeps the data for start(), cleanup() removes it."""

    def __init__(self):
        self.bin = pg_bin()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="tollgate-pg-"))
        self.user = _pg_user()
        if self.user:
            os.chown(self.dir, self.user["user"], self.user["group"])
        subprocess.run([str(self.bin / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
                        "--no-sync", "-D", str(self.dir / "data")], check=True, capture_output=True,
                       env={**os.environ, "LC_ALL": "C"}, timeout=120, **self.user)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen([str(self.bin / "postgres"), "-D", str(self.dir / "data"), "-k", str(self.dir),
                                      "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                      "-c", "max_connections=200"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "LC_ALL": "C"}, **self.user)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            return subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                  timeout=10).returncode == 0
        wait_for(ready, 60, "postgres to accept connections", interval=0.1)

    def log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")

    def url(self, db: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
                       check=True, capture_output=True, timeout=60)
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are cut off, committed data kept."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


class CuttableLink:
    """A loopback TCP relay to `port` that a test can cut (every connection closed, new ones refused) and heal on
    the same port: a sidecar's network path to PostgreSQL, cut without touching PostgreSQL or the other
    sidecars."""

    def __init__(self, port: int):
        import threading
        self.target = port
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._server = None
        self.heal()

    def heal(self) -> None:
        import threading
        self._cut = False
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        import threading
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if self._cut:  # accepted in the instant of the cut
                client.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
        if self._server is not None:
            # shutdown() first: close() alone leaves a listener that a thread blocked in accept() keeps alive,
            # and a reconnect would slip through the "cut".
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()

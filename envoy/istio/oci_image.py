"""Packs tollgate.wasm as a Wasm OCI image in Istio's "compat" layout and
writes it as an OCI image layout directory, without a container daemon.

The image is one gzip'd tar layer holding `plugin.wasm`
(`application/vnd.oci.image.layer.v1.tar+gzip`): Istio's agent takes the last
layer of an OCI manifest of that media type, gunzips and untars it and keeps
the entry whose base name is `plugin.wasm` (istio/istio pkg/wasm/imagefetcher.go,
extractOCIStandardImage). Every byte is a function of the .wasm alone (fixed
mtime, uid/gid 0, gzip header without name or time, sorted
JSON), so packing twice gives the same manifest digest, which is what a
WasmPlugin's `sha256` is compared with.

Usage: python3 envoy/istio/oci_image.py --wasm tollgate.wasm --out var/oci [--tag 0.1.0]
Prints `oci: digest=sha256:<hex>` (the manifest digest) on stdout.
Standard library only, so `./build.sh oci` needs nothing but python3.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PLUGIN_FILE = "plugin.wasm"


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(wasm: bytes, mtime: int) -> bytes:
    """An uncompressed POSIX ustar archive with one entry, `plugin.wasm`, at the
    root, written field by field the way Docker's builder writes a COPY layer
    (Go's archive/tar: mode with the regular-file bits, owner root, two zero
    end blocks, no record padding), so the layer of `docker build` with
    envoy/istio/Dockerfile is the same bytes (the same diff_id)."""
    header = bytearray(512)

    def put(offset: int, value: bytes) -> None:
        header[offset:offset + len(value)] = value

    put(0, PLUGIN_FILE.encode())
    put(100, b"%07o\0" % 0o100644)  # mode, with S_IFREG as Go writes it
    put(108, b"%07o\0" % 0)  # uid
    put(116, b"%07o\0" % 0)  # gid
    put(124, b"%011o\0" % len(wasm))
    put(136, b"%011o\0" % mtime)
    put(148, b" " * 8)  # the checksum is summed over spaces
    put(156, b"0")  # regular file
    put(257, b"ustar\x0000")
    put(265, b"root")
    put(297, b"root")
    put(329, b"%07o\0" % 0)  # devmajor
    put(337, b"%07o\0" % 0)  # devminor
    put(148, b"%06o\0 " % sum(header))
    padding = b"\0" * (-len(wasm) % 512)
    return bytes(header) + wasm + padding + b"\0" * 1024


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything but the data.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def build_image(wasm: bytes, *, mtime: int = 0) -> dict[str, bytes]:
    """The image's blobs: {"manifest": …, "config": …, "layer": …}."""
    tar = layer_tar(wasm, mtime)
    layer = gzip_bytes(tar)
    config = canonical_json({
        # A wasip1 module: Go's GOOS/GOARCH names for it. Istio ignores the
        # platform of a single-manifest image.
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER_GZIP, layer)],
        "annotations": {"org.opencontainers.image.title": PLUGIN_FILE},
    })
    return {"manifest": manifest, "config": config, "layer": layer}


def write_layout(out: pathlib.Path, blobs: dict[str, bytes], tag: str) -> str:
    """Writes an OCI image layout (oci-layout, index.json, blobs/sha256/…)
    whose index names the manifest with `tag`; replaces `out` whole so no
    stale blob or tag survives. Returns the manifest digest."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "blobs" / "sha256").mkdir(parents=True)
    for data in blobs.values():
        (tmp / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).write_bytes(data)
    (tmp / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    manifest = descriptor(OCI_MANIFEST, blobs["manifest"],
                          annotations={"org.opencontainers.image.ref.name": tag})
    (tmp / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [manifest]}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest["digest"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", required=True, type=pathlib.Path)
    ap.add_argument("--out", required=True, type=pathlib.Path, help="OCI image layout directory (replaced)")
    ap.add_argument("--tag", default="latest")
    a = ap.parse_args()
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    blobs = build_image(a.wasm.read_bytes(), mtime=mtime)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    digest = write_layout(a.out, blobs, a.tag)
    print(f"oci: layout={a.out} tag={a.tag} plugin.wasm={sha256(a.wasm.read_bytes())}")
    print(f"oci: digest={digest}")


if __name__ == "__main__":
    main()

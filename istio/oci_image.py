#!/usr/bin/env python3
"""Package the built filter as an OCI image in Istio's Wasm image format, on disk,
without a container engine (Python standard library only).

The image is the "compat" variant of the Wasm image specification that Istio's
fetcher (istio/istio pkg/wasm/imagefetcher.go) accepts: an OCI image manifest whose
single layer is an `application/vnd.oci.image.layer.v1.tar+gzip` tarball holding
`plugin.wasm`, with the manifest annotation `module.wasm.image/variant: compat`. A
plain OCI image, so that oras, crane, skopeo and every registry handle it.

Output: an OCI image layout directory (oci-layout, index.json, blobs/sha256/...),
tagged via `org.opencontainers.image.ref.name`, and optionally the same layout as a
tar archive (skopeo's `oci-archive:`, `oras cp --from-oci-layout x.tar:tag`).

The build is reproducible: the same .wasm gives the same manifest digest, which is
what a WasmPlugin's `sha256` pins. Timestamps are SOURCE_DATE_EPOCH, else 0.

    python3 istio/oci_image.py --wasm target/wasm32-wasip1/release/canary_router.wasm \\
        --out target/oci/canary-router --tag 0.1.0 [--archive target/oci/canary-router.tar]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_VARIANT_ANNOTATION = "module.wasm.image/variant"
# The file name Istio looks for in the layer (by base name).
PLUGIN_FILE = "plugin.wasm"
WASM_MAGIC = b"\0asm"


def canonical_json(value):
    """Compact JSON with sorted keys: the same content always has the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(wasm, mtime):
    """A tar stream with exactly one regular file, plugin.wasm, owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def build(wasm, tag, version, mtime):
    """Returns (blobs by digest, manifest descriptor, index bytes)."""
    tar = layer_tar(wasm, mtime)
    layer = gzip.compress(tar, compresslevel=9, mtime=mtime)
    config = canonical_json(
        {
            # The module targets the Wasm VM, not a machine: GOARCH/GOOS spelling of
            # wasm32-wasip1. Istio does not read the config; registries store it.
            "architecture": "wasm",
            "os": "wasip1",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
            "config": {
                "Labels": {
                    "org.opencontainers.image.title": "canary-router",
                    "org.opencontainers.image.version": version,
                }
            },
        }
    )
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": OCI_LAYER_TAR_GZIP,
                    "digest": sha256_digest(layer),
                    "size": len(layer),
                }
            ],
            "annotations": {
                WASM_VARIANT_ANNOTATION: "compat",
                "org.opencontainers.image.title": "canary-router",
                "org.opencontainers.image.version": version,
            },
        }
    )
    descriptor = {
        "mediaType": OCI_MANIFEST,
        "digest": sha256_digest(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    index = canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
    )
    blobs = {sha256_digest(b): b for b in (layer, config, manifest)}
    return blobs, descriptor, index


def write_layout(out, blobs, index):
    """Writes the layout into a fresh directory (old blobs would linger otherwise)."""
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "blobs", "sha256"))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(index)
    for digest, data in blobs.items():
        with open(os.path.join(out, "blobs", "sha256", digest.split(":", 1)[1]), "wb") as f:
            f.write(data)


def write_archive(path, out, mtime):
    """The layout directory as a tar archive (files at its root, as oci-archive wants)."""
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for root, dirs, files in os.walk(out):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, out))
                info.mtime = mtime
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(full, "rb") as f:
                    tar.addfile(info, f)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--wasm", required=True, help="the built filter (.wasm)")
    parser.add_argument("--out", required=True, help="OCI image layout directory to (re)create")
    parser.add_argument("--tag", required=True, help="tag recorded in index.json")
    parser.add_argument("--version", default=None, help="image version label (default: the tag)")
    parser.add_argument("--archive", default=None, help="also write the layout as this .tar")
    args = parser.parse_args(argv)

    with open(args.wasm, "rb") as f:
        wasm = f.read()
    if not wasm.startswith(WASM_MAGIC):
        sys.exit(f"{args.wasm} is not a WebAssembly module (no \\0asm magic)")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

    blobs, descriptor, index = build(wasm, args.tag, args.version or args.tag, mtime)
    write_layout(args.out, blobs, index)
    if args.archive:
        write_archive(args.archive, args.out, mtime)

    digest = descriptor["digest"]
    print(f"OCI image layout: {args.out} (tag {args.tag})")
    if args.archive:
        print(f"OCI archive:      {args.archive}")
    print(f"manifest digest:  {digest}")
    print(f"WasmPlugin sha256: {digest.split(':', 1)[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])

//! The OCI image `make oci` builds (istio/oci_image.py): a valid OCI image layout
//! whose blobs match their digests, in a format Istio's Wasm image fetcher accepts,
//! whose single layer holds exactly the built .wasm as plugin.wasm; reproducible,
//! so the digest a WasmPlugin pins is the digest of what was built. Also the
//! Dockerfile route.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn built_wasm() -> PathBuf {
    let path = repo_root().join("target/wasm32-wasip1/release/canary_router.wasm");
    assert!(
        path.exists(),
        "{} not found: run `make build`. These tests never skip.",
        path.display()
    );
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("canary-router-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs the builder; returns its stdout. Fails loudly without python3.
fn build_image(wasm: &Path, out: &Path, tag: &str, archive: Option<&Path>) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("istio/oci_image.py"))
        .arg("--wasm")
        .arg(wasm)
        .arg("--out")
        .arg(out)
        .args(["--tag", tag])
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(a) = archive {
        cmd.arg("--archive").arg(a);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("python3 (needed by `make oci`) cannot run: {e}"));
    assert!(
        output.status.success(),
        "oci_image.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What Istio's fetcher (istio/istio pkg/wasm/imagefetcher.go at 86c9f01) accepts,
/// as (manifest media type, layer media type): a Docker schema 2 image whose last
/// layer is a gzip tar holding plugin.wasm; an OCI image whose last layer is a gzip
/// tar holding plugin.wasm (the "compat" variant); or an OCI image with exactly two
/// layers, one of them the raw module as `application/vnd.module.wasm.content.layer.v1+wasm`.
const ISTIO_ACCEPTS: [(&str, &str); 3] = [
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
    (OCI_MANIFEST, OCI_LAYER_TAR_GZIP),
    (
        OCI_MANIFEST,
        "application/vnd.module.wasm.content.layer.v1+wasm",
    ),
];

/// A blob of the layout, checked against its descriptor's digest and size.
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let data = fs::read(layout.join("blobs/sha256").join(hex)).expect("blob present");
    assert_eq!(sha256_hex(&data), hex, "blob {digest} matches its digest");
    assert_eq!(
        descriptor["size"].as_u64(),
        Some(data.len() as u64),
        "size of {digest}"
    );
    data
}

/// The entries of an uncompressed (ustar) tar stream: (name, type flag, mode, data).
fn tar_entries(data: &[u8]) -> Vec<(String, u8, u32, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= data.len() {
        let header = &data[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let field = |from: usize, len: usize| {
            let raw = &header[from..from + len];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(len);
            String::from_utf8_lossy(&raw[..end]).trim().to_string()
        };
        let octal = |from: usize, len: usize| {
            u64::from_str_radix(&field(from, len), 8).expect("octal field")
        };
        // The header checksum: the sum of its bytes with the checksum field as spaces.
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        assert_eq!(octal(148, 8), sum, "tar header checksum");
        let name = field(0, 100);
        let size = octal(124, 12) as usize;
        let mode = octal(100, 8) as u32;
        let typeflag = header[156];
        let start = at + 512;
        entries.push((name, typeflag, mode, data[start..start + size].to_vec()));
        at = start + size.div_ceil(512) * 512;
    }
    entries
}

/// Istio's extraction of the compat variant: the image's last layer, gunzipped,
/// walked for the first file whose base name is plugin.wasm.
fn istio_extract(layout: &Path, manifest: &Value) -> Vec<u8> {
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(
        !layers.is_empty(),
        "number of layers must be greater than zero"
    );
    let layer = &layers[layers.len() - 1];
    assert_eq!(layer["mediaType"], OCI_LAYER_TAR_GZIP);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob(layout, layer).as_slice())
        .read_to_end(&mut tar)
        .expect("the layer is gzip");
    tar_entries(&tar)
        .into_iter()
        .find(|(name, _, _, _)| {
            Path::new(name)
                .file_name()
                .is_some_and(|f| f == "plugin.wasm")
        })
        .map(|(_, _, _, data)| data)
        .expect("plugin.wasm not found in the archive")
}

#[test]
fn the_layout_is_a_valid_oci_image_in_istios_wasm_format_holding_exactly_the_built_wasm() {
    let wasm_path = built_wasm();
    let wasm = fs::read(&wasm_path).expect("read wasm");
    let dir = temp_dir("oci");
    let layout = dir.join("canary-router");
    let stdout = build_image(&wasm_path, &layout, "0.1.0", None);

    // The layout's own files.
    assert_eq!(
        read_json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1);
    let descriptor = &manifests[0];
    assert_eq!(descriptor["mediaType"], OCI_MANIFEST);
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );

    // The manifest, its config and its one layer; every blob matches its digest.
    let manifest_bytes = blob(&layout, descriptor);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(
        layers.len(),
        1,
        "Istio's format: one layer holding plugin.wasm"
    );
    let pair = (
        manifest["mediaType"].as_str().expect("manifest media type"),
        layers[0]["mediaType"].as_str().expect("layer media type"),
    );
    assert!(
        ISTIO_ACCEPTS.contains(&pair),
        "Istio does not accept {pair:?}"
    );
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"],
        "compat"
    );

    let config: Value =
        serde_json::from_slice(&blob(&layout, &manifest["config"])).expect("config JSON");
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob(&layout, &layers[0]).as_slice())
        .read_to_end(&mut tar)
        .expect("gzip");
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str(),
        Some(format!("sha256:{}", sha256_hex(&tar)).as_str()),
        "diff_id is the digest of the uncompressed layer"
    );
    assert_eq!(config["rootfs"]["type"], "layers");
    assert!(config["architecture"].is_string() && config["os"].is_string());

    // Exactly one file in the layer: plugin.wasm, a regular file, the built bytes.
    let entries = tar_entries(&tar);
    assert_eq!(
        entries.len(),
        1,
        "{:?}",
        entries.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let (name, typeflag, mode, data) = &entries[0];
    assert_eq!(name, "plugin.wasm");
    assert_eq!(*typeflag, b'0', "a regular file");
    assert_eq!(*mode, 0o644);
    assert!(data == &wasm, "the layer holds exactly the built .wasm");
    assert_eq!(
        istio_extract(&layout, &manifest),
        wasm,
        "what Istio would load"
    );

    // No stray blobs.
    let blobs: Vec<_> = fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs")
        .collect();
    assert_eq!(blobs.len(), 3, "manifest, config, layer");

    // It prints the digest a WasmPlugin pins.
    let digest = descriptor["digest"].as_str().expect("digest");
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&manifest_bytes)));
    assert!(
        stdout.contains(&format!("manifest digest:  {digest}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("WasmPlugin sha256: {}", &digest[7..])),
        "{stdout}"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn the_image_is_reproducible_and_the_archive_holds_the_same_layout() {
    let wasm_path = built_wasm();
    let dir = temp_dir("oci-repro");
    let first = dir.join("a");
    let second = dir.join("b");
    let archive = dir.join("canary-router.tar");
    build_image(&wasm_path, &first, "0.1.0", Some(&archive));
    build_image(&wasm_path, &second, "0.1.0", None);
    let files = |root: &Path| -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(root)
                        .expect("prefix")
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, fs::read(&p).expect("read"));
                }
            }
        }
        out
    };
    let a = files(&first);
    assert_eq!(
        a,
        files(&second),
        "two builds of one .wasm are byte-identical"
    );
    assert_eq!(a.len(), 5);

    // The archive (for skopeo's oci-archive: and oras --from-oci-layout x.tar) is the layout.
    let tar = fs::read(&archive).expect("archive");
    let entries: BTreeMap<String, Vec<u8>> = tar_entries(&tar)
        .into_iter()
        .map(|(name, _, _, data)| (name, data))
        .collect();
    assert_eq!(entries, a);

    // A different module, a different digest.
    let other = dir.join("other.wasm");
    let mut bytes = fs::read(&wasm_path).expect("wasm");
    bytes.extend_from_slice(b"\0\x04name"); // an extra (custom) section header fragment
    fs::write(&other, &bytes).expect("write");
    build_image(&other, &dir.join("c"), "0.1.0", None);
    assert_ne!(
        read_json(&dir.join("c/index.json"))["manifests"][0]["digest"],
        read_json(&first.join("index.json"))["manifests"][0]["digest"]
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn the_builder_refuses_a_file_that_is_not_wasm() {
    let dir = temp_dir("oci-notwasm");
    let bogus = dir.join("plugin.wasm");
    fs::write(&bogus, b"#!/bin/sh\necho not wasm\n").expect("write");
    let output = Command::new("python3")
        .arg(repo_root().join("istio/oci_image.py"))
        .arg("--wasm")
        .arg(&bogus)
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--tag", "x"])
        .output()
        .expect("python3");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a WebAssembly module"));
    assert!(!dir.join("out").exists());
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn the_dockerfile_builds_the_same_single_layer_image() {
    let dockerfile = fs::read_to_string(repo_root().join("istio/Dockerfile")).expect("Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(instructions.len(), 2, "{instructions:?}");
    assert_eq!(instructions[0], "FROM scratch");
    let copy: Vec<&str> = instructions[1].split_whitespace().collect();
    assert_eq!(copy[0], "COPY", "exactly one COPY: one layer");
    assert_eq!(copy.len(), 3);
    assert_eq!(copy[2], "/plugin.wasm");
    assert!(
        repo_root().join(copy[1]).exists(),
        "{} is what `make build` writes",
        copy[1]
    );
    assert_eq!(repo_root().join(copy[1]), built_wasm());
    // The build context is the repository root; the ignore file sends only the module.
    let ignore =
        fs::read_to_string(repo_root().join("istio/Dockerfile.dockerignore")).expect("ignore file");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules, ["*", &format!("!{}", copy[1])]);
}

//! `make istio-manifests`: renders istio/ for your image and plugin config.
//!
//!   cargo run --release --example istio_manifests -- --image oci://REGISTRY/canary-router:0.1.0 \
//!       [--sha256 auto|<64 hex>|""] [--oci-layout target/oci/canary-router] \
//!       [--plugin-config my-config.json] [--out target/istio-manifests]
//!
//! The config is checked by the filter's own parser; the output is validated
//! against Istio's CRD schemas and cross-checked (routes, subsets, pods, stats
//! tags) before anything is written. Shares its code with tests/istio_manifests.rs.

#[path = "../tests/istio_support/mod.rs"]
mod istio_support;

use istio_support::{layout_digest, render, repo_root, RenderOptions, Schemas};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(errors) => {
            for e in errors {
                eprintln!("istio-manifests: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Vec<String>> {
    let mut image = None;
    let mut sha256 = String::from("auto");
    let mut layout = PathBuf::from("target/oci/canary-router");
    let mut plugin_config_path: Option<PathBuf> = None;
    let mut out = PathBuf::from("target/istio-manifests");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| vec![format!("{flag} needs a value")])
        };
        match flag.as_str() {
            "--image" => image = Some(value()?),
            "--sha256" => sha256 = value()?,
            "--oci-layout" => layout = PathBuf::from(value()?),
            "--plugin-config" => plugin_config_path = Some(PathBuf::from(value()?)),
            "--out" => out = PathBuf::from(value()?),
            other => return Err(vec![format!("unknown argument {other}")]),
        }
    }
    let image = image
        .ok_or_else(|| vec!["--image oci://REGISTRY/canary-router:TAG is required".to_string()])?;
    let sha256 = match sha256.as_str() {
        "" | "none" => None,
        "auto" => Some(layout_digest(&layout).map_err(|e| vec![e])?),
        hex => Some(hex.to_string()),
    };
    let plugin_config = match &plugin_config_path {
        Some(p) => {
            Some(std::fs::read_to_string(p).map_err(|e| vec![format!("{}: {e}", p.display())])?)
        }
        None => None,
    };
    let schemas = Schemas::load();
    let files = render(
        &repo_root(),
        &schemas,
        &RenderOptions {
            image: image.clone(),
            sha256: sha256.clone(),
            plugin_config,
        },
    )?;
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| vec![format!("{}: {e}", out.display())])?;
    }
    for file in &files {
        let path = out.join(&file.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
        }
        std::fs::write(&path, &file.text).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        println!("wrote {}", path.display());
    }
    println!(
        "image {image}, sha256 {}\napply: kubectl apply -f {out}/app/myapp.yaml && kubectl apply -f {out}/app/   (ingress: -f {out}/gateway/)",
        sha256.as_deref().unwrap_or("(not pinned)"),
        out = out.display()
    );
    Ok(())
}

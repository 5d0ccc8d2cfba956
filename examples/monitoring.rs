//! `make monitoring`: the Prometheus rules (Istio's and plain Envoy's) and the Grafana
//! dashboard for your service, from the shipped ones.
//!
//!   cargo run --release --example monitoring -- [--service myapp] [--namespace myapp] \
//!       [--rollout NAME] [--baseline stable] [--metrics-prefix canary] \
//!       [--envoy-clusters CLUSTER=VERSION,...] [--out target/monitoring]
//!
//! Without --envoy-clusters, the clusters envoy/envoy.yaml routes each version to.
//! Every replacement must apply and the result is checked (valid JSON, the
//! variables set); tests/istio_monitoring.rs runs promtool on renderings like these.
//! Shares its code with the tests (tests/istio_support/monitoring.rs).

#[path = "../tests/istio_support/mod.rs"]
mod istio_support;

use istio_support::monitoring::{
    envoy_yaml_clusters, parse_cluster_map, render_monitoring, Target,
};
use istio_support::repo_root;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(errors) => {
            for e in errors {
                eprintln!("monitoring: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Vec<String>> {
    let mut target = Target::default();
    let mut clusters: Option<String> = None;
    let mut out = PathBuf::from("target/monitoring");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| vec![format!("{flag} needs a value")])
        };
        match flag.as_str() {
            "--service" => target.service = value()?,
            "--namespace" => target.namespace = value()?,
            // Empty (`ROLLOUT=`): a single-rollout config.
            "--rollout" => target.rollout = Some(value()?).filter(|r| !r.is_empty()),
            "--baseline" => target.baseline = value()?,
            "--metrics-prefix" => target.prefix = value()?,
            "--envoy-clusters" => clusters = Some(value()?).filter(|c| !c.is_empty()),
            "--out" => out = PathBuf::from(value()?),
            other => return Err(vec![format!("unknown argument {other}")]),
        }
    }
    target.envoy_clusters = match clusters {
        Some(text) => parse_cluster_map(&text).map_err(|e| vec![e])?,
        None => envoy_yaml_clusters(&repo_root()).map_err(|e| vec![e])?,
    };
    let files = render_monitoring(&repo_root(), &target)?;
    std::fs::create_dir_all(&out).map_err(|e| vec![format!("{}: {e}", out.display())])?;
    for file in &files {
        let path = out.join(&file.path);
        std::fs::write(&path, &file.text).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        println!("wrote {}", path.display());
    }
    let clusters: Vec<String> = target
        .envoy_clusters
        .iter()
        .map(|(c, v)| format!("{c}={v}"))
        .collect();
    println!(
        "service {}.{}, rollout {}, prefix {}, baseline {}, Envoy clusters {}",
        target.service,
        target.namespace,
        target
            .rollout
            .as_deref()
            .unwrap_or("(none: single-rollout config)"),
        target.prefix,
        target.baseline,
        clusters.join(",")
    );
    Ok(())
}

//! `make demo`: starts Envoy with `envoy/envoy.yaml` (the filter in front of a
//! stable and a canary upstream), sends a few thousand requests with varied users,
//! overrides and anonymous clients, prints the split per version and reason and the
//! Prometheus lines, then stops Envoy.

#[path = "../tests/harness/mod.rs"]
mod harness;

use harness::{user_ids, Envoy, EnvoyOptions};
use std::collections::BTreeMap;

fn main() {
    println!("Starting Envoy with envoy/envoy.yaml and the shipped plugin config:");
    println!("{}", harness::shipped_plugin_config().trim_end());
    let envoy = Envoy::start(EnvoyOptions::default());
    println!(
        "Envoy is up: listener http://{}  admin http://{}\n",
        envoy.listener, envoy.admin
    );
    let mut client = envoy.client();
    let mut tally: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut send = |kind: &'static str, headers: &[(&str, &str)]| {
        let version = client.get_with(headers).served_by();
        *tally.entry((kind, version)).or_default() += 1;
    };

    let users = user_ids("demo", 2500);
    for (i, user) in users.iter().enumerate() {
        if i % 5 == 0 {
            send("user by cookie uid", &[("cookie", &format!("uid={user}"))]);
        } else {
            send("user by header x-user-id", &[("x-user-id", user)]);
        }
    }
    // The same users again: sticky, so the split is the same.
    for user in users.iter().take(500) {
        send("returning user", &[("x-user-id", user)]);
    }
    for _ in 0..400 {
        send("anonymous", &[]);
    }
    for _ in 0..100 {
        send(
            "override header x-canary: canary",
            &[("x-canary", "canary")],
        );
    }
    for _ in 0..50 {
        send(
            "override cookie canary=stable",
            &[("cookie", "canary=stable")],
        );
    }
    for user in ["qa-alice", "qa-bob"] {
        for _ in 0..25 {
            send("listed QA user", &[("x-user-id", user)]);
        }
    }
    // A client cannot pick a version by sending the route header: the share stays
    // at the weight.
    for user in user_ids("spoofers", 200) {
        send(
            "client-sent x-canary-version: canary (overwritten)",
            &[("x-canary-version", "canary"), ("x-user-id", &user)],
        );
    }

    println!("What the upstreams answered, by kind of request:");
    println!(
        "  {:<50} {:>7} {:>7} {:>8}",
        "request", "stable", "canary", "canary%"
    );
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = tally.keys().map(|(kind, _)| *kind).collect();
        k.dedup();
        k
    };
    let mut totals = (0, 0);
    for kind in kinds {
        let stable = tally
            .get(&(kind, "stable".to_string()))
            .copied()
            .unwrap_or(0);
        let canary = tally
            .get(&(kind, "canary".to_string()))
            .copied()
            .unwrap_or(0);
        totals.0 += stable;
        totals.1 += canary;
        println!(
            "  {kind:<50} {stable:>7} {canary:>7} {:>7.1}%",
            100.0 * canary as f64 / (stable + canary) as f64
        );
    }
    println!(
        "  {:<50} {:>7} {:>7} {:>7.1}%\n",
        "all",
        totals.0,
        totals.1,
        100.0 * totals.1 as f64 / (totals.0 + totals.1) as f64
    );

    let metrics = envoy.prometheus();
    println!("Decisions per version and reason (canary_requests_total):");
    for version in ["stable", "canary"] {
        for reason in ["hash", "user_list", "override", "random", "baseline"] {
            let n = metrics.value(
                "canary_requests_total",
                &[("version", version), ("reason", reason)],
            );
            if n > 0.0 {
                println!("  {version:<7} {reason:<10} {n:>6}");
            }
        }
    }
    println!("\nFrom http://{}/stats/prometheus:", envoy.admin);
    let text = envoy.admin_get("/stats/prometheus").body_text();
    for line in text
        .lines()
        .filter(|l| l.starts_with("canary_") && !l.starts_with('#') && !l.ends_with(" 0"))
    {
        println!("  {line}");
    }
    // Response classes and latency per version: Envoy counts them per cluster by
    // itself (in Istio: istio_requests_total by destination_version), so the
    // filter's own per-version response and latency metrics are opt-in.
    println!("\nResponses per version, Envoy's own cluster stats:");
    for line in text.lines().filter(|l| {
        l.starts_with("envoy_cluster_upstream_rq_xx{")
            && (l.contains("envoy_cluster_name=\"stable\"")
                || l.contains("envoy_cluster_name=\"canary\""))
    }) {
        println!("  {line}");
    }
    drop(envoy);
    println!(
        "\nEnvoy stopped. Run it yourself: .tools/bin/envoy -c envoy/envoy.yaml --concurrency 2"
    );
}

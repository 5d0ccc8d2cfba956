//! End-to-end soak: sustained keep-alive load through a real Envoy with four
//! workers, a mix of users by header and by cookie, listed users, overrides and
//! anonymous requests. Zero errors; every deterministic answer is the pure core's;
//! the Prometheus counters equal exactly what was served per version and reason
//! (nothing lost, nothing counted twice); Envoy's memory is flat after warm-up.
//!
//! CI runs a short soak (`SOAK_REQUESTS`, default 20,000, at `SOAK_CONNECTIONS`,
//! default 16). `make soak` runs 200,000 requests at 64 connections.

mod harness;

use canary_router::config::Config;
use canary_router::decide::{Reason, Routing};
use harness::{
    core_decision, drive_load, rss_kib, user_ids, wait_until, Envoy, EnvoyOptions, LoadSpec,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 25 } ],
  "override": { "header": "x-canary", "cookie": "canary" },
  "users": { "canary": ["qa-alice", "qa-bob"], "stable": ["vip-carol"] },
  "hash": { "header": "x-user-id", "cookie": "uid", "salt": "soak", "buckets": 10000 },
  "anonymous": "random",
  "metrics_prefix": "canary",
  "metrics": { "responses": true, "latency": true }
}"#;

const VERSIONS: [&str; 2] = ["stable", "canary"];
const LISTED: [&str; 3] = ["qa-alice", "qa-bob", "vip-carol"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The headers of request number `n`: a fixed mix, every tenth request of each kind.
fn request_headers(n: u64, users: &[String]) -> Vec<(String, Vec<u8>)> {
    let user = &users[(n.wrapping_mul(2_654_435_761) % users.len() as u64) as usize];
    match n % 10 {
        0..=4 => vec![("x-user-id".into(), user.clone().into_bytes())],
        5 | 6 => vec![(
            "cookie".into(),
            format!("session=abc{n}; uid={user}; theme=dark").into_bytes(),
        )],
        7 => {
            let version = VERSIONS[(n / 10 % 2) as usize];
            vec![
                ("x-canary".into(), version.as_bytes().to_vec()),
                ("x-user-id".into(), user.clone().into_bytes()),
            ]
        }
        8 => vec![(
            "x-user-id".into(),
            LISTED[(n / 10 % 3) as usize].as_bytes().to_vec(),
        )],
        _ => vec![("accept".into(), b"*/*".to_vec())],
    }
}

#[test]
fn a_soak_serves_every_request_counts_each_once_and_holds_memory_flat() {
    let connections = env_or("SOAK_CONNECTIONS", 16).max(1);
    let per_connection = env_or("SOAK_REQUESTS", 20_000) / connections;
    let total = per_connection * connections;
    let envoy = Envoy::start(EnvoyOptions {
        concurrency: 4,
        ..EnvoyOptions::with_config(CONFIG)
    });
    let pid = envoy.pid().expect("Envoy runs");
    let config = Config::from_json(CONFIG.as_bytes()).expect("valid");
    let routing = Routing::at(&config, 0);
    let users = user_ids("soak", 10_000);

    // served[version][reason], from the answers.
    let served: Vec<Vec<AtomicU64>> = (0..2)
        .map(|_| (0..Reason::ALL.len()).map(|_| AtomicU64::new(0)).collect())
        .collect();
    let done = AtomicU64::new(0);
    let wrong: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let spec = LoadSpec {
        connections: connections as usize,
        per_connection,
        max_time: Duration::from_secs(env_or("SOAK_MAX_SECONDS", 600)),
    };
    let number = |connection: usize, i: u64| connection as u64 * per_connection + i;

    // Memory: sampled five times a second; "warm" is the first sample after a fifth
    // of the requests, "end" the last one.
    let samples: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let rss_start = rss_kib(pid).expect("Envoy's RSS");
    let started = Instant::now();
    let stats = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(pid) {
                    samples
                        .lock()
                        .unwrap()
                        .push((done.load(Ordering::Relaxed), rss));
                }
                // Bounded by `stop`, which the load sets when it ends.
                for _ in 0..4 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        let stats = drive_load(
            envoy.listener,
            &spec,
            &AtomicBool::new(false),
            |connection, i| request_headers(number(connection, i), &users),
            |connection, i, outcome| {
                let n = number(connection, i);
                done.fetch_add(1, Ordering::Relaxed);
                let response = match outcome {
                    Ok(r) if r.status == 200 => r,
                    Ok(r) => {
                        wrong
                            .lock()
                            .unwrap()
                            .push(format!("request {n}: status {}", r.status));
                        return;
                    }
                    Err(e) => {
                        wrong.lock().unwrap().push(format!("request {n}: {e}"));
                        return;
                    }
                };
                let headers = request_headers(n, &users);
                let refs: Vec<(&[u8], &[u8])> = headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_slice()))
                    .collect();
                // Anonymous draws are left out of the comparison below, so the
                // fixed seed of the core's draw does not matter.
                let a = core_decision(&config, &routing, &refs);
                let version = response.served_by();
                let Some(index) = VERSIONS.iter().position(|v| *v == version) else {
                    wrong
                        .lock()
                        .unwrap()
                        .push(format!("request {n}: served by {version:?}"));
                    return;
                };
                // Anonymous draws are random; everything else must be the core's answer.
                if a.reason != Reason::Random && index != a.version {
                    wrong.lock().unwrap().push(format!(
                        "request {n}: {version}, the pure core says {} ({})",
                        VERSIONS[a.version],
                        a.reason.as_str()
                    ));
                }
                served[index][a.reason.index()].fetch_add(1, Ordering::Relaxed);
            },
        );
        stop.store(true, Ordering::Relaxed);
        sampler.join().expect("sampler");
        stats
    });
    let elapsed = started.elapsed();

    let wrong = wrong.into_inner().unwrap();
    assert!(
        wrong.is_empty(),
        "{} of {} requests went wrong, e.g. {:?}",
        wrong.len(),
        stats.requests,
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(stats.errors, 0);
    let sent = stats.requests;
    assert_eq!(sent, total, "requests sent in {elapsed:?}");

    // The counters equal the answers, per version and reason, exactly.
    let m = envoy.prometheus();
    let mut lines = Vec::new();
    for (v, version) in VERSIONS.iter().enumerate() {
        for reason in Reason::ALL {
            let expected = served[v][reason.index()].load(Ordering::Relaxed);
            let counted = m.value(
                "canary_requests_total",
                &[("version", version), ("reason", reason.as_str())],
            );
            assert_eq!(
                counted,
                expected as f64,
                "requests {{version={version},reason={}}}",
                reason.as_str()
            );
            if expected > 0 {
                lines.push(format!("{version}/{}={expected}", reason.as_str()));
            }
        }
        let answered: u64 = served[v].iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(
            m.value(
                "canary_responses_total",
                &[("version", version), ("code_class", "2xx")]
            ),
            answered as f64,
            "responses of {version}"
        );
    }
    assert_eq!(m.sum("canary_requests_total", &[]), sent as f64);
    assert_eq!(m.sum("canary_responses_total", &[]), sent as f64);
    // Histograms reach /stats/prometheus at each stats flush (5 s): poll for them.
    let histogram = || {
        envoy
            .prometheus()
            .sum("canary_request_duration_milliseconds_count", &[])
    };
    assert!(
        wait_until(Duration::from_secs(20), || histogram() == sent as f64),
        "duration histogram holds {} of {sent}",
        histogram()
    );
    let stats_after = envoy.stats();
    assert_eq!(stats_after.get("http.ingress.downstream_rq_5xx"), Some(&0));
    envoy.assert_vm_healthy();

    // Memory: flat after warm-up.
    let samples = samples.into_inner().unwrap();
    let warm = samples
        .iter()
        .find(|(n, _)| *n >= sent / 5)
        .copied()
        .expect("a sample after warm-up");
    let end = *samples.last().expect("samples");
    let peak = samples.iter().map(|(_, rss)| *rss).max().unwrap_or(0);
    let growth = end.1.saturating_sub(warm.1);
    eprintln!(
        "soak: {sent} requests at {connections} connections, 4 workers, in {:.1} s ({:.0} req/s); \
         errors 0, retries {}, connects {}; counted {}; \
         RSS KiB: start {rss_start}, warm {} (after {} requests), end {}, peak {peak}, growth after warm-up {growth}",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        stats.retries,
        stats.connects,
        lines.join(" "),
        warm.1,
        warm.0,
        end.1,
    );
    assert!(
        growth <= 8 * 1024 + warm.1 / 20,
        "Envoy's RSS grew by {growth} KiB after warm-up ({} -> {} KiB)",
        warm.1,
        end.1
    );
}

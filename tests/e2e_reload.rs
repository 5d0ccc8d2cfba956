//! End-to-end: the plugin config changes under load, through Envoy's file-based
//! listener discovery (LDS from a watched path, the new file moved into place). No
//! request fails; users stay on their version while only unrelated fields change;
//! new weights apply to every connection once the old listener has drained; a bad
//! config is not taken, with the field named in the log, while the last good one
//! keeps serving (Envoy takes the listener: no NACK, so no listener without its
//! filter); and no count is lost across the changes.

mod harness;

use canary_router::config::Config;
use canary_router::decide::Routing;
use harness::{core_decision, drive_load, user_ids, wait_until, Envoy, EnvoyOptions, LoadSpec};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BEFORE: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 20 } ],
  "override": { "header": "x-canary" },
  "users": { "canary": ["qa-alice"] },
  "hash": { "header": "x-user-id", "salt": "reload", "buckets": 10000 },
  "anonymous": "baseline",
  "metrics_prefix": "canary"
}"#;

/// The version of each user under a config, by the pure core.
fn versions_of(config: &str, users: &[String]) -> Vec<String> {
    let config = Config::from_json(config.as_bytes()).expect("valid");
    users
        .iter()
        .map(|u| {
            let routing = Routing::at(&config, 0);
            let a = core_decision(&config, &routing, &[(b"x-user-id", u.as_bytes())]);
            config.versions[a.version].name.clone()
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Record {
    user: usize,
    status: u16,
    served: String,
    at: Instant,
}

/// Waits until no listener is warming up and none (nor any filter chain) of a
/// replaced config is still draining: from then on every connection has the config
/// last taken.
fn wait_drained(envoy: &Envoy) {
    let draining = || {
        let stats = envoy.stats();
        [
            "listener_manager.total_filter_chains_draining",
            "listener_manager.total_listeners_draining",
            "listener_manager.total_listeners_warming",
        ]
        .iter()
        .map(|name| stats.get(*name).copied().unwrap_or(0))
        .sum::<u64>()
    };
    assert!(
        wait_until(Duration::from_secs(30), || draining() == 0),
        "the old listener never finished draining"
    );
}

#[test]
fn plugin_config_changes_under_load_lose_no_request_and_move_no_user_but_the_reweighted() {
    let envoy = Envoy::start(EnvoyOptions {
        listener_from_file: true,
        drain_time_s: Some(2),
        ..EnvoyOptions::with_config(BEFORE)
    });
    let users = user_ids("reload", 2000);
    // Unrelated changes: a user list entry for someone else, then another metrics prefix.
    let more_users = BEFORE.replace(r#"["qa-alice"]"#, r#"["qa-alice", "qa-newcomer"]"#);
    let new_prefix = more_users.replace(
        r#""metrics_prefix": "canary""#,
        r#""metrics_prefix": "shop""#,
    );
    // Then the weight goes up.
    let reweighted = new_prefix.replace(r#""weight": 20"#, r#""weight": 50"#);
    let before = versions_of(BEFORE, &users);
    assert_eq!(
        before,
        versions_of(&new_prefix, &users),
        "unrelated changes move nobody"
    );
    let after = versions_of(&reweighted, &users);
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(moved > 300, "the new weight must move users ({moved})");
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(b, a)| b == a || b == "stable"),
        "raising the weight only moves users from stable to canary"
    );

    let records: Mutex<Vec<Record>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let spec = LoadSpec {
        connections: 8,
        per_connection: 1_000_000,
        max_time: Duration::from_secs(90),
    };
    let user_of = |connection: usize, i: u64| (connection * 7919 + i as usize * 31) % users.len();
    let count = || records.lock().unwrap().len();

    let mut marks: BTreeMap<&str, Instant> = BTreeMap::new();
    let mut rejections: Vec<String> = Vec::new();
    let stats = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            drive_load(
                envoy.listener,
                &spec,
                &stop,
                |connection, i| {
                    vec![(
                        "x-user-id".to_string(),
                        users[user_of(connection, i)].clone().into_bytes(),
                    )]
                },
                |connection, i, outcome| match outcome {
                    Ok(response) => records.lock().unwrap().push(Record {
                        user: user_of(connection, i),
                        status: response.status,
                        served: response.served_by(),
                        at: Instant::now(),
                    }),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("connection {connection} request {i}: {e}")),
                },
            )
        });
        // Each step waits for traffic in flight before and after it.
        let traffic = |n: usize| {
            let target = count() + n;
            assert!(
                wait_until(Duration::from_secs(30), || count() >= target),
                "the load stalled at {} responses",
                count()
            );
        };
        let step = |config: &str| {
            traffic(2000);
            let result = envoy.reload_plugin_config(config);
            traffic(2000);
            result
        };

        step(&more_users).expect("adding a listed user is accepted");
        step(&new_prefix).expect("a new metrics prefix is accepted");
        wait_drained(&envoy);
        marks.insert("reweight_written", Instant::now());
        step(&reweighted).expect("new weights are accepted");
        wait_drained(&envoy);
        marks.insert("reweight_drained", Instant::now());
        traffic(3000);
        for bad in [
            reweighted.replace(r#""weight": 50"#, r#""weight": 120"#),
            reweighted.replace(r#""buckets": 10000"#, r#""bucketz": 10000"#),
            // A config cut off in the middle, as a half-written file would be.
            reweighted[..reweighted.len() / 2].to_string(),
        ] {
            let from = envoy.log().len();
            step(&bad).expect("Envoy takes the listener; the filter keeps its last good config");
            let log = envoy.log();
            rejections.push(log.get(from..).unwrap_or(&log).to_string());
        }
        traffic(3000);
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load thread")
    });

    let records = records.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.requests as usize, records.len());

    // Every answer is a 200 from the version the formula gives under the config in
    // force: the old one until the reweighted config was written, the new one once
    // the old listener has drained, either one (per user) in between.
    let (written, drained) = (marks["reweight_written"], marks["reweight_drained"]);
    let mut wrong = Vec::new();
    let (mut early, mut transition, mut late) = (0, 0, 0);
    for r in &records {
        let ok = if r.at < written {
            early += 1;
            r.served == before[r.user]
        } else if r.at > drained {
            late += 1;
            r.served == after[r.user]
        } else {
            transition += 1;
            r.served == before[r.user] || r.served == after[r.user]
        };
        if r.status != 200 || !ok {
            wrong.push(format!(
                "user {} got {} from {:?} (before {}, after {})",
                users[r.user], r.status, r.served, before[r.user], after[r.user]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers wrong, e.g. {:?}",
        wrong.len(),
        records.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(early > 5000 && late > 5000, "early {early}, late {late}");

    // Each rejection names the field and says the last good config serves on (checked
    // above: every answer after the reweighted config drained follows it).
    let expected_lines = [
        "config rejected (1 problem): versions[1].weight: 120 is above 100",
        "config rejected (1 problem): hash.bucketz: unknown field `bucketz`",
        "EOF while parsing",
    ];
    for (log, expected) in rejections.iter().zip(expected_lines) {
        for line in log.lines().filter(|l| l.contains("rejected")) {
            eprintln!("{line}");
        }
        assert!(
            log.lines().any(|l| l.contains(expected)),
            "no line with {expected:?} in:\n{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("keeps its last good config: route_header=x-canary-version versions stable=50% canary=50%")),
            "the reweighted config does not serve on after {expected:?}:\n{log}"
        );
    }
    let stats_after = envoy.stats();
    assert_eq!(
        stats_after.get("listener_manager.lds.update_rejected"),
        Some(&0),
        "no NACK"
    );
    let logged = envoy
        .log()
        .lines()
        .filter(|l| l.contains("config rejected ("))
        .count();
    assert!(logged >= 3 * 3, "every VM logs every bad config: {logged}");
    let health = envoy.prometheus();
    assert_eq!(
        health.value("canary_config_rejected_total", &[]),
        logged as f64
    );
    assert_eq!(health.value("canary_config_stale", &[]), 1.0);
    assert_eq!(health.value("canary_config_safe_mode", &[]), 0.0);
    assert_eq!(stats_after.get("http.ingress.downstream_rq_5xx"), Some(&0));
    envoy.assert_vm_healthy();

    // No count lost or doubled across the changes: the two prefixes together hold
    // exactly what was served, per version.
    let m = envoy.prometheus();
    for version in ["stable", "canary"] {
        let served = records.iter().filter(|r| r.served == version).count() as f64;
        let counted = m.sum("canary_requests_total", &[("version", version)])
            + m.sum("shop_requests_total", &[("version", version)]);
        assert_eq!(counted, served, "requests counted for {version}");
    }
    eprintln!(
        "reload under load: {} requests on 8 connections in {:.1} s ({} connects, {} retries), \
         {early} before the reweight, {transition} while it drained, {late} after; 3 bad configs not taken",
        records.len(),
        stats.elapsed.as_secs_f64(),
        stats.connects,
        stats.retries
    );
}

#[test]
fn many_config_changes_hold_memory_flat_and_keep_serving() {
    // Config churn is where a filter leaks: every change makes a new root context
    // (and defines its metrics again), and the old one must go when its listener has
    // drained. 60 changes between two weights, requests in between.
    let envoy = Envoy::start(EnvoyOptions {
        listener_from_file: true,
        drain_time_s: Some(1),
        ..EnvoyOptions::with_config(BEFORE)
    });
    let pid = envoy.pid().expect("running");
    let users = user_ids("churn", 200);
    let configs = [
        BEFORE.replace(r#""weight": 20"#, r#""weight": 30"#),
        BEFORE.to_string(),
    ];
    let expected: Vec<Vec<String>> = configs.iter().map(|c| versions_of(c, &users)).collect();
    let changes: usize = std::env::var("CHURN_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut rss = Vec::new();
    for round in 0..changes {
        let which = round % 2;
        envoy
            .reload_plugin_config(&configs[which])
            .expect("accepted");
        // A fresh connection sees the new config at once.
        let mut client = envoy.client();
        for (user, version) in users.iter().zip(&expected[which]).take(20) {
            assert_eq!(
                &client.get_with(&[("x-user-id", user)]).served_by(),
                version
            );
        }
        if round == 9 || round + 1 == changes || (round + 1) % 50 == 0 {
            wait_drained(&envoy);
            rss.push(harness::rss_kib(pid).expect("rss"));
        }
    }
    envoy.assert_vm_healthy();
    let m = envoy.prometheus();
    assert_eq!(m.sum("canary_requests_total", &[]), (changes * 20) as f64);
    let (warm, end) = (rss[0], *rss.last().expect("samples"));
    let growth = end.saturating_sub(warm);
    eprintln!("config churn: {changes} changes; RSS KiB after 10, every 50, at the end: {rss:?} (+{growth} KiB after 10)");
    assert!(
        growth <= 4 * 1024,
        "RSS grew by {growth} KiB over {} config changes: a leak per change",
        changes - 10
    );
}

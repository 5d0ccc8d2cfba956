//! End-to-end: a bad config never becomes a 500, with the config delivered the way
//! Istio delivers it: by ECDS (here from a watched file), with no default config.
//!
//! - Under load: config A (good) -> B (a weight of 120) -> a new listener added by
//!   LDS that uses the same ECDS resource -> A' (good, a new weight). No request
//!   fails, nobody is moved by B, the log names the field, the config health metrics
//!   and the alert on them show B, then A' takes effect everywhere.
//! - A fresh proxy whose only config is bad starts and serves every request in safe
//!   mode: no decision, the route header removed (a client cannot pick the canary),
//!   so the route table's default route (stable) serves it; then every bad fixture
//!   of tests/fixtures/configs, pushed in turn, logs the very line `validate` prints.
//! - The control: with the refuse opt-in the same fresh proxy NACKs and answers 500
//!   to every request (Envoy's missing-config filter), until a good config comes.
//! - `hosts`: only requests to the listed hosts are decided, counted and guarded.

mod harness;

mod cli_support;

use canary_router::config::Config;
use canary_router::decide::Routing;
use canary_router::metrics::{CONFIG_REJECTED_TOTAL, CONFIG_SAFE_MODE, CONFIG_STALE};
use harness::{core_decision, drive_load, user_ids, wait_until, Envoy, EnvoyOptions, LoadSpec};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const A: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 20 } ],
  "override": { "header": "x-canary" },
  "hash": { "header": "x-user-id", "salt": "ecds", "buckets": 10000 },
  "anonymous": "baseline"
}"#;

/// The version of each user under a config, by the pure core.
fn versions_of(config: &str, users: &[String]) -> Vec<String> {
    let config = Config::from_json(config.as_bytes()).expect("valid");
    let routing = Routing::at(&config, 0);
    users
        .iter()
        .map(|u| {
            let a = core_decision(&config, &routing, &[(b"x-user-id", u.as_bytes())]);
            config.versions[a.version].name.clone()
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Record {
    connection: usize,
    user: usize,
    status: u16,
    served: String,
    at: Instant,
}

/// The log after byte `from`.
fn log_since(envoy: &Envoy, from: usize) -> String {
    let log = envoy.log();
    log.get(from..).unwrap_or(&log).to_string()
}

fn gauge(envoy: &Envoy, name: &str) -> f64 {
    envoy.prometheus().value(name, &[])
}

/// Evaluates the shipped alert on the config health gauge (its `expr` is a
/// comparison of the gauge with 0) against what Envoy exports now.
fn alert_fires(envoy: &Envoy) -> bool {
    let rules = std::fs::read_to_string(
        harness::repo_root().join("istio/monitoring/prometheus-rules.yaml"),
    )
    .expect("rules");
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules).expect("rules YAML");
    let expr = rules["spec"]["groups"]
        .as_sequence()
        .or_else(|| rules["groups"].as_sequence())
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .find(|r| r["alert"].as_str() == Some("CanaryRouterConfigNotTaken"))
        .and_then(|r| r["expr"].as_str())
        .expect("the alert CanaryRouterConfigNotTaken")
        .to_string();
    let expected = format!("max by (namespace, pod) ({CONFIG_STALE}) > 0");
    assert_eq!(
        expr.split_whitespace().collect::<Vec<_>>().join(" "),
        expected,
        "the alert's expression changed: update this test's evaluation of it"
    );
    gauge(envoy, CONFIG_STALE) > 0.0
}

#[test]
fn ecds_a_bad_update_and_a_new_listener_after_it_fail_no_request_and_move_nobody() {
    let envoy = Envoy::start(EnvoyOptions {
        listener_from_file: true,
        filter_from_ecds: true,
        ..EnvoyOptions::with_config(A)
    });
    let users = user_ids("ecds", 2000);
    let b = A.replace(r#""weight": 20"#, r#""weight": 120"#);
    let a2 = A.replace(r#""weight": 20"#, r#""weight": 40"#);
    let before = versions_of(A, &users);
    let after = versions_of(&a2, &users);
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(moved > 300, "A' must move users ({moved})");

    let records: Mutex<Vec<Record>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let spec = LoadSpec {
        connections: 6,
        per_connection: 1_000_000,
        max_time: Duration::from_secs(120),
    };
    let user_of = |connection: usize, i: u64| (connection * 7919 + i as usize * 31) % users.len();
    let count = || records.lock().unwrap().len();
    let log_start = envoy.log().len();
    let mut second: Option<SocketAddr> = None;
    let mut second_answers: Vec<(usize, u16, String)> = Vec::new();
    let (mut b_written, mut a2_written, mut a2_taken) = (None, None, None);
    let mut while_b = (0.0, 0.0, false);
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
                        connection,
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
        let traffic = |n: usize| {
            let target = count() + n;
            assert!(
                wait_until(Duration::from_secs(60), || count() >= target),
                "the load stalled at {} responses",
                count()
            );
        };
        traffic(3000);
        b_written = Some(Instant::now());
        // Envoy takes B (no NACK): the filter logs it and keeps A.
        envoy
            .push_ecds(&b)
            .expect("the filter takes a bad config instead of making Envoy NACK it");
        traffic(3000);
        // A new listener, created after B, with the same ECDS resource: under a NACK
        // it would answer 500 to everything (MissingConfigFilter).
        let address = envoy.add_listener("ingress_after_b");
        second = Some(address);
        let mut client = harness::Client::new(address);
        for (i, user) in users.iter().enumerate().take(400) {
            let r = client.get_with(&[("x-user-id", user)]);
            second_answers.push((i, r.status, r.served_by()));
        }
        while_b = (
            gauge(&envoy, CONFIG_STALE),
            gauge(&envoy, CONFIG_SAFE_MODE),
            alert_fires(&envoy),
        );
        traffic(3000);
        a2_written = Some(Instant::now());
        envoy.push_ecds(&a2).expect("A' is taken");
        a2_taken = Some(Instant::now());
        traffic(4000);
        let mut client = harness::Client::new(address);
        for (i, user) in users.iter().enumerate().take(400) {
            let r = client.get_with(&[("x-user-id", user)]);
            second_answers.push((i, r.status, r.served_by()));
        }
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load thread")
    });
    let (b_written, a2_written, a2_taken) =
        (b_written.unwrap(), a2_written.unwrap(), a2_taken.unwrap());
    let records = records.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.requests as usize, records.len());

    // Every answer is a 200 from the version A gives until A' was written, A''s
    // once Envoy had taken it: B moved nobody. Envoy hands the new filter config to
    // each worker a moment after its main thread took it (when push_ecds returns),
    // and an answer is stamped when it arrives; so a connection (one worker) may give
    // A's answers shortly after that, but once it has given one that only A' gives,
    // every later answer on it is A''s, and after the grace period all are.
    const SWITCH_GRACE: Duration = Duration::from_secs(2);
    let mut switched = std::collections::HashSet::new();
    let mut wrong = Vec::new();
    let (mut under_a, mut under_b, mut switching, mut under_a2) = (0, 0, 0, 0);
    for r in &records {
        let ok = if r.at < a2_written {
            if r.at < b_written {
                under_a += 1;
            } else {
                under_b += 1;
            }
            r.served == before[r.user]
        } else {
            let only_a2 = r.served == after[r.user] && after[r.user] != before[r.user];
            if only_a2 || r.at > a2_taken + SWITCH_GRACE {
                switched.insert(r.connection);
            }
            if switched.contains(&r.connection) {
                under_a2 += 1;
                r.served == after[r.user]
            } else {
                switching += 1;
                r.served == before[r.user] || r.served == after[r.user]
            }
        };
        if r.status != 200 || !ok {
            wrong.push(format!(
                "user {} got {} from {:?} (A {}, A' {})",
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
    assert!(
        under_b > 2000 && under_a2 > 2000,
        "under B {under_b}, under A' {under_a2}"
    );
    // The listener made after B: A's answers while B was the newest config, A''s after.
    for (n, (user, status, served)) in second_answers.iter().enumerate() {
        let expected = if n < 400 {
            &before[*user]
        } else {
            &after[*user]
        };
        assert_eq!(
            (*status, served),
            (200, expected),
            "new listener, request {n} (user {})",
            users[*user]
        );
    }

    // The log names the field, once per VM (the main thread's and each worker's),
    // and says what serves instead.
    let log = log_since(&envoy, log_start);
    let rejections: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("config rejected (1 problem): versions[1].weight: 120 is above 100"))
        .collect();
    let kept: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("keeps its last good config"))
        .collect();
    // Envoy 1.40 with 2 workers configures each plugin in 4 VMs: the base VM on the
    // main thread, the main thread's own copy and one per worker.
    assert_eq!(rejections.len(), 4, "one per VM:\n{log}");
    assert_eq!(kept.len(), rejections.len(), "{log}");
    assert!(
        kept.iter()
            .all(|l| l.contains("route_header=x-canary-version versions stable=80% canary=20%")),
        "{kept:?}"
    );
    // Health: the gauge and the alert showed B while it was the newest config;
    // the counter keeps the count; A' cleared the gauge.
    assert_eq!(while_b, (1.0, 0.0, true), "stale, safe mode, alert while B");
    assert_eq!(gauge(&envoy, CONFIG_STALE), 0.0);
    assert!(!alert_fires(&envoy));
    let m = envoy.prometheus();
    assert_eq!(
        m.value(CONFIG_REJECTED_TOTAL, &[]),
        rejections.len() as f64,
        "one count per rejection logged"
    );
    // Envoy itself saw no failure: no NACK, no 5xx on either listener.
    let s = envoy.stats();
    let stat = |name: &str| s.get(name).copied().unwrap_or(0);
    assert_eq!(
        stat("extension_config_discovery.http_filter.canary-router.config_fail"),
        0
    );
    assert_eq!(
        stat("extension_config_discovery.http_filter.canary-router.config_reload"),
        3,
        "A, B, A'"
    );
    assert_eq!(stat("http.ingress.downstream_rq_5xx"), 0);
    assert_eq!(stat("http.ingress_after_b.downstream_rq_5xx"), 0);
    assert_eq!(stat("http.ingress_after_b.downstream_rq_2xx"), 800);
    envoy.assert_vm_healthy();
    // Counted exactly, per version: the kept config counts as A did.
    for version in ["stable", "canary"] {
        let served = records.iter().filter(|r| r.served == version).count()
            + second_answers.iter().filter(|a| a.2 == version).count();
        assert_eq!(
            m.sum("canary_requests_total", &[("version", version)]),
            served as f64,
            "requests counted for {version}"
        );
    }
    eprintln!(
        "ECDS under load: {} requests on 6 connections in {:.1} s ({} connects, {} retries): \
         {under_a} under A, {under_b} under B (kept A), {switching} while A' was applied, {under_a2} under A'; \
         800 on the listener added after B; 0 errors, 0 5xx; log: {} rejection lines naming versions[1].weight, \
         {} 'keeps its last good config' lines; {CONFIG_REJECTED_TOTAL} {}, {CONFIG_STALE} 1 while B, 0 after A'",
        records.len(),
        stats.elapsed.as_secs_f64(),
        stats.connects,
        stats.retries,
        rejections.len(),
        kept.len(),
        m.value(CONFIG_REJECTED_TOTAL, &[])
    );
}

#[test]
fn a_fresh_proxy_with_only_a_bad_config_serves_every_request_in_safe_mode() {
    // A bad weight, with a custom route header and an override token header that
    // safe mode can still read and removes.
    let bad = r#"{
      "route_header": "x-version",
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 120 } ],
      "override": { "header": "x-canary", "token": { "header": "x-canary-token", "values": ["0123456789abcdef"] } },
      "hash": { "header": "x-user-id" }
    }"#;
    let envoy = Envoy::start(EnvoyOptions {
        filter_from_ecds: true,
        echo_request_headers: vec![
            "x-version".into(),
            "x-canary-version".into(),
            "x-canary-token".into(),
        ],
        ..EnvoyOptions::with_config(bad)
    });
    let log = envoy.log();
    assert!(
        log.contains("config rejected (1 problem): versions[1].weight: 120 is above 100"),
        "{log}"
    );
    assert!(
        log.contains("runs in safe mode")
            && log.contains("x-canary-version, x-version, x-canary-token removed"),
        "{log}"
    );
    let mut client = envoy.client();
    let users = user_ids("fresh", 300);
    let spoofs: [&[(&str, &str)]; 5] = [
        &[],
        &[("x-version", "canary")],
        &[("x-canary-version", "canary")],
        &[
            ("x-canary", "canary"),
            ("x-canary-token", "0123456789abcdef"),
        ],
        &[("x-version", "canary"), ("x-canary-version", "canary")],
    ];
    let mut sent = 0;
    for (i, user) in users.iter().enumerate() {
        let mut headers: Vec<(&str, &str)> = vec![("x-user-id", user)];
        headers.extend_from_slice(spoofs[i % spoofs.len()]);
        let r = client.get_with(&headers);
        assert_eq!(
            (r.status, r.served_by().as_str()),
            (200, "stable"),
            "{headers:?}"
        );
        for echoed in ["x-version", "x-canary-version", "x-canary-token"] {
            assert_eq!(
                r.header(&format!("x-echo-{echoed}")).unwrap_or_default(),
                b"",
                "{echoed} reached the upstream: {headers:?}"
            );
        }
        sent += 1;
    }
    let m = envoy.prometheus();
    assert_eq!(m.value(CONFIG_SAFE_MODE, &[]), 1.0);
    assert_eq!(m.value(CONFIG_STALE, &[]), 1.0);
    let logged = envoy
        .log()
        .lines()
        .filter(|l| l.contains("config rejected ("))
        .count();
    assert_eq!(
        logged, 4,
        "one per VM (the main thread's two, one per worker)"
    );
    assert_eq!(m.value(CONFIG_REJECTED_TOTAL, &[]), logged as f64);
    assert_eq!(m.sum("canary_requests_total", &[]), 0.0, "no decisions");
    assert!(alert_fires(&envoy));
    let s = envoy.stats();
    assert_eq!(
        s.get("http.ingress.downstream_rq_2xx"),
        Some(&(sent as u64))
    );
    assert_eq!(s.get("http.ingress.downstream_rq_5xx"), Some(&0));

    // Every bad fixture, pushed in turn: taken (no NACK), the same line as
    // `canary-router validate` prints, and still no 5xx.
    let mut checked = 0;
    for path in cli_support::fixtures("bad") {
        let Some(json) = cli_support::filter_input(&path) else {
            continue; // not a config Istio could hand the filter
        };
        let relative = format!("tests/fixtures/configs/bad/{}", cli_support::name(&path));
        let o = cli_support::run(&["validate", &relative], None);
        let errors: Vec<String> = cli_support::stderr(&o)
            .lines()
            .filter_map(|l| l.strip_prefix("error: "))
            .map(str::to_string)
            .collect();
        let n = errors.len();
        assert!(n > 0, "{relative}");
        let mut want = format!(
            "config rejected ({n} problem{}): {}",
            if n == 1 { "" } else { "s" },
            errors.join("; ")
        );
        let from = envoy.log().len();
        envoy
            .push_ecds(&String::from_utf8(json).expect("UTF-8"))
            .unwrap_or_else(|log| panic!("{relative}: Envoy NACKed it:\n{log}"));
        let log = log_since(&envoy, from);
        let mut got = log
            .lines()
            .find_map(|l| l.find("config rejected (").map(|at| l[at..].to_string()))
            .unwrap_or_else(|| panic!("{relative}: no rejection line:\n{log}"));
        if cli_support::is_yaml(&path) {
            got = cli_support::without_position(&got);
            want = cli_support::without_position(&want);
        }
        assert_eq!(got, want, "{relative}: Envoy's log and validate differ");
        let r = client.get_with(&[("x-canary-version", "canary")]);
        assert_eq!(
            (r.status, r.served_by().as_str()),
            (200, "stable"),
            "{relative}"
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} bad fixtures pushed");
    assert_eq!(envoy.prometheus().value(CONFIG_SAFE_MODE, &[]), 1.0);
    envoy.assert_vm_healthy();
    eprintln!(
        "fresh proxy with only a bad config: {sent} requests (four in five spoofing a route header or overriding with the token), \
         all 200 from stable, route and token headers removed; then {checked} bad fixtures by ECDS, \
         each logged as validate prints it, 0 NACKs, 0 5xx"
    );
}

#[test]
fn hosts_only_listed_hosts_are_decided_counted_and_guarded() {
    let config = r#"{
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 50 } ],
      "override": { "header": "x-canary" },
      "hash": { "header": "x-user-id", "salt": "hosts" },
      "anonymous": "baseline",
      "hosts": [ "myapp", "myapp.myapp.svc.cluster.local", "*.example.com" ],
      "guard": { "version": "canary", "max_error_rate": 0.1, "min_requests": 20, "window": "60s", "hold": "10m" },
      "metrics": { "responses": true }
    }"#;
    let parsed = Config::from_json(config.as_bytes()).expect("valid");
    let envoy = Envoy::start(EnvoyOptions {
        echo_request_headers: vec!["x-canary-version".into()],
        ..EnvoyOptions::with_config(config)
    });
    let mut client = envoy.client();
    let users = user_ids("hosts", 400);
    let listed = [
        "myapp",
        "MyApp:80",
        "myapp.myapp.svc.cluster.local:8080",
        "shop.example.com",
        "a.b.EXAMPLE.com:443",
    ];
    let mut expected_counts = std::collections::BTreeMap::<String, f64>::new();
    for (i, user) in users.iter().enumerate() {
        let host = listed[i % listed.len()];
        // A client-sent route header is replaced on a listed host.
        let r = client.get_with(&[
            ("host", host),
            ("x-user-id", user),
            ("x-canary-version", "canary"),
        ]);
        let (version, _) = harness::expected_version(&parsed, user);
        assert_eq!(
            (r.status, r.served_by()),
            (200, version.clone()),
            "{host} {user}"
        );
        assert_eq!(
            r.header("x-echo-x-canary-version"),
            Some(version.as_bytes())
        );
        *expected_counts.entry(version).or_default() += 1.0;
    }
    let counted = |envoy: &Envoy| {
        let m = envoy.prometheus();
        (
            m.sum("canary_requests_total", &[("version", "stable")]),
            m.sum("canary_requests_total", &[("version", "canary")]),
            m.sum("canary_responses_total", &[]),
        )
    };
    let after_listed = counted(&envoy);
    assert_eq!(
        after_listed,
        (expected_counts["stable"], expected_counts["canary"], 400.0),
        "every request to a listed host decided and counted once"
    );

    // Unlisted hosts, with the canary failing every request: untouched (a route
    // header the client sent stays, none is written), not counted, not guarded.
    envoy.set_runtime("demo.canary_failure_percent", "100");
    let unlisted = [
        "other",
        "example.com",
        "myapp.other",
        "evil-myapp",
        "myapp.example.org:80",
    ];
    let mut failures = 0;
    for i in 0..300 {
        let host = unlisted[i % unlisted.len()];
        let user = &users[i];
        if i % 2 == 0 {
            let r = client.get_with(&[
                ("host", host),
                ("x-user-id", user),
                ("x-canary-version", "canary"),
            ]);
            assert_eq!(
                (r.status, r.header("x-echo-x-canary-version")),
                (503, Some(&b"canary"[..])),
                "{host}"
            );
            failures += 1;
        } else {
            let r = client.get_with(&[("host", host), ("x-user-id", user)]);
            assert_eq!(
                (r.status, r.served_by().as_str()),
                (200, "stable"),
                "{host}"
            );
            assert_eq!(
                r.header("x-echo-x-canary-version").unwrap_or_default(),
                b"",
                "{host}"
            );
        }
    }
    assert_eq!(
        counted(&envoy),
        after_listed,
        "unlisted hosts are not counted"
    );
    let tripped = || {
        envoy
            .prometheus()
            .value("canary_guard_tripped", &[("version", "canary")])
    };
    assert_eq!(
        tripped(),
        0.0,
        "{failures} failures on unlisted hosts tripped the guard"
    );
    assert!(!envoy.log().contains("guard tripped"), "{}", envoy.log());

    // `canary-router explain` says the same per host: untouched for an unlisted one,
    // the version Envoy routed to for a listed one.
    let file = std::env::temp_dir().join(format!("mesh-hosts-{}.json", std::process::id()));
    std::fs::write(&file, config).expect("write the config");
    let path = file.to_string_lossy().into_owned();
    let explain = |authority: &str| {
        let o = cli_support::run(
            &[
                "explain",
                &path,
                "--header",
                &format!(":authority={authority}"),
                "--header",
                &format!("x-user-id={}", users[0]),
            ],
            None,
        );
        assert_eq!(cli_support::code(&o), 0, "{}", cli_support::stderr(&o));
        cli_support::stdout(&o)
    };
    let (version, _) = harness::expected_version(&parsed, &users[0]);
    let listed_text = explain("MyApp:80");
    assert!(
        listed_text.starts_with(&format!("version: {version}\n")),
        "{listed_text}"
    );
    let unlisted_text = explain("payments.example.org:80");
    assert!(
        unlisted_text.starts_with("version: none (untouched)\n")
            && unlisted_text.contains("matches no entry of hosts"),
        "{unlisted_text}"
    );
    let _ = std::fs::remove_file(&file);

    // The control: 40 failures on a listed host trip it.
    for _ in 0..40 {
        let r = client.get_with(&[("host", "myapp"), ("x-canary", "canary")]);
        assert_eq!(r.status, 503);
    }
    assert!(
        wait_until(Duration::from_secs(10), || tripped() == 1.0),
        "the guard never tripped on the listed host's failures"
    );
    envoy.assert_vm_healthy();
    eprintln!(
        "hosts: 400 requests to 5 forms of listed hosts decided and counted exactly (stable {}, canary {}); \
         300 to 5 unlisted hosts untouched and uncounted, {failures} of them 503s from the canary, guard not tripped; \
         40 failures on a listed host tripped it",
        expected_counts["stable"], expected_counts["canary"]
    );
}

#[test]
fn with_the_refuse_opt_in_a_fresh_proxy_answers_500_which_is_why_it_is_not_the_default() {
    // Istio's case (istio/istio#38313): the ECDS resource's only config is refused, so
    // the listener gets Envoy's missing-config filter and fails every request. This
    // is what the default (safe mode, above) avoids.
    let bad = A.replace(r#""weight": 20"#, r#""weight": 120"#);
    let envoy = Envoy::start(EnvoyOptions {
        filter_from_ecds: true,
        refuse_bad_config: true,
        ..EnvoyOptions::with_config(bad)
    });
    let mut client = envoy.client();
    for _ in 0..20 {
        assert_eq!(client.get_with(&[]).status, 500);
    }
    let s = envoy.stats();
    assert_eq!(
        s.get("extension_config_discovery.http_filter.canary-router.config_fail")
            .copied()
            .unwrap_or(0),
        1,
        "NACKed"
    );
    assert!(envoy.log().contains("versions[1].weight: 120 is above 100"));
    // A good config ends it, without a restart.
    envoy.push_ecds(A).expect("a good config is taken");
    assert!(wait_until(Duration::from_secs(10), || client
        .get_with(&[])
        .status
        == 200));
}

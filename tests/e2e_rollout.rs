//! End-to-end: progressive rollout inside a real Envoy with two workers. A ramp
//! schedule moves the measured split step by step; a failing canary trips the
//! guard, which sends its traffic to the baseline until the hold passes.

mod harness;

use canary_router::config::Config;
use canary_router::decide::Routing;
use canary_router::schedule::format_rfc3339 as rfc3339;
use harness::{assert_within_4_sigma, core_decision, user_ids, wait_until, Envoy, EnvoyOptions};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn wait_for_clock(at_ms: i64) {
    let deadline = Duration::from_millis((at_ms - unix_ms()).max(0) as u64 + 1000);
    assert!(wait_until(deadline, || unix_ms() >= at_ms));
}

#[test]
fn a_schedule_moves_the_measured_split_step_by_step_and_keeps_users_in_the_canary() {
    const STEP_MS: i64 = 6000;
    let start = unix_ms() + 3000;
    let config = format!(
        r#"{{
          "versions": [ {{ "name": "stable" }},
            {{ "name": "canary", "schedule": {{ "start": "{}",
                "steps": [ {{ "after": "0s", "weight": 10 }}, {{ "after": "6s", "weight": 40 }},
                           {{ "after": "12s", "weight": 70 }} ] }} }} ],
          "hash": {{ "header": "x-user-id", "salt": "ramp" }}
        }}"#,
        rfc3339(start)
    );
    let envoy = Envoy::start(EnvoyOptions::with_config(config.clone()));
    let parsed = Config::from_json(config.as_bytes()).unwrap();
    let mut client = envoy.client();
    let users = user_ids("ramp", 1000);
    let weight_gauge = || {
        envoy
            .prometheus()
            .value("canary_weight_basis_points", &[("version", "canary")])
    };

    // Before start: nobody is in the canary, and the gauge says so.
    assert!(unix_ms() < start - 500, "Envoy took too long to start");
    assert_eq!(weight_gauge(), 0.0);
    for user in users.iter().take(200) {
        assert_eq!(
            client.get_with(&[("x-user-id", user)]).served_by(),
            "stable"
        );
    }

    let mut in_canary_before = vec![false; users.len()];
    for (step, weight_bp) in [(0, 1000u32), (1, 4000), (2, 7000)] {
        let weight = f64::from(weight_bp) / 10_000.0;
        // Measure well inside the step: the filter updates its split every 100 ms.
        let from = start + step * STEP_MS + 400;
        wait_for_clock(from);
        let now = Routing::at(&parsed, from);
        let mut in_canary = vec![false; users.len()];
        for (i, user) in users.iter().enumerate() {
            let version = client.get_with(&[("x-user-id", user)]).served_by();
            let expected = core_decision(&parsed, &now, &[(b"x-user-id", user.as_bytes())]);
            assert_eq!(
                version, parsed.versions[expected.version].name,
                "{user} at step {step}"
            );
            in_canary[i] = version == "canary";
            assert!(
                !in_canary_before[i] || in_canary[i],
                "{user} left the canary at step {step}"
            );
        }
        assert!(
            unix_ms() < start + (step + 1) * STEP_MS,
            "step {step} took too long to measure"
        );
        let canary = in_canary.iter().filter(|&&c| c).count();
        assert_within_4_sigma(
            &format!("canary share at step {step}"),
            canary,
            users.len(),
            weight,
        );
        assert_eq!(
            weight_gauge(),
            weight * 10_000.0,
            "weight gauge at step {step}"
        );
        assert_eq!(
            envoy
                .prometheus()
                .value("canary_weight_basis_points", &[("version", "stable")]),
            f64::from(10_000 - weight_bp)
        );
        eprintln!(
            "ramp step {step}: {canary} of {} users on canary (weight {weight})",
            users.len()
        );
        in_canary_before = in_canary;
    }
}

const GUARD_CONFIG: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 50 } ],
  "override": { "header": "x-canary" },
  "anonymous": "random",
  "guard": { "version": "canary", "max_error_rate": 0.2, "min_requests": 20,
             "window": "10s", "status": ["5xx"], "hold": "4s" }
}"#;

#[test]
fn a_failing_canary_trips_the_guard_quickly_and_the_guard_re_arms_after_hold() {
    let envoy = Envoy::start(EnvoyOptions::with_config(GUARD_CONFIG));
    let mut client = envoy.client();
    let tripped_gauge = || {
        envoy
            .prometheus()
            .value("canary_guard_tripped", &[("version", "canary")])
    };

    // Healthy: both versions serve, the guard stays armed.
    let mut healthy_canary = 0;
    for _ in 0..200 {
        let r = client.get_with(&[]);
        assert_eq!(r.status, 200);
        healthy_canary += usize::from(r.served_by() == "canary");
    }
    assert_within_4_sigma("healthy canary share", healthy_canary, 200, 0.5);
    assert_eq!(tripped_gauge(), 0.0);

    // The canary starts failing.
    envoy.set_runtime("demo.canary_failure_percent", "100");
    let mut failures = 0usize;
    let mut first_failure: Option<Instant> = None;
    let mut last_failure: Option<Instant> = None;
    let mut stable_streak = 0;
    let mut sent = 0;
    while stable_streak < 300 {
        sent += 1;
        assert!(
            sent < 5000,
            "the guard never tripped ({failures} canary failures)"
        );
        let r = client.get_with(&[]);
        if r.status == 503 {
            assert_eq!(r.served_by(), "canary");
            failures += 1;
            first_failure.get_or_insert_with(Instant::now);
            last_failure = Some(Instant::now());
            stable_streak = 0;
        } else {
            assert_eq!((r.status, r.served_by().as_str()), (200, "stable"));
            stable_streak += 1;
        }
    }
    // The fewest failures that can trip it: at least min_requests in the window
    // and a rate above 20%, counting the healthy canary responses still in it.
    let needed = (1..)
        .find(|f| healthy_canary + f >= 20 && *f as f64 / (healthy_canary + f) as f64 > 0.2)
        .unwrap();
    let to_trip = last_failure.unwrap() - first_failure.unwrap();
    eprintln!(
        "guard: {failures} canary requests failed before the trip (fewest possible {needed}), \
         {:.1} ms from the first failure to the last",
        to_trip.as_secs_f64() * 1000.0
    );
    assert!(
        failures <= needed + 3,
        "{failures} requests reached the failing canary; the guard should trip after {needed} (+3 in flight)"
    );
    assert!(
        to_trip < Duration::from_secs(2),
        "tripping took {to_trip:?}"
    );
    assert_eq!(tripped_gauge(), 1.0);

    // Overrides still reach the canary, so engineers can debug it.
    for _ in 0..20 {
        let r = client.get_with(&[("x-canary", "canary")]);
        assert_eq!((r.status, r.served_by().as_str()), (503, "canary"));
    }
    let m = envoy.prometheus();
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "override")]
        ),
        20.0
    );
    let rerouted = m.value(
        "canary_requests_total",
        &[("version", "stable"), ("reason", "guard")],
    );
    assert!(
        rerouted >= 100.0,
        "only {rerouted} requests rerouted by the guard"
    );
    let log = envoy.log();
    let trip_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("guard tripped:"))
        .collect();
    assert_eq!(trip_lines.len(), 1, "one trip line:\n{log}");
    assert!(
        trip_lines[0].contains("canary failed")
            && trip_lines[0].contains("above max_error_rate 20.00%"),
        "{}",
        trip_lines[0]
    );

    // The canary recovers; after the 4 s hold the guard re-arms and traffic returns.
    envoy.set_runtime("demo.canary_failure_percent", "0");
    assert!(
        wait_until(Duration::from_secs(10), || tripped_gauge() == 0.0),
        "the guard did not re-arm"
    );
    assert!(envoy
        .log()
        .contains("guard re-armed: canary gets its configured weight again"));
    // The gauge shows the worker that wrote the re-arm; the worker serving this
    // connection adopts it at its next tick, which a loaded machine can delay. Its
    // first canary answer says it has: only then is the split measured.
    assert!(
        wait_until(Duration::from_secs(10), || client.get_with(&[]).served_by()
            == "canary"),
        "this connection's worker never adopted the re-arm"
    );
    let canary = (0..400)
        .filter(|_| {
            let r = client.get_with(&[]);
            assert_eq!(r.status, 200);
            r.served_by() == "canary"
        })
        .count();
    assert_within_4_sigma("canary share after re-arm", canary, 400, 0.5);
}

#[test]
fn connection_failures_answered_by_envoy_count_as_failures_even_if_not_listed() {
    // Only 500 is listed; Envoy's own 503 for an unreachable canary still counts.
    let config = GUARD_CONFIG
        .replace(r#"["5xx"]"#, r#"["500"]"#)
        .replace(r#""hold": "4s""#, r#""hold": "forever""#);
    let envoy = Envoy::start(EnvoyOptions {
        dead_upstreams: vec!["canary".into()],
        ..EnvoyOptions::with_config(config)
    });
    let mut client = envoy.client();
    let mut failures = 0;
    let mut stable_streak = 0;
    let mut sent = 0;
    while stable_streak < 200 {
        sent += 1;
        assert!(sent < 3000, "the guard never tripped ({failures} failures)");
        let r = client.get_with(&[]);
        if r.status == 503 {
            failures += 1;
            stable_streak = 0;
        } else {
            assert_eq!((r.status, r.served_by().as_str()), (200, "stable"));
            stable_streak += 1;
        }
    }
    assert!(failures <= 20 + 3, "{failures} failures before the trip");
    assert_eq!(
        envoy
            .prometheus()
            .value("canary_guard_tripped", &[("version", "canary")]),
        1.0
    );
    assert!(envoy.log().contains("until the config changes"));
}

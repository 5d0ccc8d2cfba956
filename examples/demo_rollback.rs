//! `make demo-rollback`: a rollout in under a minute. A ramp widens the canary
//! from 5% to 50% in steps a few seconds apart; then the canary starts failing and
//! the guard sends its traffic back to stable within a few dozen requests.

#[path = "../tests/harness/mod.rs"]
mod harness;

use canary_router::schedule::format_rfc3339;
use harness::{user_ids, Envoy, EnvoyOptions};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        / 1000
        * 1000
        + 3000;
    let config = format!(
        r#"{{
  "versions": [ {{ "name": "stable" }},
    {{ "name": "canary", "schedule": {{ "start": "{}",
        "steps": [ {{ "after": "0s", "weight": 5 }}, {{ "after": "5s", "weight": 20 }},
                   {{ "after": "10s", "weight": 50 }} ] }} }} ],
  "override": {{ "header": "x-canary" }},
  "hash": {{ "header": "x-user-id", "salt": "demo" }},
  "guard": {{ "version": "canary", "max_error_rate": 0.05, "min_requests": 30,
             "window": "10s", "status": ["5xx"], "hold": "forever" }}
}}"#,
        format_rfc3339(start_ms as i64)
    );
    println!("Plugin config:\n{config}\n");
    let envoy = Envoy::start(EnvoyOptions::with_config(config));
    let mut client = envoy.client();
    let users = user_ids("rollback-demo", 400);
    // Measure a quarter of a second into each second of the schedule's clock.
    let first_ms = start_ms - 3000 + 250;
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    println!(
        "The ramp starts at {}; 400 users a second, sticky by x-user-id:",
        format_rfc3339(start_ms as i64)
    );
    println!(" time  weight  canary share   5xx");
    for second in 0..24u64 {
        if second == 16 {
            println!("------ the canary starts failing (demo.canary_failure_percent=100) ------");
            envoy.set_runtime("demo.canary_failure_percent", "100");
        }
        while now_ms() < first_ms + second * 1000 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (mut canary, mut errors) = (0, 0);
        for user in &users {
            let r = client.get_with(&[("x-user-id", user)]);
            canary += usize::from(r.served_by() == "canary");
            errors += usize::from(r.status >= 500);
        }
        let m = envoy.prometheus();
        let weight = m.value("canary_weight_basis_points", &[("version", "canary")]) / 100.0;
        let tripped = m.value("canary_guard_tripped", &[("version", "canary")]) == 1.0;
        println!(
            "{:>4}s  {:>5.1}%  {:>5.1}% ({canary:>3})  {errors:>4}{}",
            second,
            weight,
            100.0 * canary as f64 / users.len() as f64,
            if tripped {
                "   guard tripped: canary traffic -> stable"
            } else {
                ""
            }
        );
    }
    println!();
    for line in envoy.log().lines().filter(|l| l.contains("guard tripped:")) {
        let message = line.split("canary-router: ").last().unwrap_or(line);
        println!("Envoy log: {message}");
    }
    let m = envoy.prometheus();
    println!("\nFrom /stats/prometheus:");
    for line in m.lines_for("canary_guard_tripped") {
        println!("  {line}");
    }
    for line in m.lines_for("canary_weight_basis_points") {
        println!("  {line}");
    }
    for line in m
        .lines_for("canary_requests_total")
        .into_iter()
        .filter(|l| !l.ends_with(" 0"))
    {
        println!("  {line}");
    }
    drop(envoy);
    println!("\nEnvoy stopped.");
}

//! The CLI against a real Envoy running the built filter: `explain` names the
//! version Envoy routes each request to (and the reason Envoy counts), and
//! `validate` accepts exactly the fixtures with which Envoy starts and rejects,
//! with the same errors, exactly those Envoy refuses.
//!
//! Needs `make build envoy` (`make test` does): never skips.

mod harness;

mod cli_support;

use cli_support::{
    code, filter_input, fixtures, is_yaml, name, run, stderr, stdout, without_position,
};
use harness::{user_ids, wait_until, Envoy, EnvoyOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every routing rule: a ramp that reached its last step, overrides by header and
/// cookie, listed users under both versions, salted hashing by header and cookie,
/// 1000 buckets, and `anonymous: baseline` (a random draw cannot be compared).
const ROUTING: &str = r#"{
  "versions": [
    { "name": "stable" },
    { "name": "canary", "schedule": { "start": "2020-01-01T00:00:00Z",
        "steps": [ { "after": "0s", "weight": 10 }, { "after": "1h", "weight": 30 } ] } }
  ],
  "override": { "header": "x-canary", "cookie": "canary" },
  "users": { "canary": ["qa-alice", "qa-bob"], "stable": ["vip-carol"] },
  "hash": { "header": "x-user-id", "cookie": "uid", "salt": "checkout-v2", "buckets": 1000 },
  "anonymous": "baseline"
}"#;

/// The same config as an operator writes it in a WasmPlugin.
const ROUTING_WASMPLUGIN: &str = r#"apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: canary-router }
spec:
  url: oci://registry.example/canary-router:0.1.0
  pluginConfig:
    versions:
    - name: stable
    - name: canary
      schedule:
        start: "2020-01-01T00:00:00Z"
        steps: [ { after: 0s, weight: 10 }, { after: 1h, weight: 30 } ]
    override: { header: x-canary, cookie: canary }
    users:
      canary: [qa-alice, qa-bob]
      stable: [vip-carol]
    hash: { header: x-user-id, cookie: uid, salt: checkout-v2, buckets: 1000 }
    anonymous: baseline
"#;

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("canary-router-cli-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// `explain` for one request, as the CLI's arguments: cookies as `--cookie` (which
/// the CLI joins into one header, as the client sends them), the rest as `--header`.
fn explain(config: &Path, headers: &[(String, String)], source: Option<&str>) -> (String, String) {
    let mut args: Vec<String> = vec![
        "explain".into(),
        config.to_string_lossy().into_owned(),
        "--json".into(),
    ];
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("cookie") {
            for pair in value.split("; ") {
                args.extend(["--cookie".to_string(), pair.to_string()]);
            }
        } else {
            args.extend(["--header".to_string(), format!("{name}={value}")]);
        }
    }
    if let Some(ip) = source {
        args.extend(["--source".to_string(), ip.to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs, None);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("explain --json");
    (
        v["version"].as_str().expect("version").to_string(),
        v["reason"].as_str().expect("reason").to_string(),
    )
}

fn h(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

/// Sends each request to Envoy and asks the CLI about it; returns the
/// (version, reason) counts the CLI predicted. Panics at the first disagreement.
fn compare(
    envoy: &Envoy,
    configs: &[&Path],
    requests: &[Vec<(String, String)>],
    source: Option<&str>,
) -> BTreeMap<(String, String), u64> {
    let mut client = envoy.client();
    let mut predicted = BTreeMap::new();
    for (i, headers) in requests.iter().enumerate() {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let response = client.get_with(&pairs);
        assert_eq!(response.status, 200, "{headers:?}");
        let config = configs[i % configs.len()];
        let (version, reason) = explain(config, headers, source);
        assert_eq!(
            response.served_by(),
            version,
            "Envoy and `canary-router explain {}` disagree on {headers:?} (CLI reason: {reason})",
            config.display()
        );
        *predicted.entry((version, reason)).or_insert(0) += 1;
    }
    predicted
}

/// Envoy's `P_requests_total` must equal the CLI's predictions, per version and reason.
fn assert_counters(envoy: &Envoy, predicted: &BTreeMap<(String, String), u64>) {
    let matches = || {
        let metrics = envoy.prometheus();
        ["stable", "canary"].iter().all(|version| {
            [
                "override",
                "user_list",
                "hash",
                "random",
                "baseline",
                "guard",
            ]
            .iter()
            .all(|reason| {
                let want = predicted
                    .get(&(version.to_string(), reason.to_string()))
                    .copied()
                    .unwrap_or(0);
                metrics.value(
                    "canary_requests_total",
                    &[("version", version), ("reason", reason)],
                ) == want as f64
            })
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), matches),
        "Envoy's counters differ from the CLI's reasons {predicted:?}:\n{}",
        envoy
            .prometheus()
            .lines_for("canary_requests_total")
            .join("\n")
    );
}

#[test]
fn explain_names_the_version_envoy_routes_to_for_every_kind_of_request() {
    let json = write_temp("routing.json", ROUTING);
    let yaml = write_temp("routing-wasmplugin.yaml", ROUTING_WASMPLUGIN);
    let envoy = Envoy::start(EnvoyOptions::with_config(ROUTING));

    let mut requests: Vec<Vec<(String, String)>> = Vec::new();
    // Users by header (also with the name in mixed case) and by cookie among others.
    for (i, id) in user_ids("cli-e2e-header", 150).into_iter().enumerate() {
        let name = if i % 10 == 0 {
            "X-User-Id"
        } else {
            "x-user-id"
        };
        requests.push(vec![h(name, &id)]);
    }
    for id in user_ids("cli-e2e-cookie", 150) {
        requests.push(vec![h("cookie", &format!("theme=dark; uid={id}; lang=en"))]);
    }
    // The header wins over the cookie; an empty header falls back to the cookie.
    for id in user_ids("cli-e2e-both", 20) {
        requests.push(vec![h("x-user-id", &id), h("cookie", "uid=someone-else")]);
        requests.push(vec![h("x-user-id", ""), h("cookie", &format!("uid={id}"))]);
    }
    // Listed users.
    for id in ["qa-alice", "qa-bob", "vip-carol"] {
        requests.push(vec![h("x-user-id", id)]);
        requests.push(vec![h("cookie", &format!("uid={id}"))]);
    }
    // Overrides by header and cookie, valid and not, with and without a user.
    for value in ["canary", "stable", "nightly", "CANARY", ""] {
        requests.push(vec![h("x-canary", value)]);
        requests.push(vec![h("x-canary", value), h("x-user-id", "qa-alice")]);
        requests.push(vec![h("cookie", &format!("canary={value}"))]);
        requests.push(vec![
            h("x-canary", "nightly"),
            h("cookie", &format!("canary={value}; uid=vip-carol")),
        ]);
    }
    // Anonymous requests: `anonymous: baseline`.
    requests.push(vec![]);
    requests.push(vec![h("x-user-id", "")]);
    requests.push(vec![h("cookie", "uid=")]);
    requests.push(vec![h("x-other", "1")]);
    // A client trying to pick the version with the route header gets the filter's choice.
    requests.push(vec![h("x-canary-version", "canary")]);
    requests.push(vec![
        h("x-canary-version", "canary"),
        h("x-user-id", "vip-carol"),
    ]);

    let predicted = compare(&envoy, &[&json, &yaml], &requests, None);
    let total: u64 = predicted.values().sum();
    assert_eq!(total, requests.len() as u64);
    for reason in ["override", "user_list", "hash", "baseline"] {
        assert!(
            predicted.keys().any(|(_, r)| r == reason),
            "no request exercised {reason}: {predicted:?}"
        );
    }
    assert!(
        predicted.keys().any(|(v, r)| v == "canary" && r == "hash"),
        "no hashed user reached the canary: {predicted:?}"
    );
    assert_counters(&envoy, &predicted);
}

#[test]
fn explain_applies_override_tokens_and_trusted_sources_as_envoy_does() {
    let protected = |trusted: &str| {
        format!(
            r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","weight":20}}],
                "override":{{"header":"x-canary","cookie":"canary",
                  "token":{{"header":"x-canary-token","values":["0123456789abcdef","fedcba9876543210"]}},
                  "trusted_sources":{trusted}}},
                "hash":{{"header":"x-user-id"}}}}"#
        )
    };
    let mut requests = Vec::new();
    for id in user_ids("cli-e2e-token", 20) {
        requests.push(vec![h("x-user-id", &id), h("x-canary", "canary")]);
        requests.push(vec![
            h("x-user-id", &id),
            h("x-canary", "canary"),
            h("x-canary-token", "0123456789abcdef"),
        ]);
        requests.push(vec![
            h("x-user-id", &id),
            h("cookie", "canary=canary"),
            h("x-canary-token", "fedcba9876543210"),
        ]);
        requests.push(vec![
            h("x-user-id", &id),
            h("x-canary", "canary"),
            h("x-canary-token", "0123456789abcdeX"),
        ]);
    }
    // Envoy's client is 127.0.0.1: trusted in the first config, not in the second.
    for (trusted, expect_overrides) in [
        (r#"["127.0.0.0/8", "::1"]"#, true),
        (r#"["10.0.0.0/8"]"#, false),
    ] {
        let config = protected(trusted);
        let path = write_temp(&format!("protected-{expect_overrides}.json"), &config);
        let envoy = Envoy::start(EnvoyOptions::with_config(config.clone()));
        let predicted = compare(&envoy, &[&path], &requests, Some("127.0.0.1"));
        let overrides: u64 = predicted
            .iter()
            .filter(|((_, r), _)| r == "override")
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            overrides,
            if expect_overrides { 40 } else { 0 },
            "{trusted}: {predicted:?}"
        );
        assert_counters(&envoy, &predicted);
    }
}

/// The errors of a rejection, as the filter logs them: `config rejected (N problems): A; B`.
fn rejection_line(log: &str) -> Option<&str> {
    log.lines()
        .find_map(|line| line.find("config rejected (").map(|at| &line[at..]))
}

#[test]
fn envoy_starts_with_exactly_the_fixtures_validate_accepts_and_refuses_the_rest_with_the_same_errors(
) {
    let mut checked = 0;
    for path in fixtures("good") {
        let json = filter_input(&path).expect("filter input");
        let json = String::from_utf8(json).expect("UTF-8");
        let envoy = Envoy::try_start(EnvoyOptions::with_config(json)).unwrap_or_else(|f| {
            panic!(
                "{}: validate accepts it, Envoy refuses it:\n{}",
                name(&path),
                f.log
            )
        });
        assert_eq!(envoy.client().get_with(&[]).status, 200, "{}", name(&path));
        checked += 1;
    }
    for path in fixtures("bad") {
        let Some(json) = filter_input(&path) else {
            continue; // not a config Istio could hand the filter
        };
        let relative = format!("tests/fixtures/configs/bad/{}", name(&path));
        let o = run(&["validate", &relative], None);
        assert_eq!(code(&o), 1, "{relative}");
        let cli_errors: Vec<String> = stderr(&o)
            .lines()
            .filter_map(|l| l.strip_prefix("error: "))
            .map(str::to_string)
            .collect();
        let n = cli_errors.len();
        let mut want = format!(
            "config rejected ({n} problem{}): {}",
            if n == 1 { "" } else { "s" },
            cli_errors.join("; ")
        );
        let json = String::from_utf8(json).expect("UTF-8");
        // With the refuse opt-in; by default the filter takes the config and runs in
        // safe mode, logging the same line (tests/e2e_mesh.rs).
        let refusing = EnvoyOptions {
            refuse_bad_config: true,
            ..EnvoyOptions::with_config(json)
        };
        match Envoy::try_start(refusing) {
            Ok(envoy) => panic!(
                "{relative}: validate rejects it, Envoy starts with it:\n{}",
                envoy.log()
            ),
            Err(failure) => {
                assert_ne!(failure.exit_code, Some(0), "{relative}");
                let line = rejection_line(&failure.log)
                    .unwrap_or_else(|| panic!("{relative}: no rejection line:\n{}", failure.log));
                let mut got = line.to_string();
                if is_yaml(&path) {
                    got = without_position(&got);
                    want = without_position(&want);
                }
                assert_eq!(got, want, "{relative}: Envoy's log and validate differ");
            }
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} fixtures went through Envoy");
}

//! The CLI on a config with `rollouts`: `validate` summarises every rollout and
//! warns (without failing) about rollouts that can never match; `explain` finds the
//! request's rollout as the filter's router does and decides with that rollout's
//! settings, or says that the request passes untouched; `simulate` works on the
//! rollout `--rollout` names, which a config of several rollouts requires.

mod cli_support;

use canary_router::bucket::bucket_of;
use canary_router::config::PluginConfig;
use cli_support::{code, repo_root, run, stderr, stdout};
use serde_json::Value;
use std::fs;

const ROLLOUTS: &str = "tests/fixtures/configs/good/rollouts.json";

fn json(args: &[&str]) -> Value {
    let o = run(args, None);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

fn plugin() -> PluginConfig {
    let text = fs::read(repo_root().join(ROLLOUTS)).expect("fixture");
    PluginConfig::from_json(&text).expect("valid")
}

#[test]
fn validate_summarises_every_rollout_and_its_match() {
    let o = run(&["validate", ROLLOUTS], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "no rollout is shadowed: {}",
        stderr(&o)
    );
    let line = stdout(&o);
    assert!(line.starts_with("valid: 4 rollouts: storefront (hosts shop.example.com, *.shop.example.com): 2 versions: stable 90%, canary 10%; guard on canary"), "{line}");
    assert!(line.contains(" | api-v2 (hosts api.example.com; path /v2/ or /api/v2/): 2 versions: v1 75%, v2 25%; no guard | "), "{line}");
    assert!(line.contains("ios-beta (hosts api.example.com; header x-client = \"ios\"; header x-app-version starts with \"7.\"; header x-debug absent)"), "{line}");

    let v = json(&["validate", ROLLOUTS, "--json"]);
    assert_eq!(v["valid"], true);
    let rollouts = v["rollouts"].as_array().expect("rollouts");
    let names: Vec<&str> = rollouts.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        ["storefront", "api-v2", "ios-beta", "everything-else"]
    );
    assert_eq!(rollouts[1]["route_header"], "x-api-version");
    assert_eq!(
        rollouts[1]["match"]["path_prefixes"],
        serde_json::json!(["/v2/", "/api/v2/"])
    );
    assert_eq!(
        rollouts[2]["match"]["headers"][2],
        serde_json::json!({"name": "x-debug", "present": false})
    );
    assert_eq!(rollouts[0]["guard"]["version"], "canary");
    assert_eq!(rollouts[1]["versions"][1]["weight"], 25.0);
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn validate_warns_about_shadowed_rollouts_and_still_accepts_them() {
    let config = r#"{"rollouts":[
        {"name":"api","match":{"hosts":["*.example.com"],"path_prefixes":["/api/"]},"versions":[{"name":"s"}]},
        {"name":"api-v2","match":{"hosts":["shop.example.com"],"path_prefixes":["/api/v2/"]},"versions":[{"name":"s"}]},
        {"name":"ios","match":{"hosts":["shop.example.com"],"headers":[{"name":"x-client","exact":"ios"}]},"versions":[{"name":"s"}]},
        {"name":"all","versions":[{"name":"s"}]},
        {"name":"never","match":{"hosts":["other.example"]},"versions":[{"name":"s"}]}
    ]}"#;
    let o = run(&["validate", "-"], Some(config.as_bytes()));
    assert_eq!(code(&o), 0, "warnings do not fail: {}", stderr(&o));
    assert!(
        stdout(&o).starts_with("valid: 5 rollouts: "),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        stderr(&o),
        "warning: rollouts[1]: api-v2 can never match: rollouts[0] (api) comes first and matches every request it would (hosts *.example.com; path /api/)\n\
         warning: rollouts[4]: never can never match: rollouts[3] (all) comes first and matches every request it would (every request)\n"
    );
    let o = run(&["validate", "-", "--json"], Some(config.as_bytes()));
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["warnings"][1]["field"], "rollouts[4]");
}

#[test]
fn explain_names_the_rollout_and_decides_with_its_salt() {
    let plugin = plugin();
    for (host, path, headers, rollout) in [
        ("shop.example.com", "/", vec![], "storefront"),
        ("m.shop.example.com:443", "/cart", vec![], "storefront"),
        ("api.example.com", "/v2/items?page=2", vec![], "api-v2"),
        (
            "API.example.com",
            "/users",
            vec!["x-client=ios", "x-app-version=7.4.1"],
            "ios-beta",
        ),
        (
            "anything.example",
            "/",
            vec!["x-tenant=acme-internal"],
            "everything-else",
        ),
    ] {
        for user in ["alice", "bob", "carol", "dave"] {
            let id = format!("x-user-id={user}");
            let mut args = vec![
                "explain", ROLLOUTS, "--json", "--host", host, "--path", path, "--header", &id,
            ];
            for h in &headers {
                args.extend(["--header", h]);
            }
            let v = json(&args);
            assert_eq!(v["rollout"], rollout, "{host} {path} {headers:?}");
            let index = plugin.rollout_index(rollout).expect("rollout");
            let config = &plugin.rollouts[index].config;
            assert_eq!(v["route_header"], config.route_header.as_str());
            if config.hash.header.is_none() {
                continue;
            }
            // The rollout's own formula: its salt, its split.
            let bucket = bucket_of(&config.hash.key_prefix, user.as_bytes(), config.buckets);
            let version = config.split_at(0).version_of_bucket(bucket);
            assert_eq!(v["bucket"], bucket, "{rollout} {user}");
            assert_eq!(
                v["version"],
                config.versions[version].name.as_str(),
                "{rollout} {user}"
            );
        }
    }
    // Text: the rollout first, then the decision.
    let o = run(
        &[
            "explain",
            ROLLOUTS,
            "--host",
            "api.example.com",
            "--path",
            "/v2/x",
            "--header",
            "x-user-id=alice",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with("rollout: api-v2 (the first whose match holds: hosts api.example.com; path /v2/ or /api/v2/)\nversion: "),
        "{text}"
    );
    assert!(text.contains("murmur3(\"api-v2:alice\")"), "{text}");
    assert!(text.contains("sets:    x-api-version: "), "{text}");
    // --host and --path are :authority and :path.
    let by_headers = json(&[
        "explain",
        ROLLOUTS,
        "--json",
        "--header",
        ":authority=api.example.com",
        "--header",
        ":path=/v2/x",
        "--header",
        "x-user-id=alice",
    ]);
    assert_eq!(by_headers["rollout"], "api-v2");
}

#[test]
fn explain_says_when_no_rollout_matches_and_the_request_passes_untouched() {
    for args in [
        vec![
            "--host",
            "api.example.com",
            "--path",
            "/v1/",
            "--header",
            "x-client=android",
        ],
        vec![
            "--host",
            "api.example.com",
            "--path",
            "/home",
            "--header",
            "x-client=ios",
            "--header",
            "x-app-version=6.0",
        ],
        vec!["--host", "unlisted.example", "--path", "/v2/"],
        vec![],
    ] {
        let mut all = vec!["explain", ROLLOUTS, "--json"];
        all.extend(args.iter().copied());
        let v = json(&all);
        assert_eq!(v["untouched"], true, "{args:?}");
        assert!(v["rollout"].is_null() && v["version"].is_null(), "{args:?}");
        assert!(v["why"]
            .as_str()
            .is_some_and(|w| w.contains("no rollout's match holds")));
    }
    let o = run(
        &[
            "explain",
            ROLLOUTS,
            "--host",
            "unlisted.example",
            "--path",
            "/a",
        ],
        None,
    );
    assert_eq!(
        stdout(&o),
        "version: none (untouched)\nwhy:     :authority \"unlisted.example\", :path \"/a\": no rollout's match holds, so the filter passes the request on untouched (no header written or removed, not counted, not seen by any guard)\n"
    );
}

#[test]
fn simulate_works_on_the_rollout_it_is_told() {
    let o = run(&["simulate", ROLLOUTS], None);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).starts_with("canary-router: the config has 4 rollouts: choose one with --rollout NAME (storefront, api-v2, ios-beta, everything-else)\n"),
        "{}",
        stderr(&o)
    );
    let o = run(&["simulate", ROLLOUTS, "--rollout", "checkout"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--rollout checkout: the config has no rollout of that name; its rollouts: storefront, api-v2, ios-beta, everything-else"), "{}", stderr(&o));
    let o = run(
        &[
            "simulate",
            "tests/fixtures/configs/good/minimal.json",
            "--rollout",
            "x",
        ],
        None,
    );
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("the config has no rollouts"),
        "{}",
        stderr(&o)
    );

    let v = json(&[
        "simulate",
        ROLLOUTS,
        "--rollout",
        "ios-beta",
        "--users",
        "4000",
        "--json",
    ]);
    assert_eq!(v["rollout"], "ios-beta");
    let versions = v["versions"].as_array().expect("versions");
    assert_eq!(versions[1]["name"], "beta");
    assert_eq!(versions[1]["weight"], 50.0);
    assert_eq!(v["users"]["within_4_sigma"], true);
    // anonymous: baseline, in this rollout only.
    assert_eq!(v["anonymous"]["policy"], "baseline");
    assert_eq!(versions[0]["anonymous"]["share"], 1.0);
    // The users counted are the rollout's own hash: salt "ios-beta".
    let plugin = plugin();
    let config = &plugin.rollouts[2].config;
    let split = config.split_at(0);
    let in_beta = (0..4000)
        .filter(|i| {
            let id = format!("user-{i}");
            split.version_of_bucket(bucket_of(
                &config.hash.key_prefix,
                id.as_bytes(),
                config.buckets,
            )) == 1
        })
        .count();
    assert_eq!(versions[1]["users"]["count"], in_beta);

    let o = run(
        &[
            "simulate",
            ROLLOUTS,
            "--rollout",
            "api-v2",
            "--users",
            "100",
            "--anonymous",
            "0",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o)
            .starts_with("rollout:   api-v2 (hosts api.example.com; path /v2/ or /api/v2/)\nat "),
        "{}",
        stdout(&o)
    );
}

//! The command-line tool and gRPC: `validate` shows which gRPC codes the guard
//! counts as failures and names the field of a bad code name; `explain` says how a
//! gRPC call's outcome is counted, and that gRPC-Web is not gRPC here.
//!
//! Runs `target/release/canary-router` (`make cli`; see tests/cli_support).

mod cli_support;

use cli_support::{code, run, stderr, stdout};
use serde_json::Value;

const GRPC_GUARD: &str = "tests/fixtures/configs/good/grpc-guard.json";
const BAD: &str = "tests/fixtures/configs/bad/grpc-status-errors.json";
const GUARD: &str = "tests/fixtures/configs/good/guard.json";

fn json(args: &[&str]) -> Value {
    let o = run(args, None);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("JSON")
}

#[test]
fn validate_shows_the_grpc_failure_codes_listed_or_by_default() {
    let o = run(&["validate", GRPC_GUARD], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with(
            "; a gRPC call fails on DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE\n"
        ),
        "{}",
        stdout(&o)
    );
    let v = json(&["validate", GRPC_GUARD, "--json"]);
    assert_eq!(
        v["guard"]["grpc_status"],
        serde_json::json!(["DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"])
    );
    let v = json(&["validate", GUARD, "--json"]);
    assert_eq!(
        v["guard"]["grpc_status"],
        serde_json::json!([
            "UNKNOWN",
            "DEADLINE_EXCEEDED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS"
        ])
    );
}

#[test]
fn a_bad_grpc_code_name_is_refused_with_its_field() {
    let o = run(&["validate", BAD], None);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains(
            "error: guard.grpc_status[1]: `unavailable` is not a gRPC status code name (OK, CANCELLED, ... UNAUTHENTICATED) (did you mean `UNAVAILABLE`?)"
        ),
        "{}",
        stderr(&o)
    );
    let o = run(&["validate", "-", "--json"], Some(br#"{"versions":[{"name":"stable"},{"name":"canary","weight":10}],"guard":{"version":"canary","max_error_rate":0.1,"grpc_status":[]}}"#));
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["errors"][0]["field"], "guard.grpc_status", "{v}");
}

#[test]
fn explain_says_how_a_grpc_call_is_counted_and_grpc_web_is_not_grpc() {
    let user = "x-user-id=qa-nobody";
    let v = json(&[
        "explain",
        GRPC_GUARD,
        "--json",
        "--header",
        user,
        "--header",
        "content-type=application/grpc+proto",
    ]);
    let notes = v["notes"].to_string();
    // By default (metrics.responses off) the filter counts no gRPC outcome.
    assert!(
        notes.contains(
            "a gRPC call (content-type \\\"application/grpc+proto\\\"): its outcome is its grpc-status code, not counted (metrics.responses is off)"
        ),
        "{notes}"
    );
    // Opted in, the note names the series it lands in.
    let mut opted_in: Value =
        serde_json::from_str(&std::fs::read_to_string(GRPC_GUARD).expect("fixture")).expect("JSON");
    opted_in["metrics"] = serde_json::json!({ "responses": true });
    let o = run(
        &[
            "explain",
            "-",
            "--json",
            "--header",
            user,
            "--header",
            "content-type=application/grpc+proto",
        ],
        Some(opted_in.to_string().as_bytes()),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let version = v["version"].as_str().expect("version").to_string();
    let notes = v["notes"].to_string();
    assert!(
        notes.contains(&format!(
            "a gRPC call (content-type \\\"application/grpc+proto\\\"): its outcome is its grpc-status code, counted in canary_grpc_responses_total{{version=\\\"{version}\\\",grpc_code}}"
        )),
        "{notes}"
    );
    // The guard's codes are named when the call goes to the guarded version.
    let forced = json(&[
        "explain",
        GRPC_GUARD,
        "--json",
        "--header",
        "x-user-id=u",
        "--header",
        "content-type=application/grpc",
        "--guard-tripped",
    ]);
    assert!(
        !forced["notes"]
            .to_string()
            .contains("the guard counts it failed"),
        "{forced}"
    );
    let mut found_canary_user = false;
    for user in (0..200).map(|i| format!("x-user-id=user-{i}")) {
        let v = json(&[
            "explain",
            GRPC_GUARD,
            "--json",
            "--header",
            &user,
            "--header",
            "content-type=application/grpc",
        ]);
        let guarded = v["version"] == "canary";
        assert_eq!(
            v["notes"].to_string().contains(
                "the guard counts it failed on DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE"
            ),
            guarded,
            "{v}"
        );
        if guarded {
            found_canary_user = true;
            break;
        }
    }
    assert!(found_canary_user, "one of 200 users is on the 10% canary");
    for not_grpc in [
        "content-type=application/grpc-web+proto",
        "content-type=application/json",
    ] {
        let v = json(&[
            "explain", GRPC_GUARD, "--json", "--header", user, "--header", not_grpc,
        ]);
        assert!(!v["notes"].to_string().contains("gRPC"), "{not_grpc}: {v}");
    }
}

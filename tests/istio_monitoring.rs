//! istio/monitoring/: the Prometheus rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`), which fail when the alert logic breaks; the
//! rules and the Grafana dashboard select only metrics and labels the filter
//! exports, or Istio's standard metrics scoped to one service; every dashboard query is valid PromQL; the dashboard has the panels
//! the issue asks for.

mod istio_support;

use istio_support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;

const RULES: &str = "istio/monitoring/prometheus-rules.yaml";
const RULE_TESTS: &str = "istio/monitoring/prometheus-rules.test.yaml";
const DASHBOARD: &str = "istio/monitoring/grafana-dashboard.json";

fn rules() -> Value {
    let docs = load_docs(&repo_root(), RULES).expect("rules YAML");
    docs[0].value.clone()
}

fn recorded_names(rules: &Value) -> BTreeSet<String> {
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&fs::read_to_string(repo_root().join(DASHBOARD)).expect("dashboard"))
        .expect("dashboard JSON")
}

/// Every (panel title, expr) of the dashboard.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_string()))
        })
        .collect()
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = repo_root().join("istio/monitoring");
    let (ok, out) = run_promtool(&["check", "rules", "prometheus-rules.yaml"], &dir);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 18 rules found"), "{out}");
    let (ok, out) = run_promtool(&["test", "rules", "prometheus-rules.test.yaml"], &dir);
    assert!(ok, "promtool test rules:\n{out}");
}

/// The unit tests are not vacuous: weakening an alert makes them fail.
#[test]
fn the_rule_tests_catch_a_broken_alert() {
    let original = fs::read_to_string(repo_root().join(RULES)).expect("rules");
    let tests = fs::read_to_string(repo_root().join(RULE_TESTS)).expect("rule tests");
    for (what, from, to, alert) in [
        (
            "error threshold",
            "(2 * canary:error_ratio",
            "(20 * canary:error_ratio",
            "CanaryErrorRateAboveStable",
        ),
        (
            "traffic floor",
            "canary:responses:rate5m{version!=\"stable\"} > 0.5",
            "canary:responses:rate5m{version!=\"stable\"} > 0",
            "CanaryErrorRateAboveStable",
        ),
        (
            "latency ratio",
            "(1.5 * canary:latency_ms",
            "(0.5 * canary:latency_ms",
            "CanaryLatencyAboveStable",
        ),
        (
            "gRPC error threshold",
            "(2 * canary:grpc_error_ratio",
            "(30 * canary:grpc_error_ratio",
            "CanaryGrpcErrorRateAboveStable",
        ),
        (
            "gRPC failure codes",
            "grpc_response_status=~\"2|4|13|14|15\"",
            "grpc_response_status=~\"2|13|14|15|5\"",
            "CanaryGrpcErrorRateAboveStable",
        ),
        (
            "5xx class",
            "response_code=~\"5..\"",
            "response_code=~\"4..\"",
            "CanaryErrorRateAboveStable",
        ),
        (
            "one service's own reports",
            "istio_requests_total{reporter=\"destination\",destination_service_name=\"myapp\",response_code",
            "istio_requests_total{response_code",
            "CanaryErrorRateAboveStable",
        ),
    ] {
        assert!(original.contains(from), "{what}: {from:?} not in the rules");
        let dir = temp_dir(&format!("rules-{}", what.replace(' ', "-")));
        fs::write(
            dir.join("prometheus-rules.yaml"),
            original.replacen(from, to, 1),
        )
        .expect("write");
        fs::write(dir.join("prometheus-rules.test.yaml"), &tests).expect("write");
        let (ok, out) = run_promtool(&["test", "rules", "prometheus-rules.test.yaml"], &dir);
        assert!(!ok, "{what}: the unit tests still pass with {to:?}");
        assert!(
            out.contains(alert) || out.contains("canary:error_ratio"),
            "{what}: {out}"
        );
        let _ = fs::remove_dir_all(dir);
    }
}

#[test]
fn the_rules_select_only_what_the_filter_exports() {
    let rules = rules();
    let recorded = recorded_names(&rules);
    let mut errors = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            errors.extend(check_selectors(expr, "canary", &recorded));
            errors.extend(check_istio_selectors(expr));
            if let Some(name) = rule["alert"].as_str() {
                alerts.insert(name.to_string());
                assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
                assert!(
                    rule["annotations"]["summary"].is_string(),
                    "{name}: summary"
                );
            }
            if let Some(name) = rule["record"].as_str() {
                // level:metric:operations
                assert_eq!(name.split(':').count(), 3, "{name}");
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    for a in [
        "CanaryErrorRateAboveStable",
        "CanaryLatencyAboveStable",
        "CanaryGuardTripped",
        "CanaryGrpcErrorRateAboveStable",
    ] {
        assert!(alerts.contains(a), "alert {a}");
    }
    // And the scanner does catch a wrong name, label or value.
    let none = BTreeSet::new();
    assert_eq!(
        check_selectors("rate(canary_request_total[5m])", "canary", &none).len(),
        1
    );
    assert_eq!(
        check_selectors("canary_requests_total{code_class=\"5xx\"}", "canary", &none).len(),
        1
    );
    assert_eq!(
        check_selectors(
            "canary_responses_total{code_class=\"500\"}",
            "canary",
            &none
        )
        .len(),
        1
    );
    assert_eq!(
        check_selectors("canary_requests_total{reason=\"sticky\"}", "canary", &none).len(),
        1
    );
    assert_eq!(
        check_selectors(
            "canary_grpc_responses_total{grpc_code=~\"UNAVAILABLE|UNAVAILBLE\"}",
            "canary",
            &none
        )
        .len(),
        1
    );
    assert_eq!(
        check_selectors(
            "canary_grpc_responses_total{grpc_code=\"14\"}",
            "canary",
            &none
        )
        .len(),
        1
    );
    assert!(check_selectors(
        "canary_requests_total{reason=\"user_list\"}",
        "canary",
        &none
    )
    .is_empty());
    // And the Istio side: unscoped, misspelled or unknown labels are caught.
    assert_eq!(
        check_istio_selectors("rate(istio_requests_total[5m])").len(),
        2
    );
    assert_eq!(
        check_istio_selectors(
            "istio_requests_total{reporter=\"destination\",destination_service_name=\"x\",code_class=\"5xx\"}"
        )
        .len(),
        1
    );
    assert_eq!(
        check_istio_selectors("istio_request_total{reporter=\"destination\"}").len(),
        1
    );
    assert!(check_istio_selectors(
        "istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_service_name=\"x\",le=\"5\"}"
    )
    .is_empty());
}

#[test]
fn the_dashboard_has_the_panels_and_every_query_is_valid_promql_on_exported_metrics() {
    let d = dashboard();
    assert!(d["title"].is_string() && d["uid"].is_string());
    assert!(
        d["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let panels = d["panels"].as_array().expect("panels");
    let ids: BTreeSet<u64> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids.len(), panels.len(), "unique panel ids");
    for p in panels {
        for key in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][key].is_u64(), "{}: gridPos.{key}", p["title"]);
        }
        assert!(
            p["gridPos"]["x"].as_u64().unwrap_or(99) + p["gridPos"]["w"].as_u64().unwrap_or(99)
                <= 24
        );
    }

    let queries = dashboard_queries(&d);
    // The panels, found by what they query.
    let has = |needle: &str| queries.iter().any(|(_, q)| q.contains(needle));
    assert!(
        has("sum by (version, reason) (rate(canary_requests_total"),
        "requests by version and reason"
    );
    assert!(
        has("sum by (version) (rate(canary_requests_total"),
        "requests by version"
    );
    // Response classes and latency per version: Istio's standard metrics, by the
    // serving pod's version (the filter's own are opt-in).
    assert!(
        has("response_code=~\"5..\"}[$__rate_interval]), \"version\", \"$1\", \"destination_version\""),
        "error rate per version"
    );
    assert!(
        has("histogram_quantile(0.99, sum by (version, le) (label_replace(rate(istio_request_duration_milliseconds_bucket"),
        "latency per version"
    );
    assert!(
        has("request_protocol=\"grpc\",grpc_response_status=~\"2|4|13|14|15\"}"),
        "gRPC error rate per version"
    );
    assert!(
        has("sum by (version, grpc_response_status) (label_replace(rate(istio_requests_total"),
        "gRPC calls by version and code"
    );
    assert!(has("canary_weight_basis_points"), "current weight");
    assert!(has("canary_guard_tripped"), "guard state");

    // Names and labels: the metric contract.
    let none = BTreeSet::new();
    let errors: Vec<String> = queries
        .iter()
        .flat_map(|(title, q)| {
            check_selectors(q, "canary", &none)
                .into_iter()
                .chain(check_istio_selectors(q))
                .map(move |e| format!("{title}: {e}"))
        })
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // Syntax: promtool parses each query as a recording rule (Grafana's
    // $__rate_interval stands for a range).
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, (_, q)) in queries.iter().enumerate() {
        let q = q.replace("$__rate_interval", "5m");
        rules.push_str(&format!(
            "  - record: dashboard:query_{i}:check\n    expr: {}\n",
            serde_json::to_string(&q).expect("quote")
        ));
    }
    let dir = temp_dir("dashboard-queries");
    fs::write(dir.join("queries.yaml"), &rules).expect("write");
    let (ok, out) = run_promtool(&["check", "rules", "queries.yaml"], &dir);
    assert!(ok, "dashboard queries:\n{out}\n{rules}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    // The same check fails on a broken query.
    fs::write(
        dir.join("queries.yaml"),
        "groups:\n- name: x\n  rules:\n  - record: a:b:c\n    expr: sum by (version (x)\n",
    )
    .expect("write");
    assert!(!run_promtool(&["check", "rules", "queries.yaml"], &dir).0);
    let _ = fs::remove_dir_all(dir);
}

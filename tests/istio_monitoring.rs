//! The Prometheus rules (istio/monitoring/ for Istio, envoy/monitoring/ for plain
//! Envoy) and the Grafana dashboard: both rules files pass `promtool check rules` and
//! their unit tests (`promtool test rules`), which fail when the alert logic breaks,
//! also for versions without failure series or without traffic; the shipped files are
//! `make monitoring`'s default rendering, and rendered for another service, rollout,
//! prefix, baseline and Envoy clusters they select that service's series and no
//! other (promtool tests on the rendered files); the rules and the dashboard select
//! only metrics and labels the filter exports, Istio's standard metrics scoped to one
//! service, or Envoy's cluster stats; every dashboard query is valid PromQL; the
//! dashboard has the panels and variables the issues ask for.

mod istio_support;

use istio_support::monitoring::*;
use istio_support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

fn read(file: &str) -> String {
    fs::read_to_string(repo_root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn rules_of(text: &str) -> Value {
    parse_yaml_stream(text).expect("rules YAML")[0].clone()
}

fn all_rules(rules: &Value) -> Vec<Value> {
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn recorded_names(rules: &Value) -> BTreeSet<String> {
    all_rules(rules)
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect()
}

fn alert_exprs(rules: &Value) -> BTreeMap<String, String> {
    all_rules(rules)
        .iter()
        .filter_map(|r| Some((r["alert"].as_str()?.to_string(), r["expr"].as_str()?.into())))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON")
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

/// Writes `rules` (as `rule_file`) and `tests` into a fresh directory and runs
/// `promtool test rules` there.
fn promtool_test(name: &str, rule_file: &str, rules: &str, tests: &str) -> (bool, String) {
    let dir = temp_dir(name);
    fs::write(dir.join(rule_file), rules).expect("write");
    fs::write(dir.join("tests.yaml"), tests).expect("write");
    let result = run_promtool(&["test", "rules", "tests.yaml"], &dir);
    let _ = fs::remove_dir_all(dir);
    result
}

#[test]
fn promtool_accepts_both_rules_files_and_their_unit_tests_pass() {
    for (rules, tests, count) in [
        (ISTIO_RULES, ISTIO_RULE_TESTS, 18),
        (ENVOY_RULES, ENVOY_RULE_TESTS, 18),
    ] {
        let path = repo_root().join(rules);
        let dir = path.parent().expect("dir");
        let file = |f: &str| {
            std::path::Path::new(f)
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        };
        let (ok, out) = run_promtool(&["check", "rules", &file(rules)], dir);
        assert!(ok, "promtool check rules {rules}:\n{out}");
        assert!(
            out.contains(&format!("SUCCESS: {count} rules found")),
            "{rules}: {out}"
        );
        let (ok, out) = run_promtool(&["test", "rules", &file(tests)], dir);
        assert!(ok, "promtool test rules {tests}:\n{out}");
        // The missing-series cases are there (issue 19), on HTTP and gRPC.
        let tests_text = read(tests);
        for case in [
            "failing canary beside a baseline without any 5xx series",
            "canary without any 5xx series",
            "healthy pair without any 5xx series",
            "canary without any traffic",
            "canary whose traffic stopped",
            "failing canary without any baseline traffic",
            "failing gRPC canary beside a baseline without any failure series",
            "gRPC canary without any failure series",
            "healthy gRPC pair without any failure series",
            "failing gRPC canary without any baseline gRPC traffic",
            "traffic share and guard per rollout",
        ] {
            assert!(
                tests_text.contains(&format!("- name: {case}\n")),
                "{tests}: no test {case:?}"
            );
        }
    }
}

/// The unit tests are not vacuous: weakening an alert, or reading a version without
/// failure series as nothing again, makes them fail (each mutation replaces every
/// occurrence in the rules file, comments included).
#[test]
fn the_rule_tests_catch_a_broken_alert() {
    let cases: [(&str, &str, &str, &[&str]); 12] = [
        (
            "error threshold",
            "(2 * canary:error_ratio",
            "(20 * canary:error_ratio",
            &[ISTIO_RULES, ENVOY_RULES],
        ),
        (
            "traffic floor",
            "canary:responses:rate5m{version!=\"stable\"} > 0.5",
            "canary:responses:rate5m{version!=\"stable\"} > 0",
            &[ISTIO_RULES, ENVOY_RULES],
        ),
        (
            "latency ratio",
            "(1.5 * canary:latency_ms",
            "(0.5 * canary:latency_ms",
            &[ISTIO_RULES, ENVOY_RULES],
        ),
        (
            "gRPC error threshold",
            "(2 * canary:grpc_error_ratio",
            "(30 * canary:grpc_error_ratio",
            &[ISTIO_RULES, ENVOY_RULES],
        ),
        (
            "gRPC failure codes",
            "grpc_response_status=~\"2|4|13|14|15\"",
            "grpc_response_status=~\"2|13|14|15|5\"",
            &[ISTIO_RULES],
        ),
        (
            "gRPC failure code names",
            "grpc_code=~\"UNKNOWN|DEADLINE_EXCEEDED|INTERNAL|UNAVAILABLE|DATA_LOSS\"",
            "grpc_code=~\"UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|NOT_FOUND\"",
            &[ENVOY_RULES],
        ),
        (
            "5xx class",
            "response_code=~\"5..\"",
            "response_code=~\"4..\"",
            &[ISTIO_RULES],
        ),
        (
            "Envoy's 5xx class",
            "canary:upstream_rq_xx:rate5m{envoy_response_code_class=\"5\"}",
            "canary:upstream_rq_xx:rate5m{envoy_response_code_class=\"4\"}",
            &[ENVOY_RULES],
        ),
        (
            "one service's own reports",
            "istio_requests_total{reporter=\"destination\",destination_service_namespace=\"myapp\",destination_service_name=\"myapp\",response_code",
            "istio_requests_total{response_code",
            &[ISTIO_RULES],
        ),
        // Issue 19: a version that never failed has no failure series.
        (
            "no 5xx series read as nothing",
            "(canary:errors:rate5m or canary:responses:rate5m * 0)",
            "(canary:errors:rate5m)",
            &[ISTIO_RULES, ENVOY_RULES],
        ),
        (
            "no gRPC failure series read as nothing",
            "(canary:grpc_errors:rate5m or canary:grpc_responses:rate5m * 0)",
            "(canary:grpc_errors:rate5m)",
            &[ISTIO_RULES, ENVOY_RULES],
        ),
        (
            "a ratio for a version without traffic (0/0)",
            "/ (canary:responses:rate5m > 0)",
            "/ canary:responses:rate5m",
            &[ISTIO_RULES, ENVOY_RULES],
        ),
    ];
    let mut mutations: Vec<(String, String, String, &str)> = cases
        .iter()
        .flat_map(|(what, from, to, files)| {
            files
                .iter()
                .map(move |f| (what.to_string(), from.to_string(), to.to_string(), *f))
        })
        .collect();
    // No baseline traffic: a failing canary must still page (the 1% bar), a canary
    // under it must not, and latency has no bar to fall back to.
    for file in [ISTIO_RULES, ENVOY_RULES] {
        mutations.push((
            "no bar without a baseline".into(),
            "or on(rollout)\n          (0.01 * group by (rollout) (canary:error_ratio:rate5m{version!=\"stable\"}))".into(),
            "or on(rollout)\n          (0.01 * group by (rollout) (canary:error_ratio:rate5m{version=\"none\"}))".into(),
            file,
        ));
        mutations.push((
            "a 0% bar without a baseline".into(),
            "(0.01 * group by (rollout) (canary:error_ratio:rate5m".into(),
            "(0 * group by (rollout) (canary:error_ratio:rate5m".into(),
            file,
        ));
        mutations.push((
            "no gRPC bar without a baseline".into(),
            "(0.01 * group by (rollout) (canary:grpc_error_ratio:rate5m{version!=\"stable\"})"
                .into(),
            "(0.01 * group by (rollout) (canary:grpc_error_ratio:rate5m{version=\"none\"})".into(),
            file,
        ));
        mutations.push((
            "latency against a baseline without traffic".into(),
            "canary:latency_ms:p99_5m{version=\"stable\"}".into(),
            "(canary:latency_ms:p99_5m{version=\"stable\"} or on(rollout) 0 * group by (rollout) (canary:latency_ms:p99_5m{version!=\"stable\"}))".into(),
            file,
        ));
        mutations.push((
            "shares over every rollout".into(),
            "group_left() sum by (rollout) (canary:requests:rate5m)".into(),
            "group_left() sum(canary:requests:rate5m)".into(),
            file,
        ));
    }
    mutations.push((
        "another namespace's namesake".into(),
        "destination_service_namespace=\"myapp\",destination_service_name=\"myapp\",response_code"
            .into(),
        "destination_service_name=\"myapp\",response_code".into(),
        ISTIO_RULES,
    ));
    mutations.push((
        "clusters of no version".into(),
        "envoy_cluster_upstream_rq_xx{envoy_cluster_name=~\"stable|canary\"}".into(),
        "envoy_cluster_upstream_rq_xx{envoy_cluster_name=~\".+\"}".into(),
        ENVOY_RULES,
    ));
    // promtool runs a few at a time (each mutation in its own directory).
    let check = |i: usize, (what, from, to, file): &(String, String, String, &str)| {
        let (rules, tests) = if *file == ISTIO_RULES {
            (read(ISTIO_RULES), read(ISTIO_RULE_TESTS))
        } else {
            (read(ENVOY_RULES), read(ENVOY_RULE_TESTS))
        };
        assert!(rules.contains(from), "{what}: {from:?} not in {file}");
        let mutated = rules.replace(from, to);
        // The mutated rules still load: the tests fail on their logic.
        let dir = temp_dir(&format!("mutation-check-{i}"));
        fs::write(dir.join("rules.yaml"), &mutated).expect("write");
        let (loads, out) = run_promtool(&["check", "rules", "rules.yaml"], &dir);
        let _ = fs::remove_dir_all(dir);
        assert!(loads, "{what} ({file}): {out}");
        let (ok, _) = promtool_test(
            &format!("mutation-{i}"),
            "prometheus-rules.yaml",
            &mutated,
            &tests,
        );
        assert!(
            !ok,
            "{what}: the unit tests of {file} still pass with {to:?}"
        );
    };
    let indexed: Vec<_> = mutations.iter().enumerate().collect();
    for chunk in indexed.chunks(4) {
        std::thread::scope(|scope| {
            let running: Vec<_> = chunk
                .iter()
                .map(|(i, m)| scope.spawn(move || check(*i, m)))
                .collect();
            for thread in running {
                if let Err(panic) = thread.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
    }
}

#[test]
fn the_shipped_files_are_the_default_rendering() {
    let target = Target::default();
    assert_eq!(
        render_istio_rules(&read(ISTIO_RULES), &target).expect("render"),
        read(ISTIO_RULES)
    );
    assert_eq!(
        render_envoy_rules(&read(ENVOY_RULES), &target).expect("render"),
        read(ENVOY_RULES)
    );
    assert_eq!(
        render_dashboard(&read(DASHBOARD), &target).expect("render"),
        read(DASHBOARD)
    );
    // The Envoy rules name the clusters envoy/envoy.yaml routes each version to.
    let from_bootstrap = envoy_yaml_clusters(&repo_root()).expect("envoy.yaml");
    assert_eq!(from_bootstrap, target.envoy_clusters);
    let rules = read(ENVOY_RULES);
    for metric in ENVOY_CLUSTER_METRICS {
        assert_eq!(
            rules
                .matches(&envoy_versions_expr(metric, &from_bootstrap))
                .count(),
            1,
            "{metric}"
        );
    }
}

/// Both files raise the same alerts on the same logic; only where the series come
/// from differs (and the proxy-wide alerts each platform has).
#[test]
fn istio_and_envoy_rules_share_the_alert_logic() {
    let istio = alert_exprs(&rules_of(&read(ISTIO_RULES)));
    let envoy = alert_exprs(&rules_of(&read(ENVOY_RULES)));
    for alert in [
        "CanaryErrorRateAboveStable",
        "CanaryGrpcErrorRateAboveStable",
        "CanaryLatencyAboveStable",
        "CanaryGuardTripped",
    ] {
        assert_eq!(istio.get(alert), envoy.get(alert), "{alert}");
        assert!(istio.contains_key(alert), "{alert}");
    }
    assert!(envoy.contains_key("CanaryRouterConfigNotTaken"));
    let istio_records = recorded_names(&rules_of(&read(ISTIO_RULES)));
    let envoy_records = recorded_names(&rules_of(&read(ENVOY_RULES)));
    assert!(
        istio_records.is_subset(&envoy_records),
        "{istio_records:?} {envoy_records:?}"
    );
}

/// The test series of a rendered target: `checkout` in namespace `shop`, versions
/// `v1` (baseline, never failed) and `v2` (failing 1 in 4), beside the shipped
/// example's series (myapp failing) and checkout's namesake in another namespace
/// (failing), which must not count.
fn istio_series(rollout: Option<&str>, prefix: &str) -> String {
    let s = |ns: &str, svc: &str, v: &str, code: &str, values: &str| {
        format!(
            "  - series: 'istio_requests_total{{reporter=\"destination\",destination_service_namespace=\"{ns}\",destination_service_name=\"{svc}\",destination_version=\"{v}\",response_code=\"{code}\"}}'\n    values: '{values}'\n"
        )
    };
    let filter = |rollout: Option<&str>, v: &str, values: &str| {
        let r = rollout
            .map(|r| format!("rollout=\"{r}\","))
            .unwrap_or_default();
        format!(
            "  - series: '{prefix}_requests_total{{{r}version=\"{v}\",reason=\"hash\"}}'\n    values: '{values}'\n"
        )
    };
    let mut series = String::new();
    series += &s("shop", "checkout", "v1", "200", "0+600x30");
    series += &s("shop", "checkout", "v2", "200", "0+45x30");
    series += &s("shop", "checkout", "v2", "503", "0+15x30");
    series += &s("myapp", "myapp", "stable", "200", "0+600x30");
    series += &s("myapp", "myapp", "canary", "503", "0+600x30");
    series += &s("other", "checkout", "v1", "503", "0+600x30");
    series += &filter(rollout, "v1", "0+540x30");
    series += &filter(rollout, "v2", "0+60x30");
    // Another rollout of the same config (same prefix): never in this one's shares.
    if rollout.is_some() {
        series += &filter(Some("cart"), "v1", "0+30x30");
        series += &filter(Some("cart"), "v2", "0+30x30");
    }
    series
}

fn envoy_series(rollout: Option<&str>, prefix: &str) -> String {
    let s = |cluster: &str, class: &str, values: &str| {
        format!(
            "  - series: 'envoy_cluster_upstream_rq_xx{{envoy_cluster_name=\"{cluster}\",envoy_response_code_class=\"{class}\"}}'\n    values: '{values}'\n"
        )
    };
    let mut series = String::new();
    series += &s("checkout_v1", "2", "0+600x30");
    series += &s(
        "outbound|80||checkout-v2.shop.svc.cluster.local",
        "2",
        "0+45x30",
    );
    series += &s(
        "outbound|80||checkout-v2.shop.svc.cluster.local",
        "5",
        "0+15x30",
    );
    // The shipped clusters, failing; and one the map's escaping must not match.
    series += &s("stable", "5", "0+600x30");
    series += &s("canary", "5", "0+600x30");
    series += &s("checkout_v1x", "5", "0+600x30");
    let r = rollout
        .map(|r| format!("rollout=\"{r}\","))
        .unwrap_or_default();
    series += &format!(
        "  - series: '{prefix}_requests_total{{{r}version=\"v1\",reason=\"hash\"}}'\n    values: '0+540x30'\n  - series: '{prefix}_requests_total{{{r}version=\"v2\",reason=\"hash\"}}'\n    values: '0+60x30'\n"
    );
    series
}

/// A promtool test of a rendered file: the error ratios and the traffic shares of
/// `checkout`'s versions, and the error alert firing for v2 (with the rollout label).
fn rendered_target_test(
    rule_file: &str,
    series: &str,
    prefix: &str,
    rollout: Option<&str>,
) -> String {
    let r = rollout
        .map(|r| format!("rollout=\"{r}\","))
        .unwrap_or_default();
    format!(
        "rule_files:\n- {rule_file}\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  input_series:\n{series}  promql_expr_test:\n  - expr: {prefix}:error_ratio:rate5m\n    eval_time: 10m\n    exp_samples:\n    - labels: '{prefix}:error_ratio:rate5m{{{r}version=\"v1\"}}'\n      value: 0\n    - labels: '{prefix}:error_ratio:rate5m{{{r}version=\"v2\"}}'\n      value: 0.25\n  - expr: {prefix}:traffic_share:rate5m\n    eval_time: 10m\n    exp_samples:\n    - labels: '{prefix}:traffic_share:rate5m{{{r}version=\"v1\"}}'\n      value: 0.9\n    - labels: '{prefix}:traffic_share:rate5m{{{r}version=\"v2\"}}'\n      value: 0.1\n  - expr: ALERTS{{alertstate=\"firing\"}}\n    eval_time: 10m\n    exp_samples:\n    - labels: 'ALERTS{{alertname=\"CanaryErrorRateAboveStable\",alertstate=\"firing\",severity=\"critical\",{r}version=\"v2\"}}'\n      value: 1\n"
    )
}

fn checkout(rollout: Option<&str>, prefix: &str) -> Target {
    Target {
        service: "checkout".into(),
        namespace: "shop".into(),
        rollout: rollout.map(str::to_string),
        prefix: prefix.into(),
        baseline: "v1".into(),
        envoy_clusters: parse_cluster_map(
            "checkout_v1=v1, outbound|80||checkout-v2.shop.svc.cluster.local=v2",
        )
        .expect("map"),
    }
}

#[test]
fn rendered_for_another_service_the_rules_select_its_series_only() {
    for (rollout, prefix) in [(None, "canary"), (Some("checkout"), "shop")] {
        let target = checkout(rollout, prefix);
        let files = render_monitoring(&repo_root(), &target).unwrap_or_else(|e| panic!("{e:?}"));
        let text = |path: &str| {
            files
                .iter()
                .find(|f| f.path == path)
                .unwrap_or_else(|| panic!("{path} rendered"))
                .text
                .clone()
        };
        for (path, series) in [
            (OUT_ISTIO_RULES, istio_series(rollout, prefix)),
            (OUT_ENVOY_RULES, envoy_series(rollout, prefix)),
        ] {
            let rules = text(path);
            let label = format!("{path} rollout={rollout:?} prefix={prefix}");
            // Valid rules, nothing of the shipped example left in the expressions.
            let dir = temp_dir("rendered-check");
            fs::write(dir.join(path), &rules).expect("write");
            let (ok, out) = run_promtool(&["check", "rules", path], &dir);
            let _ = fs::remove_dir_all(dir);
            assert!(ok, "{label}: {out}\n{rules}");
            for rule in all_rules(&rules_of(&rules)) {
                let expr = rule["expr"].as_str().expect("expr");
                for shipped in ["\"myapp\"", "\"stable\"", "stable|canary", "\"canary\""] {
                    assert!(!expr.contains(shipped), "{label}: {shipped} in {expr}");
                }
                if prefix != "canary" {
                    assert!(
                        !expr.replace("canary_config_", "").contains("canary"),
                        "{label}: {expr}"
                    );
                }
                if let Some(r) = rollout {
                    // Every series read is this rollout's.
                    let scoped = expr.contains(&format!("rollout=\"{r}\""))
                        || expr.contains(&format!("\"rollout\", \"{r}\""))
                        || expr.contains("canary_config_")
                        || rule["alert"] == "WasmModuleFetchFailing"
                        || rule["alert"] == "IstioEcdsRejected";
                    assert!(scoped, "{label}: not scoped to the rollout: {expr}");
                }
            }
            let tests = rendered_target_test(path, &series, prefix, rollout);
            let (ok, out) = promtool_test("rendered", path, &rules, &tests);
            assert!(
                ok,
                "{label}:\n{out}\n--- rules\n{rules}\n--- tests\n{tests}"
            );
            // The same test fails on the shipped rules (it is not vacuous).
            let shipped = if path == OUT_ISTIO_RULES {
                read(ISTIO_RULES)
            } else {
                read(ENVOY_RULES)
            };
            assert!(!promtool_test("rendered-shipped", path, &shipped, &tests).0);
        }
        // The dashboard: valid, the prefix renamed, the variables' defaults set.
        let d: Value = serde_json::from_str(&text(OUT_DASHBOARD)).expect("dashboard JSON");
        let var = |name: &str| {
            d["templating"]["list"]
                .as_array()
                .expect("variables")
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("variable {name}"))
                .clone()
        };
        assert_eq!(var("service")["current"]["value"], "checkout");
        assert_eq!(var("namespace")["current"]["value"], "shop");
        match rollout {
            Some(r) => assert_eq!(var("rollout")["current"]["value"], r),
            None => assert_eq!(var("rollout")["current"]["value"], "$__all"),
        }
        let queries = dashboard_queries(&d);
        assert!(
            queries
                .iter()
                .any(|(_, q)| q
                    .contains(&format!("{prefix}_requests_total{{rollout=~\"$rollout\"}}")))
        );
    }
}

#[test]
fn the_renderer_refuses_what_would_not_work_and_scopes_exactly() {
    let bad = Target {
        service: "Check Out".into(),
        namespace: "shop\"".into(),
        rollout: Some("a\"b".into()),
        prefix: "9x".into(),
        baseline: "v 1".into(),
        envoy_clusters: vec![("c1".into(), "v2".into()), ("c1".into(), "v3".into())],
    };
    let errors = render_monitoring(&repo_root(), &bad).expect_err("refused");
    let all = errors.join("\n");
    for needle in [
        "service \"Check Out\"",
        "namespace \"shop\\\"\"",
        "rollout \"a\\\"b\"",
        "metrics prefix \"9x\"",
        "baseline \"v 1\"",
        "envoy cluster c1 is listed twice",
        "no cluster serves the baseline",
    ] {
        assert!(all.contains(needle), "{needle} not in:\n{all}");
    }
    assert!(parse_cluster_map("a=b,c").is_err());
    assert_eq!(
        parse_cluster_map(" a=b , c=d ").expect("map"),
        [("a".to_string(), "b".to_string()), ("c".into(), "d".into())]
    );
    // The renderer insists on finding what it replaces.
    let errors =
        render_istio_rules("groups: []\n", &Target::default()).expect_err("nothing to render");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("destination_service_name")),
        "{errors:?}"
    );

    // Scoping: the filter's series and the records get the matcher, the config
    // health series and comments do not; Istio/Envoy series are labelled.
    let yaml = "# canary_requests_total{version}\n- record: canary:a:b\n  expr: sum by (rollout, version) (rate(canary_requests_total[5m])) / canary:x:y{version=\"s\"} + canary:z:w{}\n- alert: A\n  expr: |\n    max(canary_config_stale) > 0\n    and sum(label_replace(rate(istio_requests_total{a=\"(b)\"}[5m]), \"version\", \"$1\", \"destination_version\", \"(.*)\"))\n  annotations:\n    summary: 'canary_requests_total'\n";
    let scoped = scope_to_rollout(yaml, "canary", "r1");
    assert_eq!(
        scoped,
        "# canary_requests_total{version}\n- record: canary:a:b\n  expr: sum by (rollout, version) (rate(canary_requests_total{rollout=\"r1\"}[5m])) / canary:x:y{rollout=\"r1\",version=\"s\"} + canary:z:w{rollout=\"r1\"}\n- alert: A\n  expr: |\n    max(canary_config_stale) > 0\n    and sum(label_replace(label_replace(rate(istio_requests_total{a=\"(b)\"}[5m]), \"rollout\", \"r1\", \"\", \"\"), \"version\", \"$1\", \"destination_version\", \"(.*)\"))\n  annotations:\n    summary: 'canary_requests_total'\n"
    );
    // Envoy cluster names are matched literally.
    assert_eq!(
        regex_literal("outbound|80||a.b"),
        "outbound\\|80\\|\\|a\\.b"
    );
    assert_eq!(promql_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
}

#[test]
fn the_rules_select_only_what_the_filter_and_the_proxy_export() {
    for file in [ISTIO_RULES, ENVOY_RULES] {
        let rules = rules_of(&read(file));
        let recorded = recorded_names(&rules);
        let mut errors = Vec::new();
        let mut alerts = BTreeSet::new();
        for rule in all_rules(&rules) {
            let expr = rule["expr"].as_str().expect("expr");
            errors.extend(check_selectors(expr, "canary", &recorded));
            errors.extend(check_istio_selectors(expr));
            errors.extend(check_envoy_selectors(expr));
            if file == ENVOY_RULES {
                assert!(!expr.contains("istio_"), "{file}: {expr}");
            }
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
                // Grouped by version, grouped by rollout too (issue 21).
                assert!(
                    !expr.contains("by (version"),
                    "{file}: {name} groups by version without rollout"
                );
            }
        }
        assert!(errors.is_empty(), "{file}:\n{}", errors.join("\n"));
        for a in [
            "CanaryErrorRateAboveStable",
            "CanaryLatencyAboveStable",
            "CanaryGuardTripped",
            "CanaryGrpcErrorRateAboveStable",
            "CanaryRouterConfigNotTaken",
        ] {
            assert!(alerts.contains(a), "{file}: alert {a}");
        }
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
        "canary_requests_total{reason=\"user_list\",rollout=\"shop\"}",
        "canary",
        &none
    )
    .is_empty());
    // The config health series have no rollout.
    assert_eq!(
        check_selectors("canary_config_stale{rollout=\"x\"}", "canary", &none).len(),
        1
    );
    // And the Istio side: unscoped, misspelled or unknown labels are caught.
    assert_eq!(
        check_istio_selectors("rate(istio_requests_total[5m])").len(),
        3
    );
    assert_eq!(
        check_istio_selectors(
            "istio_requests_total{reporter=\"destination\",destination_service_namespace=\"y\",destination_service_name=\"x\",code_class=\"5xx\"}"
        )
        .len(),
        1
    );
    assert_eq!(
        check_istio_selectors(
            "istio_requests_total{reporter=\"destination\",destination_service_name=\"x\"}"
        )
        .len(),
        1,
        "a namesake in another namespace would mix in"
    );
    assert_eq!(
        check_istio_selectors("istio_request_total{reporter=\"destination\"}").len(),
        1
    );
    assert!(check_istio_selectors(
        "istio_request_duration_milliseconds_bucket{reporter=\"destination\",destination_service_namespace=\"y\",destination_service_name=\"x\",le=\"5\"}"
    )
    .is_empty());
    // And Envoy's.
    assert_eq!(
        check_envoy_selectors("rate(envoy_cluster_upstream_rq_xx[5m])").len(),
        1
    );
    assert_eq!(
        check_envoy_selectors(
            "envoy_cluster_upstream_rq_xx{envoy_cluster_name=\"a\",envoy_response_code=\"5\"}"
        )
        .len(),
        1
    );
    assert_eq!(
        check_envoy_selectors("envoy_cluster_upstream_rq_totl{envoy_cluster_name=\"a\"}").len(),
        1
    );
}

#[test]
fn the_dashboard_has_the_panels_and_variables_and_every_query_is_valid_promql() {
    let d = dashboard();
    assert!(d["title"].is_string() && d["uid"].is_string());
    let variables = d["templating"]["list"].as_array().expect("templating");
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    for name in ["namespace", "service", "rollout"] {
        let v = variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name}"));
        assert_eq!(v["type"], "query", "{name}");
        assert!(v["query"]
            .as_str()
            .is_some_and(|q| q.starts_with("label_values(")));
    }
    // The rollout variable must also match series without the label (single-rollout
    // configs): All is `.*`, which matches the empty value.
    let rollout = variables
        .iter()
        .find(|v| v["name"] == "rollout")
        .expect("rollout");
    assert_eq!(rollout["includeAll"], true);
    assert_eq!(rollout["allValue"], ".*");

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
        has("sum by (rollout, version, reason) (rate(canary_requests_total{rollout=~\"$rollout\"}"),
        "requests by version and reason"
    );
    assert!(
        has("sum by (rollout, version) (rate(canary_requests_total{rollout=~\"$rollout\"}"),
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
    for (title, q) in &queries {
        // Every query follows the variables: Istio's by service and namespace, the
        // filter's by rollout.
        if q.contains("istio_request") {
            assert!(
                q.contains("destination_service_namespace=\"$namespace\",destination_service_name=\"$service\""),
                "{title}: {q}"
            );
            assert!(!q.contains("myapp"), "{title}: {q}");
        }
        for s in selectors(q, &["canary_"]) {
            assert!(
                s.matchers
                    .iter()
                    .any(|(l, op, v)| l == "rollout" && op == "=~" && v == "$rollout"),
                "{title}: {} not scoped to $rollout",
                s.metric
            );
        }
        // A version with traffic and no failure series reads 0 in the ratio panels.
        if q.contains("response_code=~\"5..\"") || q.contains("grpc_response_status=~") {
            assert!(q.contains(" * 0) / "), "{title}: {q}");
        }
    }

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

    // Syntax: promtool parses each query (and each variable's label_values matcher)
    // as a recording rule (Grafana's $__rate_interval stands for a range).
    let mut exprs: Vec<String> = queries.iter().map(|(_, q)| q.clone()).collect();
    for v in variables.iter().filter(|v| v["type"] == "query") {
        let q = v["query"].as_str().expect("query");
        let selector = q
            .trim_start_matches("label_values(")
            .rsplit_once(',')
            .map(|(s, _)| s)
            .expect("label_values(SELECTOR, LABEL)");
        exprs.push(selector.to_string());
    }
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, q) in exprs.iter().enumerate() {
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
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
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

/// The dashboard's error-ratio panel reads a version with traffic and no 5xx series
/// as 0 (promtool evaluates the panel's query on such series).
#[test]
fn the_dashboards_ratio_panels_read_a_version_without_failures_as_zero() {
    let d = dashboard();
    let queries = dashboard_queries(&d);
    let find = |needle: &str| {
        queries
            .iter()
            .find(|(_, q)| q.contains(needle))
            .map(|(_, q)| q.clone())
            .unwrap_or_else(|| panic!("{needle}"))
    };
    let http = find("response_code=~\"5..\"");
    let grpc = find("grpc_response_status=~");
    let bind = |q: &str| {
        q.replace("$__rate_interval", "5m")
            .replace("$namespace", "myapp")
            .replace("$service", "myapp")
    };
    let series = "  - series: 'istio_requests_total{reporter=\"destination\",destination_service_namespace=\"myapp\",destination_service_name=\"myapp\",destination_version=\"stable\",response_code=\"200\",request_protocol=\"grpc\",grpc_response_status=\"0\"}'\n    values: '0+600x30'\n";
    let tests = format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n- interval: 1m\n  input_series:\n{series}  promql_expr_test:\n  - expr: {}\n    eval_time: 10m\n    exp_samples:\n    - labels: '{{version=\"stable\"}}'\n      value: 0\n  - expr: {}\n    eval_time: 10m\n    exp_samples:\n    - labels: '{{version=\"stable\"}}'\n      value: 0\n",
        serde_json::to_string(&bind(&http)).expect("quote"),
        serde_json::to_string(&bind(&grpc)).expect("quote"),
    );
    let dir = temp_dir("dashboard-zero");
    fs::write(dir.join("tests.yaml"), &tests).expect("write");
    let (ok, out) = run_promtool(&["test", "rules", "tests.yaml"], &dir);
    let _ = fs::remove_dir_all(dir);
    assert!(ok, "{out}\n{tests}");
}

//! The manifests for Flagger and Argo Rollouts (istio/controllers/): each validates
//! against its CRD schema (Istio's EnvoyFilter and WasmPlugin, Flagger's Canary and
//! MetricTemplate, Argo Rollouts' Rollout and AnalysisTemplate; vendored under
//! tests/fixtures/ with their SOURCE; unknown fields rejected), they fit together
//! with the filter's config, and the EnvoyFilter's patch, merged the way Istio
//! merges it into a route of the shape Istio renders, loads into a real Envoy and
//! routes each user by the filter's pick value. Merged into a one-destination
//! route (what Istio renders at 0% or 100%), Envoy refuses it: why the EnvoyFilter
//! must match only the weighted route.

mod harness;
mod istio_support;

use canary_router::bucket::bucket_of;
use canary_router::pick::{destination_of, pick_value};
use harness::{Envoy, EnvoyOptions};
use istio_support::{
    load_docs, of_kind, parse_plugin_config, repo_root, run_promtool, temp_dir, Doc, Schemas,
    CONTROLLER_CRD_DIRS, CRD_DIR,
};
use serde_json::{json, Value};

const FILES: [&str; 2] = [
    "istio/controllers/flagger.yaml",
    "istio/controllers/argo-rollouts.yaml",
];

fn schemas() -> Schemas {
    let mut dirs = vec![CRD_DIR];
    dirs.extend(CONTROLLER_CRD_DIRS);
    Schemas::load_dirs(&dirs)
}

fn docs(file: &str) -> Vec<Doc> {
    load_docs(&repo_root(), file).unwrap_or_else(|e| panic!("{e}"))
}

fn one<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind} in {}", docs[0].file);
    found[0]
}

#[test]
fn every_controller_manifest_validates_against_its_crd_schema() {
    let schemas = schemas();
    for (group, kind) in [
        ("networking.istio.io/v1alpha3", "EnvoyFilter"),
        ("flagger.app/v1beta1", "Canary"),
        ("flagger.app/v1beta1", "MetricTemplate"),
        ("argoproj.io/v1alpha1", "Rollout"),
        ("argoproj.io/v1alpha1", "AnalysisTemplate"),
    ] {
        assert!(schemas.find(group, kind).is_some(), "no schema for {kind}");
    }
    let mut kinds = Vec::new();
    for file in FILES {
        for doc in docs(file) {
            let errors = schemas.validate(&doc);
            assert!(errors.is_empty(), "{}:\n{}", doc.id(), errors.join("\n"));
            kinds.push(doc.kind().to_string());
        }
    }
    for kind in [
        "WasmPlugin",
        "EnvoyFilter",
        "Canary",
        "MetricTemplate",
        "Rollout",
        "AnalysisTemplate",
        "VirtualService",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} shipped");
    }
}

#[test]
fn the_validation_rejects_unknown_fields_and_wrong_types() {
    let schemas = schemas();
    for file in FILES {
        for doc in docs(file) {
            if doc.kind() == "Service" {
                continue;
            }
            let mut broken = doc.clone();
            broken.value["spec"]["notAField"] = json!(true);
            assert!(
                !schemas.validate(&broken).is_empty(),
                "{}: an unknown spec field passed",
                doc.id()
            );
        }
    }
    let flagger = docs(FILES[0]);
    let mut canary = one(&flagger, "Canary").clone();
    canary.value["spec"]["analysis"]["stepWeights"] = json!(["ten"]);
    assert!(!schemas.validate(&canary).is_empty());
    let argo = docs(FILES[1]);
    let mut rollout = one(&argo, "Rollout").clone();
    rollout.value["spec"]["strategy"]["canary"]["steps"][0]["setHeaderRoute"]["match"][0]
        ["headerValue"]["exactly"] = json!("canary");
    assert!(!schemas.validate(&rollout).is_empty());
    let mut filter = one(&argo, "EnvoyFilter").clone();
    filter.value["spec"]["configPatches"][0]["applyTo"] = json!("HTTP_ROUTES");
    assert!(!schemas.validate(&filter).is_empty());
}

/// The header the EnvoyFilter makes Envoy read, and the route name it matches.
fn envoy_filter_target(docs: &[Doc]) -> (String, String, Value) {
    let filter = one(docs, "EnvoyFilter");
    let patches = filter.value["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches.len(), 1);
    let patch = &patches[0];
    assert_eq!(patch["applyTo"], "HTTP_ROUTE");
    assert_eq!(patch["patch"]["operation"], "MERGE");
    assert_eq!(patch["match"]["context"], "SIDECAR_OUTBOUND");
    let route_name = patch["match"]["routeConfiguration"]["vhost"]["route"]["name"]
        .as_str()
        .expect("the EnvoyFilter matches a route by name, never every route")
        .to_string();
    let value = patch["patch"]["value"].clone();
    let header = value["route"]["weighted_clusters"]["header_name"]
        .as_str()
        .expect("route.weighted_clusters.header_name")
        .to_string();
    // Nothing else is merged: any other field would change the controller's route.
    assert_eq!(
        value,
        json!({"route": {"weighted_clusters": {"header_name": header}}})
    );
    (header, route_name, value)
}

#[test]
fn the_manifests_fit_together_and_with_the_filters_config() {
    for file in FILES {
        let docs = docs(file);
        let (header, route_name, _) = envoy_filter_target(&docs);
        let plugin = one(&docs, "WasmPlugin");
        let config = parse_plugin_config(plugin).unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let pick = config.hash.pick.as_ref().expect("pick mode");
        assert_eq!(
            pick.header, header,
            "{file}: the filter writes what Envoy reads"
        );
        assert_eq!(pick.total, 100, "{file}: Istio's weights sum to 100");
        assert_eq!(config.buckets, 100, "{file}: Unleash-equal cohorts");
        // The EnvoyFilter and the plugin apply to the same (calling) workloads.
        assert_eq!(
            one(&docs, "EnvoyFilter").value["spec"]["workloadSelector"]["labels"],
            plugin.value["spec"]["selector"]["matchLabels"],
            "{file}"
        );
        let names: Vec<&str> = config.versions.iter().map(|v| v.name.as_str()).collect();
        let vhost = one(&docs, "EnvoyFilter").value["spec"]["configPatches"][0]["match"]
            ["routeConfiguration"]["vhost"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        // The plugin runs on every outbound request to port 80 of its callers:
        // `hosts` keeps it to the routed service, under every name a caller in the
        // namespace may use for it (short, namespaced, FQDN), and to no other.
        let hosts = config.hosts.as_ref().expect("hosts");
        let fqdn = vhost.trim_end_matches(":80");
        let short = fqdn.split('.').next().unwrap();
        let namespaced = fqdn.trim_end_matches(".svc.cluster.local");
        for name in [short, namespaced, fqdn, vhost.as_str()] {
            assert!(hosts.admits(Some(name.as_bytes())), "{file}: {name}");
        }
        for other in [
            "other",
            "other.myapp.svc.cluster.local",
            "myapp-canary",
            "example.com",
        ] {
            assert!(!hosts.admits(Some(other.as_bytes())), "{file}: {other}");
        }
        if file.contains("flagger") {
            let canary = one(&docs, "Canary");
            let spec = &canary.value["spec"];
            // Istio names the route `<http name>.<match name>`; Flagger's has no http name.
            let match_name = spec["service"]["match"][0]["name"].as_str().unwrap();
            assert_eq!(route_name, format!(".{match_name}"));
            let target = spec["targetRef"]["name"].as_str().unwrap();
            assert_eq!(
                vhost,
                format!(
                    "{target}.{}.svc.cluster.local:{}",
                    canary.namespace(),
                    spec["service"]["port"]
                )
            );
            // Flagger's services are <target>-primary and <target>-canary: the cluster
            // names map to the versions, baseline first.
            assert_eq!(names, ["primary", "canary"]);
            for (i, service) in ["primary", "canary"].iter().enumerate() {
                let cluster = format!("outbound|80||{target}-{service}.myapp.svc.cluster.local");
                assert_eq!(
                    canary_router::pick::version_of_cluster(
                        cluster.as_bytes(),
                        names.iter().copied()
                    ),
                    Some(i)
                );
            }
            let template = one(&docs, "MetricTemplate");
            assert_eq!(
                spec["analysis"]["metrics"][0]["templateRef"]["name"],
                template.value["metadata"]["name"]
            );
            assert!(template.value["spec"]["query"]
                .as_str()
                .unwrap()
                .contains("istio_requests_total"));
            assert_eq!(config.guard.as_ref().map(|g| g.version), Some(1));
        } else {
            let rollout = one(&docs, "Rollout");
            let canary = &rollout.value["spec"]["strategy"]["canary"];
            let vs = one(&docs, "VirtualService");
            let vs_name = &canary["trafficRouting"]["istio"]["virtualService"]["name"];
            assert_eq!(vs_name, &vs.value["metadata"]["name"]);
            assert_eq!(
                canary["trafficRouting"]["istio"]["virtualService"]["routes"],
                json!([route_name])
            );
            // The weighted route lists stable first (the documented order).
            let http = vs.value["spec"]["http"].as_array().unwrap();
            let weighted = http
                .iter()
                .find(|r| r["name"] == route_name.as_str())
                .unwrap();
            let hosts: Vec<&str> = weighted["route"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["destination"]["host"].as_str().unwrap())
                .collect();
            for (i, (service, version)) in
                [("stableService", "stable"), ("canaryService", "canary")]
                    .iter()
                    .enumerate()
            {
                let svc = canary[*service].as_str().unwrap();
                assert!(hosts[i].starts_with(&format!("{svc}.")), "{hosts:?}");
                let cluster = format!("outbound|80||{}", hosts[i]);
                assert_eq!(
                    canary_router::pick::version_of_cluster(
                        cluster.as_bytes(),
                        names.iter().copied()
                    ),
                    Some(i),
                    "{version}"
                );
            }
            assert_eq!(
                vhost,
                format!("{}:80", vs.value["spec"]["hosts"][0].as_str().unwrap())
            );
            // The header route the Rollout adds is a managed route and matches the
            // route header the filter writes for overrides and listed users.
            let set = &canary["steps"][0]["setHeaderRoute"];
            assert_eq!(
                canary["trafficRouting"]["managedRoutes"][0]["name"],
                set["name"]
            );
            assert_eq!(set["match"][0]["headerName"], config.route_header.as_str());
            assert_eq!(set["match"][0]["headerValue"]["exact"], "canary");
            assert_ne!(
                set["name"],
                route_name.as_str(),
                "the EnvoyFilter never matches it"
            );
            let template = one(&docs, "AnalysisTemplate");
            let steps = canary["steps"].as_array().unwrap();
            let weights: Vec<u64> = steps
                .iter()
                .filter_map(|s| s["setWeight"].as_u64())
                .collect();
            assert_eq!(weights, [10, 25, 50, 100]);
            for step in steps.iter().filter(|s| s.get("analysis").is_some()) {
                assert_eq!(
                    step["analysis"]["templates"][0]["templateName"],
                    template.value["metadata"]["name"]
                );
            }
            let queries: String = template.value["spec"]["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["provider"]["prometheus"]["query"].as_str().unwrap())
                .collect();
            assert!(queries.contains("istio_requests_total"));
            // Not the filter's own response counter: opt-in, off in this pluginConfig.
            assert!(!config.metrics.responses);
            assert!(!queries.contains(&format!("{}_responses_total", config.metrics_prefix)));
        }
    }
}

/// The controllers' analysis queries, evaluated by promtool on Istio's series as
/// the callers' sidecars report them: a canary that never answered a 5xx (no 5xx
/// series at all) reads 0, not nothing (Flagger takes nothing as a failed check and
/// rolls a healthy canary back); a failing one reads its ratio; one without any
/// traffic reads nothing (no evidence: Flagger halts, Argo's measurement is
/// inconclusive and the Rollout pauses).
#[test]
fn the_analysis_queries_read_a_canary_without_5xx_as_zero() {
    let flagger = one(&docs(FILES[0]), "MetricTemplate").value["spec"]["query"]
        .as_str()
        .unwrap()
        .replace("{{ namespace }}", "myapp")
        .replace("{{ target }}", "myapp")
        .replace("{{ interval }}", "1m");
    let argo = one(&docs(FILES[1]), "AnalysisTemplate").value["spec"]["metrics"][0]["provider"]
        ["prometheus"]["query"]
        .as_str()
        .unwrap()
        .to_string();
    let series = |labels: &str, code: &str, values: &str| {
        format!(
            "  - series: 'istio_requests_total{{reporter=\"source\",{labels},response_code=\"{code}\"}}'\n    values: '{values}'\n"
        )
    };
    let flagger_canary = "destination_workload_namespace=\"myapp\",destination_workload=\"myapp\"";
    let argo_canary = "destination_service_name=\"myapp-canary\"";
    let primary = "destination_workload_namespace=\"myapp\",destination_workload=\"myapp-primary\",destination_service_name=\"myapp-stable\"";
    let case = |input: String, flagger_value: Option<&str>, argo_value: Option<&str>| {
        let expect = |v: Option<&str>| match v {
            Some(v) => format!("\n    - labels: '{{}}'\n      value: {v}\n"),
            None => " []\n".to_string(),
        };
        format!(
            "- interval: 15s\n  input_series:\n{input}  promql_expr_test:\n  - expr: {}\n    eval_time: 5m\n    exp_samples:{}  - expr: {}\n    eval_time: 5m\n    exp_samples:{}",
            serde_json::to_string(&flagger).unwrap(),
            expect(flagger_value),
            serde_json::to_string(&argo).unwrap(),
            expect(argo_value),
        )
    };
    let healthy = case(
        series(flagger_canary, "200", "0+60x40")
            + &series(argo_canary, "200", "0+60x40")
            + &series(primary, "503", "0+60x40"),
        Some("0"),
        Some("0"),
    );
    let failing = case(
        series(flagger_canary, "200", "0+45x40")
            + &series(flagger_canary, "503", "0+15x40")
            + &series(argo_canary, "200", "0+45x40")
            + &series(argo_canary, "503", "0+15x40"),
        Some("25"),
        Some("0.25"),
    );
    let idle = case(series(primary, "200", "0+60x40"), None, None);
    let tests =
        format!("rule_files: []\nevaluation_interval: 15s\ntests:\n{healthy}{failing}{idle}");
    let dir = temp_dir("controller-queries");
    std::fs::write(dir.join("tests.yaml"), &tests).unwrap();
    let (ok, out) = run_promtool(&["test", "rules", "tests.yaml"], &dir);
    assert!(ok, "{out}\n{tests}");
    // Without `or on() vector(0)` the healthy canary reads nothing: the test fails.
    let bare = tests.replace(" or on() vector(0)", "");
    assert_ne!(bare, tests);
    std::fs::write(dir.join("tests.yaml"), &bare).unwrap();
    assert!(!run_promtool(&["test", "rules", "tests.yaml"], &dir).0);
    let _ = std::fs::remove_dir_all(dir);
    // Argo: a measurement passes or fails only on a value; nothing is inconclusive.
    let argo_docs = docs(FILES[1]);
    let metric = &one(&argo_docs, "AnalysisTemplate").value["spec"]["metrics"][0];
    for condition in ["successCondition", "failureCondition"] {
        assert!(
            metric[condition]
                .as_str()
                .unwrap()
                .starts_with("len(result) > 0 && !isNaN(result[0]) && "),
            "{condition}"
        );
    }
}

/// Istio's MERGE of a patch into a route: protobuf merge semantics. Messages merge
/// field by field, scalars are replaced, and setting one member of a oneof clears
/// the others (the route action's cluster specifier: cluster, weighted_clusters, ...).
fn proto_merge(target: &mut Value, patch: &Value, path: &str) {
    const CLUSTER_SPECIFIER: [&str; 4] = [
        "cluster",
        "cluster_header",
        "weighted_clusters",
        "cluster_specifier_plugin",
    ];
    let (Some(target_map), Some(patch_map)) = (target.as_object_mut(), patch.as_object()) else {
        *target = patch.clone();
        return;
    };
    for (key, value) in patch_map {
        if path == "route" && CLUSTER_SPECIFIER.contains(&key.as_str()) {
            for other in CLUSTER_SPECIFIER.iter().filter(|o| **o != key) {
                target_map.remove(*other);
            }
        }
        match (target_map.get_mut(key), value) {
            (Some(existing), Value::Object(_)) if existing.is_object() => {
                proto_merge(existing, value, key)
            }
            (Some(Value::Array(existing)), Value::Array(more)) => existing.extend(more.clone()),
            _ => {
                target_map.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Tags every response of these routes with `x-routes: TAG`, so that an answer from
/// a worker that has not yet taken the update can be recognised and sent again.
fn tag_routes(config: &mut serde_yaml::Value, tag: &str) {
    config["virtual_hosts"][0]["response_headers_to_add"] = serde_yaml::from_str(&format!(
        "[{{ header: {{ key: x-routes, value: '{tag}' }} }}]"
    ))
    .unwrap();
}

fn get_tagged(client: &mut harness::Client, headers: &[(&str, &str)]) -> harness::Response {
    for _ in 0..200 {
        let response = client.get_with(headers);
        if response.header("x-routes") == Some(&b"merged"[..]) {
            return response;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("no answer from the merged routes");
}

fn to_yaml(v: &Value) -> serde_yaml::Value {
    serde_yaml::from_str(&serde_json::to_string(v).unwrap()).unwrap()
}

#[test]
fn the_envoy_filter_patch_merged_as_istio_does_loads_in_envoy_and_routes_by_the_pick_value() {
    let (header, route_name, value) = envoy_filter_target(&docs(FILES[1]));
    // First with a filter that leaves the pick header alone (not in pick mode, and a
    // route header no route matches), so that raw pick values reach the route.
    let start = |plugin_config: Option<&str>| {
        Envoy::start(EnvoyOptions {
            bootstrap: Some("envoy/weighted-clusters.yaml".into()),
            routes_from_file: true,
            plugin_config: plugin_config.map(str::to_string),
            ..EnvoyOptions::default()
        })
    };
    let envoy = start(Some(
        r#"{"route_header":"x-not-routed","versions":[{"name":"stable"}]}"#,
    ));
    // The route as Istio renders the VirtualService at 30% (no header_name), then
    // the patch merged into it.
    let mut route = json!({
        "name": route_name,
        "match": {"prefix": "/"},
        "route": {"weighted_clusters": {"clusters": [
            {"name": "stable", "weight": 70}, {"name": "canary", "weight": 30}
        ]}}
    });
    proto_merge(&mut route, &value, "");
    assert_eq!(
        route["route"]["weighted_clusters"]["header_name"],
        header.as_str()
    );
    assert_eq!(
        route["route"]["weighted_clusters"]["clusters"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    envoy
        .set_routes(|config| {
            tag_routes(config, "merged");
            config["virtual_hosts"][0]["routes"] =
                serde_yaml::Value::Sequence(vec![to_yaml(&route)]);
        })
        .expect("Envoy takes the merged route");
    let mut client = envoy.client();
    for value in 0..100u64 {
        let expected = ["stable", "canary"][destination_of(value, &[70, 30]).unwrap()];
        let v = value.to_string();
        for _ in 0..3 {
            let r = get_tagged(&mut client, &[(header.as_str(), v.as_str())]);
            assert_eq!(r.served_by(), expected, "pick value {value}");
        }
    }
    // And through the filter (the config of envoy/weighted-clusters.yaml, whose
    // pick header is the EnvoyFilter's): users land where the formula says.
    let with_filter = start(None);
    with_filter
        .set_routes(|config| {
            tag_routes(config, "merged");
            config["virtual_hosts"][0]["routes"] =
                serde_yaml::Value::Sequence(vec![to_yaml(&route)]);
        })
        .expect("Envoy takes the merged route");
    let mut through = with_filter.client();
    for i in 0..300 {
        let user = format!("merged-{i}");
        let bucket = bucket_of(b"myapp:", user.as_bytes(), 100);
        let expected =
            ["stable", "canary"][destination_of(pick_value(bucket, 100, 100), &[70, 30]).unwrap()];
        assert_eq!(
            get_tagged(&mut through, &[("x-user-id", &user)]).served_by(),
            expected,
            "{user}"
        );
    }

    // Merged into the one-destination route Istio renders at 0% or 100%, the patch
    // leaves a weighted_clusters without clusters, and Envoy refuses the routes.
    let mut single = json!({
        "name": route_name,
        "match": {"prefix": "/"},
        "route": {"cluster": "stable"}
    });
    proto_merge(&mut single, &value, "");
    assert!(single["route"].get("cluster").is_none());
    let refused = envoy.set_routes(|config| {
        config["virtual_hosts"][0]["routes"] = serde_yaml::Value::Sequence(vec![to_yaml(&single)]);
    });
    let log = refused.expect_err("Envoy refuses a weighted_clusters without clusters");
    let reason = log
        .lines()
        .find(|l| l.contains("Proto constraint validation failed"))
        .unwrap_or("(no reason logged)");
    eprintln!("one-destination route with the patch: Envoy refused it: {reason}");
    assert!(
        reason.contains("Clusters") || reason.contains("clusters"),
        "{log}"
    );
    // The last good routes keep serving.
    assert_eq!(
        get_tagged(&mut client, &[(header.as_str(), "99")]).served_by(),
        "canary"
    );
}

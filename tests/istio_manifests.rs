//! The Istio manifests under istio/: each validates against Istio's own CRD schemas
//! (and the CEL rules of the fields it sets), they fit together and with the
//! filter's config parser, the guide's snippets are valid too, and `make
//! istio-manifests` renders valid manifests for other images and configs. Each
//! checker is also shown to reject a broken manifest.

mod istio_support;

use canary_router::config::{Anonymous, Config, Weight};
use istio_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn root() -> std::path::PathBuf {
    repo_root()
}

/// A config with the fingerprint of its text cleared: to compare meanings.
fn same_but_text(mut config: Config) -> Config {
    config.fingerprint = 0;
    config
}

fn problems(schemas: &Schemas, docs: &[Doc]) -> Vec<String> {
    let mut errors: Vec<String> = docs.iter().flat_map(|d| schemas.validate(d)).collect();
    errors.extend(cross_check(docs));
    errors
}

#[test]
fn every_yaml_file_under_istio_is_covered_by_a_test() {
    let mut seen = Vec::new();
    let mut stack = vec![root().join("istio")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read istio/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                seen.push(
                    path.strip_prefix(root())
                        .expect("under root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let uncovered: Vec<&String> = seen
        .iter()
        .filter(|f| {
            !MANIFEST_DIRS
                .iter()
                .any(|d| Path::new(f).parent() == Some(Path::new(d)))
                && !OTHER_YAML.contains(&f.as_str())
        })
        .collect();
    assert!(
        uncovered.is_empty(),
        "YAML files no test validates: {uncovered:?}"
    );
    assert!(
        seen.len() >= 9,
        "expected the shipped files, found {seen:?}"
    );
}

/// Every YAML document under istio/ (recursively, whatever the file is for), and
/// the yaml blocks of istio/README.md that show a WasmPlugin's config.
fn every_yaml_document_under_istio() -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut stack = vec![root().join("istio")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read istio/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let file = path
                    .strip_prefix(root())
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                docs.extend(load_docs(&root(), &file).unwrap_or_else(|e| panic!("{e}")));
            }
        }
    }
    for (i, block) in readme_yaml_blocks().iter().enumerate() {
        for (index, value) in parse_yaml_stream(block)
            .unwrap_or_else(|e| panic!("README yaml block {i}: {e}"))
            .into_iter()
            .enumerate()
            // A snippet that leaves the config out ("the same pluginConfig as the
            // other plugins") shows the placement only.
            .filter(|(_, v)| v["kind"] != "WasmPlugin" || v["spec"].get("pluginConfig").is_some())
        {
            docs.push(Doc {
                file: format!("istio/README.md block {i}"),
                index,
                value,
            });
        }
    }
    docs
}

#[test]
fn every_shipped_and_rendered_wasm_plugin_is_scoped_by_hosts() {
    let shipped = every_yaml_document_under_istio();
    let plugins = of_kind(&shipped, "WasmPlugin");
    // app, gateway, gateway-api, both controllers, the guide's example.
    assert!(plugins.len() >= 6, "{}", plugins.len());
    for file in [
        "istio/controllers/flagger.yaml",
        "istio/controllers/argo-rollouts.yaml",
    ] {
        assert!(plugins.iter().any(|p| p.file == file), "{file}");
    }
    let errors: Vec<String> = shipped.iter().flat_map(wasm_plugin_scope_errors).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // As `make istio-manifests` renders them, with the shipped config and with a
    // config of the user's that sets no hosts (each manifest keeps its own).
    let schemas = Schemas::load();
    for plugin_config in [
        None,
        Some(
            r#"{"versions": [{"name": "stable"}, {"name": "canary", "weight": 5}], "hash": {"header": "x-user-id"}}"#,
        ),
    ] {
        let files = render(
            &root(),
            &schemas,
            &RenderOptions {
                image: "oci://registry.example.com/canary-router:1.0.0".into(),
                sha256: None,
                plugin_config: plugin_config.map(str::to_string),
            },
        )
        .unwrap_or_else(|e| panic!("{}", e.join("\n")));
        let docs = rendered_docs(&files);
        assert_eq!(of_kind(&docs, "WasmPlugin").len(), 3);
        let errors: Vec<String> = docs.iter().flat_map(wasm_plugin_scope_errors).collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }

    // The check itself: a plugin without hosts, with empty hosts, and a
    // multi-rollout config with a rollout that matches every host, are caught.
    // A single-service plugin (istio/gateway-rollouts/ has one with rollouts).
    let mut bare = (*plugins
        .iter()
        .find(|p| p.value["spec"]["pluginConfig"].get("rollouts").is_none())
        .expect("a single-service WasmPlugin"))
    .clone();
    let config = bare.value["spec"]["pluginConfig"]
        .as_object_mut()
        .expect("pluginConfig");
    config.remove("hosts");
    assert_eq!(wasm_plugin_scope_errors(&bare).len(), 1);
    bare.value["spec"]["pluginConfig"]["hosts"] = json!([]);
    assert!(wasm_plugin_scope_errors(&bare)[0].contains("spec.pluginConfig.hosts"));
    let config = bare.value["spec"]["pluginConfig"]
        .as_object_mut()
        .expect("pluginConfig");
    config.remove("hosts");
    config.insert(
        "rollouts".into(),
        json!([
            {"name": "a", "match": {"hosts": ["a.example.com"]}},
            {"name": "b", "match": {"path_prefixes": ["/b/"]}}
        ]),
    );
    let errors = wasm_plugin_scope_errors(&bare);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("spec.pluginConfig.rollouts[1].match.hosts"));
    bare.value["spec"]["pluginConfig"]["rollouts"][1]["match"]["hosts"] = json!(["b.example.com"]);
    assert!(wasm_plugin_scope_errors(&bare).is_empty());
}

#[test]
fn every_manifest_validates_against_istio_crds_and_their_cel_rules() {
    let schemas = Schemas::load();
    let docs = load_manifests(&root());
    let errors: Vec<String> = docs.iter().flat_map(|d| schemas.validate(d)).collect();
    assert!(
        errors.is_empty(),
        "invalid manifests:\n{}",
        errors.join("\n")
    );

    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for kind in [
        "Namespace",
        "Service",
        "Deployment",
        "DestinationRule",
        "VirtualService",
        "WasmPlugin",
        "Gateway",
    ] {
        assert!(kinds.contains(kind), "no {kind} shipped: {kinds:?}");
    }
    // Every Istio resource went through a CRD schema (not the core-kind checks).
    for d in &docs {
        if d.api_version().contains("istio.io/") {
            assert!(
                schemas.find(d.api_version(), d.kind()).is_some(),
                "{}",
                d.id()
            );
        }
    }
    assert_eq!(
        of_kind(&docs, "WasmPlugin").len(),
        3,
        "sidecar, gateway, Gateway API"
    );
}

#[test]
fn the_manifests_fit_together_and_with_the_filter_config() {
    let docs = load_manifests(&root());
    let errors = cross_check(&docs);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_shipped_plugin_config_is_the_documented_one() {
    let docs = load_manifests(&root());
    for plugin in of_kind(&docs, "WasmPlugin") {
        let config = parse_plugin_config(plugin).unwrap_or_else(|e| panic!("{e:?}"));
        let names: Vec<&str> = config.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["stable", "canary"], "{}", plugin.id());
        assert_eq!(
            config.versions[1].weight,
            Weight::Fixed(1000),
            "10% canary: {}",
            plugin.id()
        );
        assert_eq!(config.route_header, "x-canary-version");
        assert_eq!(config.override_.header.as_deref(), Some("x-canary"));
        assert_eq!(config.hash.header.as_deref(), Some("x-user-id"));
        assert_eq!(config.anonymous, Anonymous::Baseline);
        assert_eq!(config.metrics_prefix, "canary");
        let spec = &plugin.value["spec"];
        assert_eq!(spec["failStrategy"], "FAIL_OPEN", "{}", plugin.id());
        assert!(
            spec["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("oci://")),
            "{}",
            plugin.id()
        );
    }
}

#[test]
fn extra_stat_tags_list_exactly_the_tags_in_the_metric_names() {
    let tags = metric_tag_keys();
    assert_eq!(
        tags,
        BTreeSet::from([
            "rollout".into(),
            "version".into(),
            "reason".into(),
            "code_class".into(),
            "grpc_code".into()
        ])
    );
    let values = load_docs(&root(), STAT_TAGS_FILE).expect("istio-values.yaml");
    let listed: BTreeSet<String> = values[0].value["meshConfig"]["defaultConfig"]["extraStatTags"]
        .as_array()
        .expect("meshConfig.defaultConfig.extraStatTags")
        .iter()
        .map(|t| t.as_str().expect("tag").to_string())
        .collect();
    assert_eq!(listed, tags);
}

#[test]
fn plugin_config_becomes_the_json_istio_hands_to_envoy() {
    assert_eq!(go_json_float(10.0), "10");
    assert_eq!(go_json_float(10000.0), "10000");
    assert_eq!(go_json_float(0.25), "0.25");
    assert_eq!(go_json_float(12.5), "12.5");
    assert_eq!(go_json_float(1e21), "1e+21");
    assert_eq!(go_json_float(1e-7), "1e-7");
    assert_eq!(go_json_float(-3.0), "-3");

    let docs = load_manifests(&root());
    let plugin = of_kind(&docs, "WasmPlugin")[0];
    let text = istio_plugin_config_json(&plugin.value["spec"]["pluginConfig"]);
    // Compact, keys sorted (jsonpb sorts Struct fields), integers without ".0".
    assert!(
        text.starts_with("{\"anonymous\":\"baseline\",\"guard\":{\"baseline_margin\":0.02,"),
        "{text}"
    );
    assert!(
        text.contains(",\"hash\":{\"buckets\":10000,\"cookie\":\"uid\","),
        "{text}"
    );
    assert!(text.contains("\"min_requests\":50,"), "{text}");
    assert!(
        text.contains("{\"name\":\"canary\",\"weight\":10}"),
        "{text}"
    );
    assert!(
        !text.contains(' ') && !text.contains(".0,") && !text.contains(".0}"),
        "{text}"
    );
    // The filter reads it as it reads the same config written by hand.
    let by_hand = serde_json::to_string(&plugin.value["spec"]["pluginConfig"]).expect("json");
    assert_eq!(
        same_but_text(Config::from_json(text.as_bytes()).expect("Istio's JSON")),
        same_but_text(Config::from_json(by_hand.as_bytes()).expect("plain JSON"))
    );
    // A fractional weight survives the Struct round trip.
    let quarter = json!({"versions": [{"name": "stable"}, {"name": "canary", "weight": 0.25}]});
    let config = Config::from_json(istio_plugin_config_json(&quarter).as_bytes()).expect("0.25%");
    assert_eq!(config.versions[1].weight, Weight::Fixed(25));
}

/// Applies `mutate` to the shipped manifests and expects a finding containing `expected`.
fn assert_rejected(
    schemas: &Schemas,
    what: &str,
    expected: &str,
    mutate: impl FnOnce(&mut Vec<Doc>),
) {
    let mut docs = load_manifests(&root());
    mutate(&mut docs);
    let errors = problems(schemas, &docs);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "{what}: expected a finding containing {expected:?}, got:\n{}",
        errors.join("\n")
    );
}

fn doc_mut<'a>(docs: &'a mut [Doc], file: &str, kind: &str, name: &str) -> &'a mut Value {
    &mut docs
        .iter_mut()
        .find(|d| d.file.ends_with(file) && d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {file}"))
        .value
}

const APP: &str = "app/myapp.yaml";
const SIDECAR_PLUGIN: &str = "app/wasmplugin.yaml";
const MESH_VS: &str = "app/virtualservice.yaml";
const DR: &str = "app/destinationrule.yaml";

/// The spec of the sidecar WasmPlugin.
fn plugin(docs: &mut [Doc]) -> &mut Value {
    &mut doc_mut(docs, SIDECAR_PLUGIN, "WasmPlugin", "canary-router")["spec"]
}

#[test]
fn the_checks_reject_broken_manifests() {
    let schemas = Schemas::load();
    // Schema: unknown field (a typo kubectl --validate=strict would refuse).
    assert_rejected(&schemas, "typo", "failStratgy", |d| {
        let spec = plugin(d);
        spec["failStratgy"] = spec["failStrategy"].take();
        spec.as_object_mut().expect("spec").remove("failStrategy");
    });
    // Schema: enum.
    assert_rejected(&schemas, "enum", "FAIL_SOMETIMES", |d| {
        plugin(d)["failStrategy"] = json!("FAIL_SOMETIMES");
    });
    // Schema: pattern of sha256.
    assert_rejected(&schemas, "sha256", "sha256", |d| {
        plugin(d)["sha256"] = json!("not-a-digest");
    });
    // Schema: type inside the VirtualService.
    assert_rejected(&schemas, "VS type", "spec.http.0.match.0.headers", |d| {
        doc_mut(d, MESH_VS, "VirtualService", "myapp")["spec"]["http"][0]["match"][0]["headers"] =
            json!({"x-canary-version": {"exact": 5}});
    });
    // CEL: url scheme.
    assert_rejected(&schemas, "url scheme", "url must have schema", |d| {
        plugin(d)["url"] = json!("ftp://example.com/canary-router.wasm");
    });
    // CEL: one of selector / targetRefs.
    assert_rejected(
        &schemas,
        "selector+targetRefs",
        "only one of targetRefs or selector",
        |d| {
            plugin(d)["targetRefs"] = json!([{"kind": "Service", "name": "myapp"}]);
        },
    );
    // CEL: no cross-namespace targetRef.
    assert_rejected(
        &schemas,
        "cross-namespace",
        "cross namespace referencing",
        |d| {
            let spec = &mut doc_mut(
                d,
                "gateway-api/wasmplugin.yaml",
                "WasmPlugin",
                "canary-router-gateway-api",
            )["spec"];
            spec["targetRefs"][0]["namespace"] = json!("istio-system");
        },
    );
    // Metadata.
    assert_rejected(&schemas, "name", "RFC 1123", |d| {
        doc_mut(d, DR, "DestinationRule", "myapp")["metadata"]["name"] = json!("MyApp");
    });
    // Kinds nothing checks.
    assert_rejected(&schemas, "unknown kind", "no schema or checks", |d| {
        d.push(Doc {
            file: "x.yaml".into(),
            index: 0,
            value: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        });
    });
    // Core kinds: a Deployment whose selector does not match its pods.
    assert_rejected(
        &schemas,
        "deployment selector",
        "must include spec.selector.matchLabels",
        |d| {
            doc_mut(d, APP, "Deployment", "myapp-canary")["spec"]["selector"]["matchLabels"]
                ["version"] = json!("beta");
        },
    );
    // The filter's parser: weight out of range, unknown field.
    assert_rejected(&schemas, "weight", "versions[1].weight", |d| {
        plugin(d)["pluginConfig"]["versions"][1]["weight"] = json!(120);
    });
    assert_rejected(&schemas, "unknown config field", "spec.pluginConfig", |d| {
        plugin(d)["pluginConfig"]["sticky"] = json!(true);
    });
    // All plugins must run one config.
    assert_rejected(
        &schemas,
        "configs differ",
        "every proxy must run the same config",
        |d| {
            plugin(d)["pluginConfig"]["versions"][1]["weight"] = json!(20);
        },
    );
    // ... but the override block may differ (a token at the internet-facing edge).
    {
        let mut docs = load_manifests(&root());
        let gw = doc_mut(
            &mut docs,
            "gateway/wasmplugin.yaml",
            "WasmPlugin",
            "canary-router",
        );
        gw["spec"]["pluginConfig"]["override"]["token"] =
            json!({"header": "x-canary-token", "values": ["0123456789abcdef-rotate-me"]});
        let errors = problems(&schemas, &docs);
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
    // Routes against the config.
    assert_rejected(
        &schemas,
        "header name",
        "but the filter writes x-canary-version",
        |d| {
            let http = &mut doc_mut(d, MESH_VS, "VirtualService", "myapp")["spec"]["http"][0];
            http["match"][0]["headers"] = json!({"x-canary": {"exact": "canary"}});
        },
    );
    assert_rejected(&schemas, "swapped subset", "must be subset canary", |d| {
        let http = &mut doc_mut(d, MESH_VS, "VirtualService", "myapp")["spec"]["http"][0];
        http["route"][0]["destination"]["subset"] = json!("stable");
    });
    assert_rejected(&schemas, "catch-all", "must be the baseline stable", |d| {
        let http = &mut doc_mut(d, MESH_VS, "VirtualService", "myapp")["spec"]["http"][1];
        http["route"][0]["destination"]["subset"] = json!("canary");
    });
    // Subsets against the DestinationRule and the pods.
    assert_rejected(
        &schemas,
        "missing subset",
        "no DestinationRule defines subset canary",
        |d| {
            let dr = &mut doc_mut(d, DR, "DestinationRule", "myapp")["spec"]["subsets"];
            dr.as_array_mut().expect("subsets").pop();
        },
    );
    assert_rejected(
        &schemas,
        "pod labels",
        "subset canary: no Deployment",
        |d| {
            let dep = doc_mut(d, APP, "Deployment", "myapp-canary");
            dep["spec"]["selector"]["matchLabels"]["version"] = json!("beta");
            dep["spec"]["template"]["metadata"]["labels"]["version"] = json!("beta");
        },
    );
    // The plugin where the route is picked, with the tags as labels.
    assert_rejected(
        &schemas,
        "server side",
        "a version of the service itself",
        |d| {
            plugin(d)["selector"]["matchLabels"] = json!({"app": "myapp"});
        },
    );
    assert_rejected(&schemas, "stat tags", "lacks the metric tags", |d| {
        doc_mut(d, APP, "Deployment", "myapp-client")["spec"]["template"]["metadata"]
            ["annotations"]["sidecar.istio.io/extraStatTags"] = json!("version,reason");
    });
    assert_rejected(&schemas, "ports", "miss the routed Service ports", |d| {
        plugin(d)["match"][0]["ports"] = json!([{"number": 8080}]);
    });
    // The ingress variant.
    assert_rejected(&schemas, "gateway host", "is not served by Gateway", |d| {
        doc_mut(
            d,
            "gateway/virtualservice.yaml",
            "VirtualService",
            "myapp-ingress",
        )["spec"]["hosts"] = json!(["other.example.com"]);
    });
}

#[test]
fn unknown_cel_rules_and_durations_are_handled() {
    assert_eq!(go_duration_ms("1.5s"), Some(1500.0));
    assert_eq!(go_duration_ms("1h30m"), Some(5_400_000.0));
    assert_eq!(go_duration_ms("500us"), Some(0.5));
    assert_eq!(go_duration_ms("10"), None);
    assert!(url_scheme_allowed(
        "oci://ghcr.io/example/canary-router:0.1.0"
    ));
    assert!(url_scheme_allowed("ghcr.io/example/canary-router:0.1.0"));
    assert!(url_scheme_allowed("file:///opt/filters/canary_router.wasm"));
    assert!(!url_scheme_allowed("s3://bucket/canary_router.wasm"));
    // A field with a rule the tests do not implement is reported, not passed.
    let schema = json!({"properties": {"x": {"type": "string", "x-kubernetes-validations": [
        {"rule": "self.startsWith('a')", "message": "starts with a"}]}}});
    let mut errors = Vec::new();
    check_cel(&schema, &json!({"x": "abc"}), "", &mut errors);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("CEL rule not checked"), "{errors:?}");
}

/// The ```yaml blocks of istio/README.md.
fn readme_yaml_blocks() -> Vec<String> {
    let text = fs::read_to_string(root().join("istio/README.md")).expect("istio/README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```yaml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.push(current.take().expect("block")),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn the_guides_yaml_snippets_are_valid_too() {
    let schemas = Schemas::load();
    let blocks = readme_yaml_blocks();
    assert!(
        blocks.len() >= 3,
        "istio/README.md has {} yaml blocks",
        blocks.len()
    );
    let mut istio_resources = 0;
    for (i, block) in blocks.iter().enumerate() {
        let values =
            parse_yaml_stream(block).unwrap_or_else(|e| panic!("README yaml block {i}: {e}"));
        for (j, value) in values.into_iter().enumerate() {
            let doc = Doc {
                file: format!("istio/README.md block {i}"),
                index: j,
                value,
            };
            let api = doc.api_version().to_string();
            if api.contains("istio.io/") {
                istio_resources += 1;
                let errors = schemas.validate(&doc);
                assert!(errors.is_empty(), "{}", errors.join("\n"));
                if doc.kind() == "WasmPlugin" && doc.value["spec"].get("pluginConfig").is_some() {
                    parse_plugin_config(&doc).unwrap_or_else(|e| panic!("{}", e.join("\n")));
                }
            }
        }
    }
    assert!(istio_resources >= 2, "the guide shows Istio resources");
}

// ---- make istio-manifests ---------------------------------------------------------

fn rendered_docs(files: &[Rendered]) -> Vec<Doc> {
    files
        .iter()
        .filter(|f| f.path.ends_with(".yaml") && !f.path.starts_with("monitoring/"))
        .flat_map(|f| {
            parse_yaml_stream(&f.text)
                .unwrap_or_else(|e| panic!("{}: {e}", f.path))
                .into_iter()
                .enumerate()
                .map(|(index, value)| Doc {
                    file: f.path.clone(),
                    index,
                    value,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn rendering_sets_the_image_and_digest_and_keeps_everything_valid() {
    let schemas = Schemas::load();
    let files = render(
        &root(),
        &schemas,
        &RenderOptions {
            image: "registry.example.com/team/canary-router:1.2.3".into(),
            sha256: Some(DIGEST.into()),
            plugin_config: None,
        },
    )
    .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let docs = rendered_docs(&files);
    assert!(problems(&schemas, &docs).is_empty());
    let plugins = of_kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 3);
    for p in plugins {
        assert_eq!(
            p.value["spec"]["url"],
            "oci://registry.example.com/team/canary-router:1.2.3"
        );
        assert_eq!(p.value["spec"]["sha256"], DIGEST);
    }
    // The shipped config is kept: same resources as shipped.
    let shipped = load_manifests(&root());
    assert_eq!(docs.len(), shipped.len());
    for path in [
        "monitoring/prometheus-rules.yaml",
        "monitoring/grafana-dashboard.json",
        "monitoring/istio-values.yaml",
    ] {
        assert!(files.iter().any(|f| f.path == path), "{path} rendered");
    }
}

#[test]
fn rendering_follows_the_users_config_to_routes_subsets_pods_and_metrics() {
    let schemas = Schemas::load();
    let config = r#"{
      "route_header": "x-checkout-version",
      "versions": [ {"name": "v1"}, {"name": "v2", "weight": 5}, {"name": "v3", "weight": 0.5} ],
      "hash": {"header": "x-user-id", "salt": "checkout", "buckets": 1000},
      "anonymous": "random",
      "metrics_prefix": "checkout"
    }"#;
    let files = render(
        &root(),
        &schemas,
        &RenderOptions {
            image: format!("oci://registry.example.com/canary-router@sha256:{DIGEST}"),
            sha256: None,
            plugin_config: Some(config.into()),
        },
    )
    .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let docs = rendered_docs(&files);
    assert!(problems(&schemas, &docs).is_empty());

    // The digest in the reference pins the module too.
    for p in of_kind(&docs, "WasmPlugin") {
        assert_eq!(p.value["spec"]["sha256"], DIGEST);
    }
    let vs = of_kind(&docs, "VirtualService")[0];
    let http = vs.value["spec"]["http"].as_array().expect("http");
    assert_eq!(http.len(), 3);
    assert_eq!(
        http[0]["match"][0]["headers"]["x-checkout-version"]["exact"],
        "v2"
    );
    assert_eq!(http[2]["route"][0]["destination"]["subset"], "v1");
    let dr = of_kind(&docs, "DestinationRule")[0];
    assert_eq!(
        dr.value["spec"]["subsets"]
            .as_array()
            .expect("subsets")
            .len(),
        3
    );
    let names: Vec<&str> = of_kind(&docs, "Deployment")
        .iter()
        .map(|d| d.name())
        .collect();
    assert_eq!(names, ["myapp-v1", "myapp-v2", "myapp-v3", "myapp-client"]);

    let rules = &files
        .iter()
        .find(|f| f.path == "monitoring/prometheus-rules.yaml")
        .expect("rules")
        .text;
    assert!(rules.contains("rate(checkout_requests_total[5m])"));
    assert!(rules.contains("checkout:error_ratio:rate5m{version!=\"v1\"}"));
    let rule_lines: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    // The config health series keep the default prefix whatever the config says.
    assert!(
        rule_lines.iter().all(|l| {
            let l = l.replace("canary_config_", "");
            !l.contains("canary_") && !l.contains("canary:") && !l.contains("stable")
        }),
        "{rules}"
    );
    let dashboard = &files
        .iter()
        .find(|f| f.path == "monitoring/grafana-dashboard.json")
        .expect("dashboard")
        .text;
    let dashboard: Value = serde_json::from_str(dashboard).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "canary-router-checkout");
    assert!(dashboard
        .to_string()
        .contains("checkout_weight_basis_points"));

    // The rendered rules are still valid Prometheus rules.
    let dir = temp_dir("rendered-rules");
    fs::write(dir.join("rules.yaml"), rules).expect("write");
    let (ok, output) = run_promtool(&["check", "rules", "rules.yaml"], &dir);
    assert!(ok, "{output}");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn rendering_refuses_what_would_not_work() {
    let schemas = Schemas::load();
    let render_with = |image: &str, sha: Option<&str>, config: Option<&str>| {
        render(
            &root(),
            &schemas,
            &RenderOptions {
                image: image.into(),
                sha256: sha.map(str::to_string),
                plugin_config: config.map(str::to_string),
            },
        )
        .err()
        .unwrap_or_default()
        .join("\n")
    };
    let bad_weight = r#"{"versions": [{"name": "stable"}, {"name": "canary", "weight": 120}]}"#;
    assert!(render_with("ghcr.io/x/y:1", None, Some(bad_weight)).contains("versions[1].weight"));
    assert!(render_with("ghcr.io/x/y:1", None, Some("{not json")).contains("not JSON"));
    // A valid config of several services: istio/app/ is one service.
    let rollouts = r#"{"rollouts": [{"name": "shop", "match": {"hosts": ["shop"]}, "versions": [{"name": "stable"}]}]}"#;
    assert!(render_with("ghcr.io/x/y:1", None, Some(rollouts)).contains("istio/gateway-rollouts/"));
    assert!(render_with("s3://bucket/x.wasm", None, None).contains("scheme"));
    assert!(render_with("ghcr.io/x/y:1", Some("abc"), None).contains("64 lowercase hex"));
    let other = "f".repeat(64);
    assert!(
        render_with(&format!("ghcr.io/x/y@sha256:{DIGEST}"), Some(&other), None)
            .contains("differs")
    );
}

#[test]
fn the_digest_comes_from_the_oci_layout() {
    let dir = temp_dir("layout-digest");
    fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{DIGEST}"), "size": 1}]})
        .to_string(),
    )
    .expect("write");
    assert_eq!(layout_digest(&dir).expect("digest"), DIGEST);
    fs::write(dir.join("index.json"), "{\"manifests\": []}").expect("write");
    assert!(layout_digest(&dir).is_err());
    let _ = fs::remove_dir_all(dir);
    assert!(layout_digest(Path::new("/nonexistent"))
        .unwrap_err()
        .contains("make oci"));
}

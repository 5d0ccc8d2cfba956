//! istio/admission/policy.yaml: the ValidatingAdmissionPolicy's CEL, evaluated with
//! a CEL implementation (cel-interpreter) the way the Kubernetes API server does:
//! the WasmPlugin as plain maps and lists (pluginConfig is free-form, so the API
//! server passes it untyped: JSON integers as int, decimals as double), the
//! variables in order, then every validation; a false one refuses with its message.
//!
//! Every good config fixture and every shipped WasmPlugin passes; every bad fixture
//! within CEL's reach is refused, naming exactly the fields pinned below, each one a
//! field `canary-router validate` names too (or a more precise path of it). The
//! fixtures CEL cannot judge are listed with the reason; they are what only
//! `canary-router validate` checks (docs/istio.md#validating-before-it-reaches-the-mesh).

mod cli_support;
mod istio_support;

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::{Context, Program, Value};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

const POLICY: &str = "istio/admission/policy.yaml";

/// JSON as the API server hands an unstructured object to CEL.
fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().expect("a JSON number")),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(fields) => Value::Map(Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

struct Validation {
    expression: Program,
    message: Option<String>,
    message_expression: Option<Program>,
    source: String,
}

struct Policy {
    match_conditions: Vec<Program>,
    variables: Vec<(String, Program)>,
    validations: Vec<Validation>,
}

fn compile(expression: &str) -> Program {
    Program::compile(expression)
        .unwrap_or_else(|e| panic!("{POLICY}: does not compile:\n{expression}\n{e:?}"))
}

fn load_policy() -> (Policy, Json) {
    let docs = istio_support::load_docs(&istio_support::repo_root(), POLICY).expect("policy YAML");
    assert_eq!(docs.len(), 2, "the policy and its binding");
    let policy = &docs[0].value;
    let binding = docs[1].value.clone();
    assert_eq!(
        policy["apiVersion"], "admissionregistration.k8s.io/v1",
        "GA API (Kubernetes >= 1.30)"
    );
    assert_eq!(policy["kind"], "ValidatingAdmissionPolicy");
    let spec = &policy["spec"];
    let strings = |list: &Json, key: &str| -> Vec<(String, String)> {
        list.as_array()
            .expect("a list")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_string(),
                    e[key].as_str().expect("an expression").to_string(),
                )
            })
            .collect()
    };
    let validations = spec["validations"]
        .as_array()
        .expect("validations")
        .iter()
        .map(|v| {
            let source = v["expression"].as_str().expect("expression").to_string();
            Validation {
                expression: compile(&source),
                message: v["message"].as_str().map(str::to_string),
                message_expression: v["messageExpression"].as_str().map(compile),
                source,
            }
        })
        .collect();
    (
        Policy {
            match_conditions: strings(&spec["matchConditions"], "expression")
                .iter()
                .map(|(_, e)| compile(e))
                .collect(),
            variables: strings(&spec["variables"], "expression")
                .into_iter()
                .map(|(n, e)| (n, compile(&e)))
                .collect(),
            validations,
        },
        binding,
    )
}

/// What the API server answers for `object`: `None` if the policy does not apply,
/// else the messages of the failed validations (empty: admitted).
fn admit(policy: &Policy, object: &Json) -> Option<Vec<String>> {
    let mut context = Context::default();
    context.add_variable_from_value("object", to_cel(object));
    // Variables are lazy in Kubernetes: one that fails only matters where it is used,
    // and there using it fails as it would.
    let mut variables: HashMap<Key, Value> = HashMap::new();
    for (name, program) in &policy.variables {
        context.add_variable_from_value(
            "variables",
            Value::Map(Map {
                map: Arc::new(variables.clone()),
            }),
        );
        if let Ok(value) = program.execute(&context) {
            variables.insert(Key::String(Arc::new(name.clone())), value);
        }
    }
    context.add_variable_from_value(
        "variables",
        Value::Map(Map {
            map: Arc::new(variables),
        }),
    );
    for condition in &policy.match_conditions {
        if condition.execute(&context).ok() != Some(Value::Bool(true)) {
            return None;
        }
    }
    let mut messages = Vec::new();
    for v in &policy.validations {
        match v.expression.execute(&context) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => {
                let message = match (&v.message_expression, &v.message) {
                    (Some(program), _) => match program.execute(&context) {
                        Ok(Value::String(s)) => s.to_string(),
                        other => panic!("messageExpression of {}: {other:?}", v.source),
                    },
                    (None, Some(m)) => m.clone(),
                    (None, None) => panic!("no message for {}", v.source),
                };
                messages.push(message);
            }
            // failurePolicy Fail: an expression that errors refuses too, without a
            // message that names the field: the tests below allow none.
            other => messages.push(format!("evaluation error in `{}`: {other:?}", v.source)),
        }
    }
    Some(messages)
}

fn wasm_plugin(plugin_config: Option<Json>) -> Json {
    let mut spec = serde_json::json!({
        "url": "oci://registry.example/canary-router:0.1.0",
        "pluginName": "canary-router",
        "selector": { "matchLabels": { "app": "myapp-client" } },
    });
    if let Some(config) = plugin_config {
        spec["pluginConfig"] = config;
    }
    serde_json::json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": { "name": "canary-router", "namespace": "myapp" },
        "spec": spec,
    })
}

/// The field a message is about: `spec.pluginConfig.FIELD: ...`.
fn field_of(message: &str) -> String {
    let rest = message
        .strip_prefix("spec.pluginConfig")
        .unwrap_or_else(|| panic!("a message that names no field: {message}"));
    let field = rest.split(": ").next().unwrap_or_default();
    field.trim_start_matches('.').to_string()
}

/// The path a message starts with: `spec.url: ...` -> `spec.url`.
fn field_of_spec(message: &str) -> String {
    message.split(": ").next().unwrap_or_default().to_string()
}

/// The fields `canary-router validate` names for a bad fixture (its .expected file).
fn validate_fields(path: &std::path::Path) -> BTreeSet<String> {
    let expected = std::fs::read_to_string(path.with_extension("expected")).expect("expected");
    expected
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(|l| match l.split_once(": ") {
            Some((field, _)) if !field.contains(' ') => field.to_string(),
            _ => String::new(),
        })
        .collect()
}

/// One path names the other or a part of it (`guard` and `guard.max_error_rate`).
fn related(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long == short
            || long
                .strip_prefix(short)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    };
    under(a, b) || under(b, a)
}

#[test]
fn the_binding_denies_and_the_policy_applies_only_to_canary_router_wasm_plugins() {
    let (policy, binding) = load_policy();
    assert_eq!(binding["kind"], "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], "canary-router-plugin-config");
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
    let mut other = wasm_plugin(Some(serde_json::json!({"anything": 1})));
    other["spec"]["pluginName"] = "another-plugin".into();
    assert_eq!(admit(&policy, &other), None);
    assert_eq!(
        admit(&policy, &wasm_plugin(None)),
        Some(vec![
            "spec.pluginConfig: missing: the WasmPlugin carries no config for canary-router"
                .to_string()
        ])
    );
}

#[test]
fn every_good_fixture_and_every_shipped_wasm_plugin_is_admitted() {
    let (policy, _) = load_policy();
    let mut checked = Vec::new();
    for path in cli_support::fixtures("good") {
        let json = cli_support::filter_input(&path).expect("a config");
        let config: Json = serde_json::from_slice(&json).expect("JSON");
        let messages = admit(&policy, &wasm_plugin(Some(config))).expect("applies");
        assert!(
            messages.is_empty(),
            "{}: refused: {messages:#?}",
            cli_support::name(&path)
        );
        checked.push(cli_support::name(&path));
    }
    let root = istio_support::repo_root();
    // The shipped WasmPlugins, the gateway's with rollouts included.
    let rollouts = istio_support::load_docs(&root, "istio/gateway-rollouts/wasmplugin.yaml")
        .expect("the gateway's rollouts");
    for doc in istio_support::load_manifests(&root)
        .into_iter()
        .chain(rollouts)
    {
        if doc.kind() != "WasmPlugin" {
            continue;
        }
        // As shipped, the placeholder image is refused (and only that)...
        let messages = admit(&policy, &doc.value).expect("a canary-router WasmPlugin");
        assert_eq!(
            messages
                .iter()
                .map(|m| field_of_spec(m))
                .collect::<Vec<_>>(),
            ["spec.url"],
            "{}: {messages:#?}",
            doc.id()
        );
        // ...and with a real image, as `make istio-manifests IMAGE=...` renders it,
        // admitted.
        let mut rendered = doc.value.clone();
        rendered["spec"]["url"] = "oci://registry.example.com/canary-router:0.1.0".into();
        let messages = admit(&policy, &rendered).expect("a canary-router WasmPlugin");
        assert!(messages.is_empty(), "{}: refused: {messages:#?}", doc.id());
        checked.push(doc.id());
    }
    assert!(checked.len() >= 12, "{checked:?}");
}

/// The bad fixtures only `canary-router validate` judges, and why.
const BEYOND_CEL: [(&str, &str); 10] = [
    (
        "cookie-attributes-max-age.yaml",
        "durations of hash.cookie_attributes.max_age: validate only",
    ),
    ("empty.json", "not a JSON object: the CRD's schema (an object) refuses it"),
    ("not-an-object.json", "not a JSON object: the CRD's schema refuses it"),
    ("trailing-comma.json", "not JSON: no Kubernetes object can carry it"),
    ("yaml-syntax-error.yaml", "not YAML: no Kubernetes object can carry it"),
    (
        "route-header-as-input.json",
        "header names that clash only in another case (standard CEL has no lowerAscii): validate only",
    ),
    ("metrics-errors.json", "types of booleans: validate only"),
    (
        "grpc-status-errors.json",
        "gRPC status code names in guard.grpc_status: validate only",
    ),
    (
        "override-protection-errors.json",
        "token lengths and characters, CIDR blocks: validate only",
    ),
    (
        "schedule-errors.yaml",
        "RFC 3339 times, durations and the order of ramp steps: validate only",
    ),
];

#[test]
fn every_bad_fixture_within_cels_reach_is_refused_naming_the_field() {
    let (policy, _) = load_policy();
    // Fixture -> the fields the policy's messages name, in order.
    let expected: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("anonymous-unknown.yaml", &["anonymous"][..]),
        ("anonymous-cookie-without-cookie.json", &["anonymous"][..]),
        (
            "cookie-attributes-errors.json",
            &[
                "hash.cookie_attributes.path",
                "hash.cookie_attributes.domain",
                "hash.cookie_attributes.same_site",
            ][..],
        ),
        (
            "bad-header-and-cookie-names.json",
            &[
                "route_header",
                "override.header",
                "override.cookie",
                "hash.header",
            ][..],
        ),
        (
            "bad-version-names.json",
            &["versions[1].name", "versions[2].name"][..],
        ),
        ("baseline-with-weight.json", &["versions[0].weight"][..]),
        ("buckets-not-allowed.json", &["hash.buckets"][..]),
        ("canary-without-weight.yaml", &["versions[1].weight"][..]),
        (
            "everything-at-once.json",
            &["versions[1].weight", "metrics_prefix", "route_header"][..],
        ),
        (
            "guard-errors.json",
            &[
                "guard.version",
                "guard.max_error_rate",
                "guard.baseline_margin",
                "guard.min_requests",
            ][..],
        ),
        ("guard-missing-rate.yaml", &["guard.max_error_rate"][..]),
        ("hash-without-source.json", &["hash"][..]),
        ("hosts-errors.json", &["hosts[1]"][..]),
        ("pick-mode-errors.json", &["versions[1].weight"][..]),
        ("pick-total-without-header.json", &["hash.pick_total"][..]),
        (
            "rollouts-anonymous-cookie-without-cookie.yaml",
            &["rollouts[1].anonymous"][..],
        ),
        ("rollouts-duplicate-names.yaml", &["rollouts[1].name"][..]),
        ("rollouts-empty.json", &["rollouts"][..]),
        (
            "rollouts-errors.json",
            &[
                "rollouts[3].name",
                "rollouts[2].match.path_prefixes[0]",
                "rollouts[2].match.headers[1]",
                "rollouts[2].match.headers[0].prefix",
                "rollouts[1].versions[1].name",
                "rollouts[2].hash.header",
                "rollouts[0].match.hosts[1]",
            ][..],
        ),
        ("rollouts-missing-name.json", &["rollouts[0].name"][..]),
        ("rollouts-with-top-level-fields.json", &["versions"][..]),
        ("metrics-prefix.json", &["metrics_prefix"][..]),
        ("missing-versions.json", &["versions"][..]),
        ("no-versions.json", &["versions"][..]),
        ("unknown-field.json", &["overide"][..]),
        ("users-errors.yaml", &["users.nightly", "users"][..]),
        ("wasmplugin-without-config.yaml", &[""][..]),
        ("weight-above-100.json", &["versions[1].weight"][..]),
        ("weight-and-schedule.json", &["versions[1].schedule"][..]),
        ("weight-is-a-string.json", &["versions[1].weight"][..]),
        ("weight-precision.yaml", &["versions[1].weight"][..]),
        ("weights-above-100-in-total.json", &["versions"][..]),
    ]);
    let beyond: BTreeMap<&str, &str> = BEYOND_CEL.into_iter().collect();
    let mut refused = 0;
    let mut report = Vec::new();
    let mut mismatches = Vec::new();
    for path in cli_support::fixtures("bad") {
        let name = cli_support::name(&path);
        let config: Option<Json> = if name == "wasmplugin-without-config.yaml" {
            None
        } else {
            match cli_support::filter_input(&path)
                .and_then(|json| serde_json::from_slice::<Json>(&json).ok())
            {
                Some(config) if config.is_object() => Some(config),
                _ => {
                    assert!(
                        beyond.contains_key(name.as_str()),
                        "{name}: not a JSON object, so not a pluginConfig: list it"
                    );
                    continue;
                }
            }
        };
        let messages = admit(&policy, &wasm_plugin(config)).expect("applies");
        let fields: Vec<String> = messages.iter().map(|m| field_of(m)).collect();
        let validate = validate_fields(&path);
        for field in &fields {
            assert!(
                field.is_empty() || validate.iter().any(|v| v.is_empty() || related(v, field)),
                "{name}: the policy names {field}, validate names {validate:?}: {messages:#?}"
            );
        }
        if let Some(reason) = beyond.get(name.as_str()) {
            report.push(format!(
                "{name}: validate only ({reason}); policy: {fields:?}"
            ));
            continue;
        }
        let want = expected.get(name.as_str()).unwrap_or_else(|| {
            panic!("{name}: a new bad fixture: pin what the policy says ({messages:#?})")
        });
        if fields != *want {
            mismatches.push(format!(
                "{name}: the policy names {fields:?}, pinned {want:?}: {messages:#?}"
            ));
        }
        assert!(!messages.is_empty(), "{name}: admitted");
        refused += 1;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(refused >= 20, "only {refused} bad fixtures refused");
    eprintln!(
        "admission policy: {refused} bad fixtures refused naming the field; {}",
        report.join("; ")
    );
}

#[test]
fn a_config_with_rollouts_is_checked_rollout_by_rollout() {
    let (policy, _) = load_policy();
    let fields = |config: Json| -> Vec<String> {
        admit(&policy, &wasm_plugin(Some(config)))
            .expect("applies")
            .iter()
            .map(|m| field_of(m))
            .collect()
    };
    let good = serde_json::json!({
        "metrics_prefix": "shop",
        "rollouts": [
            {"name": "a", "match": {"hosts": ["a.example"]},
             "versions": [{"name": "stable"}, {"name": "canary", "weight": 10}],
             "hash": {"header": "x-user-id"}},
            {"name": "b", "match": {"hosts": ["b.example"], "path_prefixes": ["/api/"],
                                    "headers": [{"name": "x-client", "exact": "ios"},
                                                {"name": "x-debug", "present": false}]},
             "versions": [{"name": "v1"}, {"name": "v2", "weight": 50}],
             "hash": {"cookie": "uid"},
             "guard": {"version": "v2", "max_error_rate": 0.1}}
        ]
    });
    assert_eq!(fields(good.clone()), Vec::<String>::new());
    // Each of today's checks, in the rollout it concerns, named through it.
    for (change, want) in [
        (
            serde_json::json!({"weight": 120}),
            &["rollouts[1].versions[1].weight"][..],
        ),
        // The guard then names no version either.
        (
            serde_json::json!({"name": "v1"}),
            &["rollouts[1].versions[1].name", "rollouts[1].guard.version"],
        ),
        (
            serde_json::json!({"weight": 0.125}),
            &["rollouts[1].versions[1].weight"],
        ),
    ] {
        let mut config = good.clone();
        for (k, v) in change.as_object().expect("an object") {
            config["rollouts"][1]["versions"][1][k] = v.clone();
        }
        assert_eq!(fields(config), want);
    }
    for (field, value, want) in [
        (
            "guard",
            serde_json::json!({"version": "v1", "max_error_rate": 0.1}),
            "rollouts[1].guard.version",
        ),
        (
            "users",
            serde_json::json!({"v3": ["u"]}),
            "rollouts[1].users.v3",
        ),
        (
            "anonymous",
            serde_json::json!("sticky"),
            "rollouts[1].anonymous",
        ),
        (
            "hash",
            serde_json::json!({"buckets": 5000, "header": "u"}),
            "rollouts[1].hash.buckets",
        ),
        (
            "route_header",
            serde_json::json!("bad name"),
            "rollouts[1].route_header",
        ),
        ("bogus", serde_json::json!(1), "rollouts[1].bogus"),
        (
            "match",
            serde_json::json!({"hosts": ["ok", "x:80"]}),
            "rollouts[1].match.hosts[1]",
        ),
        (
            "match",
            serde_json::json!({"paths": ["/"]}),
            "rollouts[1].match.paths",
        ),
        (
            "match",
            serde_json::json!({"headers": [{"name": "x a", "present": true}]}),
            "rollouts[1].match.headers[0].name",
        ),
        (
            "match",
            serde_json::json!({"headers": [{"name": "x", "suffix": ""}]}),
            "rollouts[1].match.headers[0].suffix",
        ),
        ("name", serde_json::json!("a"), "rollouts[1].name"),
    ] {
        let mut config = good.clone();
        config["rollouts"][1][field] = value;
        assert_eq!(fields(config), [want], "{field}");
    }
    let mut config = good.clone();
    config["guard"] = serde_json::json!({"version": "canary", "max_error_rate": 0.1});
    assert_eq!(fields(config), ["guard"]);
    let mut config = good;
    config["rollouts"][0]
        .as_object_mut()
        .expect("a rollout")
        .remove("versions");
    assert_eq!(fields(config), ["rollouts[0].versions"]);
}

#[test]
fn hosts_entries_are_checked_by_index() {
    let (policy, _) = load_policy();
    let config = |hosts: Json| {
        wasm_plugin(Some(serde_json::json!({
            "versions": [{"name": "stable"}, {"name": "canary", "weight": 5}],
            "hosts": hosts,
        })))
    };
    let ok = admit(
        &policy,
        &config(serde_json::json!([
            "myapp",
            "myapp.myapp.svc.cluster.local",
            "*.Example.com",
            "[fd00::1]",
            "10.0.0.7"
        ])),
    );
    assert_eq!(ok, Some(vec![]));
    let bad = admit(
        &policy,
        &config(serde_json::json!([
            "myapp",
            "myapp:8080",
            "my app",
            "*",
            "a.*.example.com"
        ])),
    )
    .expect("applies");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("spec.pluginConfig.hosts[1]: "),
        "{bad:?}"
    );
    let empty = admit(&policy, &config(serde_json::json!([]))).expect("applies");
    assert_eq!(
        empty.iter().map(|m| field_of(m)).collect::<Vec<_>>(),
        ["hosts"]
    );
}

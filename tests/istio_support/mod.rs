//! Shared by the Istio tests and by `examples/istio_manifests.rs` (`make
//! istio-manifests`): loads the manifests under `istio/`, validates each against
//! Istio's CRD schema (OpenAPI v3 turned into JSON Schema) and the CEL rules of the
//! fields it uses, cross-checks the resources against each other and against the
//! filter's own config parser, converts a `pluginConfig` into the JSON string Istio
//! hands to Envoy, and renders the manifests for a user's image and config.
//!
//! Every check returns its findings as strings that name the file, the resource and
//! the field, so that a failing test says what to fix.
#![allow(dead_code)]

pub mod monitoring;

use canary_router::config::Config;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directories whose YAML files are Kubernetes manifests (applied with kubectl).
pub const MANIFEST_DIRS: [&str; 3] = ["istio/app", "istio/gateway", "istio/gateway-api"];
/// The other YAML files under istio/, each checked by its own test.
pub const OTHER_YAML: [&str; 10] = [
    "istio/admission/policy.yaml", // tests/admission_policy.rs
    // One plugin for three services at the gateway: tests/istio_gateway_rollouts.rs.
    "istio/gateway-rollouts/wasmplugin.yaml",
    "istio/gateway-rollouts/gateway.yaml",
    "istio/gateway-rollouts/virtualservices.yaml",
    "istio/gateway-rollouts/destinationrules.yaml",
    "istio/monitoring/istio-values.yaml",
    "istio/monitoring/prometheus-rules.yaml",
    "istio/monitoring/prometheus-rules.test.yaml",
    // With Flagger or Argo Rollouts: tests/controllers_manifests.rs.
    "istio/controllers/flagger.yaml",
    "istio/controllers/argo-rollouts.yaml",
];
/// The rollout controllers' CRD schemas (vendored, each folder with its SOURCE).
pub const CONTROLLER_CRD_DIRS: [&str; 2] = [
    "tests/fixtures/flagger-crds",
    "tests/fixtures/argo-rollouts-crds",
];
pub const CRD_DIR: &str = "tests/fixtures/istio-crds";
/// The tag keys Istio must turn into labels (`extraStatTags`).
pub const STAT_TAGS_FILE: &str = "istio/monitoring/istio-values.yaml";

// ---- Loading ----------------------------------------------------------------------

/// One YAML document of a manifest file.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Relative to the repository root (or to the render output).
    pub file: String,
    pub index: usize,
    pub value: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    }
    /// `file#index Kind namespace/name`, for messages.
    pub fn id(&self) -> String {
        format!(
            "{}#{} {} {}/{}",
            self.file,
            self.index,
            self.kind(),
            self.namespace(),
            self.name()
        )
    }
}

/// Every document of a YAML stream, as JSON values (empty documents skipped).
pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| format!("document {i}: {e}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

pub fn load_docs(root: &Path, file: &str) -> Result<Vec<Doc>, String> {
    let text =
        fs::read_to_string(root.join(file)).map_err(|e| format!("{file}: cannot read: {e}"))?;
    let values = parse_yaml_stream(&text).map_err(|e| format!("{file}: {e}"))?;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(index, value)| Doc {
            file: file.to_string(),
            index,
            value,
        })
        .collect())
}

/// The YAML files in `dir` (relative to `root`), sorted.
pub fn yaml_files(root: &Path, dir: &str) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.ends_with(".yaml").then(|| format!("{dir}/{name}"))
        })
        .collect();
    files.sort();
    files
}

/// Every document of every manifest under `root`'s manifest directories.
pub fn load_manifests(root: &Path) -> Vec<Doc> {
    let mut docs = Vec::new();
    for dir in MANIFEST_DIRS {
        for file in yaml_files(root, dir) {
            docs.extend(load_docs(root, &file).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    docs
}

pub fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}

// ---- CRD schemas -> JSON Schema ---------------------------------------------------

/// One served version of an Istio CRD.
pub struct CrdVersion {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The openAPIV3Schema as shipped (with its `x-kubernetes-*` extensions).
    pub openapi: Value,
    pub validator: jsonschema::Validator,
}

pub struct Schemas {
    pub versions: Vec<CrdVersion>,
}

/// Turns a structural OpenAPI v3 schema into a JSON Schema (draft 4) that checks
/// what the API server would:
/// - `nullable: true` admits null;
/// - an object with `properties` and no `additionalProperties` rejects unknown
///   fields, as `kubectl apply` does (server-side field validation is Strict by
///   default), unless `x-kubernetes-preserve-unknown-fields` keeps them;
/// - `x-kubernetes-int-or-string` is already spelled as `anyOf` in Istio's CRDs;
/// - other `x-kubernetes-*` keys are annotations to JSON Schema (the CEL rules in
///   `x-kubernetes-validations` are checked by [`check_cel`]).
pub fn openapi_to_json_schema(schema: &Value) -> Value {
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in object {
        let converted = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .map(|props| {
                        props
                            .iter()
                            .map(|(k, v)| (k.clone(), openapi_to_json_schema(v)))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "items" | "additionalProperties" | "not" => openapi_to_json_schema(value),
            "anyOf" | "oneOf" | "allOf" => Value::Array(
                value
                    .as_array()
                    .map(|list| list.iter().map(openapi_to_json_schema).collect())
                    .unwrap_or_default(),
            ),
            k if k.starts_with("x-kubernetes-") => continue,
            "nullable" => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if object.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
    }
    let preserve = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && !preserve
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

impl Schemas {
    /// Every served version of every CRD in `tests/fixtures/istio-crds`.
    pub fn load() -> Schemas {
        Self::load_dirs(&[CRD_DIR])
    }

    /// Every served version of every CRD in these directories (relative to the
    /// repository root).
    pub fn load_dirs(dirs: &[&str]) -> Schemas {
        let mut versions = Vec::new();
        for dir in dirs {
            versions.extend(Self::load_dir(&repo_root().join(dir)).versions);
        }
        Schemas { versions }
    }

    fn load_dir(dir: &Path) -> Schemas {
        let mut versions = Vec::new();
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for path in files {
            let text = fs::read_to_string(&path).expect("read CRD");
            for crd in parse_yaml_stream(&text).expect("CRD YAML") {
                assert_eq!(
                    crd["kind"],
                    "CustomResourceDefinition",
                    "{}",
                    path.display()
                );
                let group = crd["spec"]["group"].as_str().expect("group").to_string();
                let kind = crd["spec"]["names"]["kind"]
                    .as_str()
                    .expect("kind")
                    .to_string();
                for v in crd["spec"]["versions"].as_array().expect("versions") {
                    if v["served"] != Value::Bool(true) {
                        continue;
                    }
                    let openapi = v["schema"]["openAPIV3Schema"].clone();
                    let mut schema = openapi_to_json_schema(&openapi);
                    // The root schema lists spec and status; every object also has these.
                    let props = schema["properties"]
                        .as_object_mut()
                        .expect("root properties");
                    props.insert("apiVersion".into(), json!({"type": "string"}));
                    props.insert("kind".into(), json!({"type": "string"}));
                    props.insert("metadata".into(), json!({"type": "object"}));
                    let validator = jsonschema::draft4::new(&schema).unwrap_or_else(|e| {
                        panic!("{}: {kind} {}: schema: {e}", path.display(), v["name"])
                    });
                    versions.push(CrdVersion {
                        group: group.clone(),
                        version: v["name"].as_str().expect("version name").to_string(),
                        kind: kind.clone(),
                        openapi,
                        validator,
                    });
                }
            }
        }
        Schemas { versions }
    }

    pub fn find(&self, api_version: &str, kind: &str) -> Option<&CrdVersion> {
        let (group, version) = api_version.split_once('/')?;
        self.versions
            .iter()
            .find(|v| v.group == group && v.version == version && v.kind == kind)
    }

    /// Everything wrong with one resource: its schema (Istio kinds), the CEL rules
    /// of the fields it sets, and its metadata. Kubernetes' own kinds, which have no
    /// CRD here, get the checks of [`check_core_kind`]; any other kind is an error.
    pub fn validate(&self, doc: &Doc) -> Vec<String> {
        let mut errors = check_metadata(&doc.value);
        let api_version = doc.api_version();
        let kind = doc.kind();
        if api_version.contains("istio.io/") || self.find(api_version, kind).is_some() {
            match self.find(api_version, kind) {
                None => errors.push(format!(
                    "{kind} in {api_version} is not served by Istio's CRDs"
                )),
                Some(crd) => {
                    for e in crd.validator.iter_errors(&doc.value) {
                        errors.push(format!(
                            "{}: {e}",
                            pointer_path(&e.instance_path().to_string())
                        ));
                    }
                    check_cel(&crd.openapi, &doc.value, "", &mut errors);
                }
            }
        } else {
            errors.extend(check_core_kind(&doc.value));
        }
        errors
            .into_iter()
            .map(|e| format!("{}: {e}", doc.id()))
            .collect()
    }
}

fn pointer_path(pointer: &str) -> String {
    if pointer.is_empty() {
        ".".into()
    } else {
        pointer.trim_start_matches('/').replace('/', ".")
    }
}

// ---- CEL (x-kubernetes-validations) -----------------------------------------------

/// Walks the instance along its OpenAPI schema and evaluates each CEL rule found on
/// a field the instance sets. The rules Istio's CRDs carry are few; each is
/// implemented here by its exact text, and an unknown rule on a set field is an
/// error (so a new field cannot pass unchecked).
pub fn check_cel(schema: &Value, instance: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
        for rule in rules {
            let text = normalize_ws(rule["rule"].as_str().unwrap_or(""));
            let message = rule["message"].as_str().unwrap_or("");
            let at = if path.is_empty() { "." } else { path };
            match eval_cel(&text, instance) {
                Some(true) => {}
                Some(false) => errors.push(format!("{at}: {message} (CEL: {text})")),
                None => errors.push(format!("{at}: CEL rule not checked by the tests: {text}")),
            }
        }
    }
    match instance {
        Value::Object(fields) => {
            for (key, value) in fields {
                let child = if let Some(s) = schema["properties"].get(key) {
                    s
                } else if schema["additionalProperties"].is_object() {
                    &schema["additionalProperties"]
                } else {
                    continue;
                };
                check_cel(child, value, &join(path, key), errors);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_cel(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Schemes Istio's WasmPlugin CRD admits in `url`.
pub const WASM_URL_SCHEMES: [&str; 5] = ["", "http", "https", "oci", "file"];

fn eval_cel(rule: &str, v: &Value) -> Option<bool> {
    let has = |k: &str| v.get(k).is_some();
    let count = |keys: &[&str]| keys.iter().filter(|k| has(k)).count();
    Some(match rule {
        "duration(self) >= duration('1ms')" => go_duration_ms(v.as_str()?).is_some_and(|ms| ms >= 1.0),
        "self.all(key, !key.contains(\"*\"))" => v.as_object()?.keys().all(|k| !k.contains('*')),
        "self.all(key, key.size() != 0)" => v.as_object()?.keys().all(|k| !k.is_empty()),
        "!self.contains(\"*\")" => !v.as_str()?.contains('*'),
        "self.size() == 0" => v.as_str()?.is_empty(),
        // EnvoyFilter.
        "(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1" => {
            count(&["workloadSelector", "targetRefs"]) <= 1
        }
        "has(self.context) ? ((self.context == \"WAYPOINT\") ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)" => {
            if v["context"] == "WAYPOINT" {
                has("waypoint")
            } else {
                !has("waypoint")
            }
        }
        "0 < self && self <= 65535" => v.as_u64().is_some_and(|p| (1..=65535).contains(&p)),
        // Argo Rollouts: a transition rule (immutable selector), not evaluated when a
        // resource is created.
        "self == oldSelf" => true,
        "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1" => {
            count(&["selector", "targetRef", "targetRefs"]) <= 1
        }
        "(has(self.valueFrom) ? self.valueFrom : \"\") != \"HOST\" || !has(self.value)" => {
            v["valueFrom"] != "HOST" || !has("value")
        }
        "(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) + (has(self.credentialName) ? 1 : 0) <= 1" => {
            count(&["tlsCertificates", "credentialNames", "credentialName"]) <= 1
        }
        r if r.starts_with("isURL(self) ? (url(self).getScheme() in [\"\", \"http\", \"https\", \"oci\", \"file\"])") => {
            url_scheme_allowed(v.as_str()?)
        }
        _ => return None,
    })
}

/// `isURL(self) ? scheme in S : isURL("http://" + self) && scheme in S`: a URL
/// with a scheme needs one of Istio's; a bare reference (`ghcr.io/x/y:1`, which
/// Istio reads as oci://) passes when `http://` + it is a URL.
pub fn url_scheme_allowed(url: &str) -> bool {
    if url.is_empty() || url.contains(char::is_whitespace) {
        return false;
    }
    match url.split_once("://") {
        Some((scheme, rest)) => WASM_URL_SCHEMES.contains(&scheme) && !rest.is_empty(),
        None => true,
    }
}

/// A Go duration string in milliseconds (`1.5s`, `100ms`, `1h30m`).
pub fn go_duration_ms(s: &str) -> Option<f64> {
    let mut rest = s;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 6e4,
            "h" => 3.6e6,
            _ => return None,
        };
        total += n * factor;
        rest = &rest[unit_end..];
    }
    Some(total)
}

// ---- Metadata and Kubernetes' own kinds -------------------------------------------

/// RFC 1123 subdomain (most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label_loose)
}

fn is_dns_label_loose(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 label (namespaces, Service names, port names are near enough).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_loose(s)
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name like a value.
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

fn check_labels(labels: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(map) = labels.as_object() else {
        if !labels.is_null() {
            errors.push(format!("{at}: must be a map of strings"));
        }
        return;
    };
    for (k, v) in map {
        if !is_label_key(k) {
            errors.push(format!("{at}: invalid label key {k:?}"));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => errors.push(format!("{at}.{k}: invalid label value {v}")),
        }
    }
}

pub fn check_metadata(v: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if v["apiVersion"].as_str().is_none_or(str::is_empty) {
        errors.push("apiVersion: required".into());
    }
    if v["kind"].as_str().is_none_or(str::is_empty) {
        errors.push("kind: required".into());
    }
    match v["metadata"]["name"].as_str() {
        Some(name) if is_dns_subdomain(name) => {}
        other => errors.push(format!(
            "metadata.name: {other:?} is not a lowercase RFC 1123 name"
        )),
    }
    if let Some(ns) = v["metadata"].get("namespace") {
        if !ns.as_str().is_some_and(is_dns_label) {
            errors.push(format!("metadata.namespace: {ns} is not an RFC 1123 label"));
        }
    }
    check_labels(&v["metadata"]["labels"], "metadata.labels", &mut errors);
    if let Some(annotations) = v["metadata"].get("annotations") {
        if !annotations
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
        {
            errors.push("metadata.annotations: values must be strings".into());
        }
    }
    errors
}

/// The rules the API server applies to the Kubernetes kinds the example ships
/// (there is no CRD for them): required fields, label syntax, a Deployment's
/// selector matching its pod template, Service ports.
pub fn check_core_kind(v: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let kind = v["kind"].as_str().unwrap_or("");
    let api = v["apiVersion"].as_str().unwrap_or("");
    let known =
        |allowed: &[&str], keys: &[&str], obj: &Value, at: &str, errors: &mut Vec<String>| {
            if let Some(map) = obj.as_object() {
                for k in map.keys() {
                    if !allowed.contains(&k.as_str()) {
                        errors.push(format!("{at}{k}: unknown field"));
                    }
                }
                for k in keys {
                    if !map.contains_key(*k) {
                        errors.push(format!("{at}{k}: required"));
                    }
                }
            }
        };
    match (api, kind) {
        ("v1", "Namespace") => {
            known(&["apiVersion", "kind", "metadata"], &[], v, "", &mut errors);
            if v["metadata"].get("namespace").is_some() {
                errors.push("metadata.namespace: a Namespace is not namespaced".into());
            }
        }
        ("v1", "Service") => {
            known(
                &["apiVersion", "kind", "metadata", "spec"],
                &["spec"],
                v,
                "",
                &mut errors,
            );
            let spec = &v["spec"];
            check_labels(&spec["selector"], "spec.selector", &mut errors);
            let ports = spec["ports"].as_array().cloned().unwrap_or_default();
            if ports.is_empty() {
                errors.push("spec.ports: at least one port".into());
            }
            for (i, p) in ports.iter().enumerate() {
                known(
                    &[
                        "name",
                        "port",
                        "targetPort",
                        "protocol",
                        "appProtocol",
                        "nodePort",
                    ],
                    &["port"],
                    p,
                    &format!("spec.ports[{i}]."),
                    &mut errors,
                );
                if !p["port"].as_u64().is_some_and(|n| (1..=65535).contains(&n)) {
                    errors.push(format!("spec.ports[{i}].port: 1..65535"));
                }
                if ports.len() > 1 && !p["name"].as_str().is_some_and(is_dns_label) {
                    errors.push(format!("spec.ports[{i}].name: required with several ports"));
                }
            }
        }
        ("apps/v1", "Deployment") => {
            known(
                &["apiVersion", "kind", "metadata", "spec"],
                &["spec"],
                v,
                "",
                &mut errors,
            );
            let spec = &v["spec"];
            known(
                &[
                    "replicas",
                    "selector",
                    "template",
                    "strategy",
                    "minReadySeconds",
                    "revisionHistoryLimit",
                    "progressDeadlineSeconds",
                    "paused",
                ],
                &["selector", "template"],
                spec,
                "spec.",
                &mut errors,
            );
            let selector = &spec["selector"]["matchLabels"];
            let labels = &spec["template"]["metadata"]["labels"];
            check_labels(selector, "spec.selector.matchLabels", &mut errors);
            check_labels(labels, "spec.template.metadata.labels", &mut errors);
            if selector.as_object().is_none_or(|m| m.is_empty()) {
                errors.push("spec.selector.matchLabels: required".into());
            } else if !labels_include(labels, selector) {
                errors.push(
                    "spec.template.metadata.labels: must include spec.selector.matchLabels".into(),
                );
            }
            let containers = spec["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if containers.is_empty() {
                errors.push("spec.template.spec.containers: at least one".into());
            }
            for (i, c) in containers.iter().enumerate() {
                if !c["name"].as_str().is_some_and(is_dns_label) {
                    errors.push(format!("spec.template.spec.containers[{i}].name: required"));
                }
                if c["image"].as_str().is_none_or(|s| s.is_empty()) {
                    errors.push(format!(
                        "spec.template.spec.containers[{i}].image: required"
                    ));
                }
            }
        }
        _ => errors.push(format!("{api} {kind}: no schema or checks for this kind")),
    }
    errors
}

/// `labels` has every key/value of `selector`.
pub fn labels_include(labels: &Value, selector: &Value) -> bool {
    selector.as_object().is_some_and(|sel| {
        sel.iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    })
}

// ---- pluginConfig -> the JSON string Envoy receives --------------------------------

/// The JSON string Istio puts in the Wasm filter's `configuration` for a
/// WasmPlugin's `pluginConfig`. The CRD stores it as a `google.protobuf.Struct`
/// (every number a double), which istiod turns into JSON with
/// `protomarshal.ToJSON` (golang/protobuf jsonpb, no indent: map keys sorted,
/// numbers formatted like Go's encoding/json) — pilot/pkg/model/extensions.go.
pub fn istio_plugin_config_json(plugin_config: &Value) -> String {
    let mut out = String::new();
    write_struct_json(plugin_config, &mut out);
    out
}

fn write_struct_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_json_float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => out.push_str(&serde_json::to_string(s).expect("string")),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_struct_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            for (i, (k, item)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("key"));
                out.push(':');
                write_struct_json(item, out);
            }
            out.push('}');
        }
    }
}

/// A float64 the way Go's encoding/json writes it: shortest representation,
/// exponent form only below 1e-6 or from 1e21 on (`1e+21`, `1e-7`).
pub fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// The filter's own parser on a WasmPlugin's pluginConfig, as Envoy would see it.
pub fn parse_plugin_config(plugin: &Doc) -> Result<Config, Vec<String>> {
    let config = &plugin.value["spec"]["pluginConfig"];
    if !config.is_object() {
        return Err(vec![format!("{}: spec.pluginConfig: missing", plugin.id())]);
    }
    Config::from_json(istio_plugin_config_json(config).as_bytes()).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: spec.pluginConfig: {e}", plugin.id()))
            .collect()
    })
}

/// Why a WasmPlugin is not scoped to its service's hosts, if it is not: its
/// `pluginConfig` needs a top-level `hosts` list, or (a config with several
/// `rollouts`, issue 21) `match.hosts` in every rollout. A plugin runs on every
/// request of the listeners it is attached to (a sidecar's outbound port, a
/// gateway); without hosts it decides, counts and guards requests to every service
/// there. Other kinds: nothing.
pub fn wasm_plugin_scope_errors(doc: &Doc) -> Vec<String> {
    if doc.kind() != "WasmPlugin" {
        return Vec::new();
    }
    let config = &doc.value["spec"]["pluginConfig"];
    let non_empty_list = |v: &Value| {
        v.as_array().is_some_and(|l| {
            !l.is_empty() && l.iter().all(|h| h.as_str().is_some_and(|h| !h.is_empty()))
        })
    };
    let mut errors = Vec::new();
    match config.get("rollouts") {
        Some(rollouts) => {
            let list = rollouts.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                errors.push("spec.pluginConfig.rollouts: a non-empty list".to_string());
            }
            for (i, r) in list.iter().enumerate() {
                if !non_empty_list(&r["match"]["hosts"]) {
                    errors.push(format!(
                        "spec.pluginConfig.rollouts[{i}].match.hosts: missing or empty"
                    ));
                }
            }
        }
        None if !non_empty_list(&config["hosts"]) => {
            errors.push("spec.pluginConfig.hosts: missing or empty".to_string())
        }
        None => {}
    }
    errors
        .into_iter()
        .map(|e| {
            format!(
                "{}: {e}: the plugin would decide, count and guard requests to every service it sees",
                doc.id()
            )
        })
        .collect()
}

// ---- Cross-checks -------------------------------------------------------------------

/// The tag keys in the filter's metric names (`version=.=V;.;...`): what
/// `extraStatTags` must list.
pub fn metric_tag_keys() -> BTreeSet<String> {
    use canary_router::decide::Reason;
    use canary_router::metrics::{
        grpc_responses_total_name, request_duration_name, requests_total_name,
        responses_total_name, rollout_tag,
    };
    let names = [
        // A config with rollouts tags every series with its rollout.
        format!(
            "{}{}",
            rollout_tag("r"),
            requests_total_name("p", "v", Reason::Hash)
        ),
        responses_total_name("p", "v", "2xx"),
        grpc_responses_total_name("p", "v", "OK"),
        request_duration_name("p", "v"),
    ];
    names
        .iter()
        .flat_map(|n| n.split(";.;"))
        .filter_map(|part| part.split_once("=.=").map(|(k, _)| k.to_string()))
        .collect()
}

/// A Kubernetes host name as Istio resolves it from `namespace`.
pub fn fqdn(host: &str, namespace: &str) -> String {
    match host.split('.').count() {
        1 => format!("{host}.{namespace}.svc.cluster.local"),
        2 => format!("{host}.svc.cluster.local"),
        _ => host.to_string(),
    }
}

/// Everything that does not fit together in a set of manifests: the plugin config
/// against the filter's parser, the routes against the config, the subsets against
/// the DestinationRules, the pods against the subsets and selectors, the stats tags
/// against the metric names.
pub fn cross_check(docs: &[Doc]) -> Vec<String> {
    let mut errors = Vec::new();
    let plugins = of_kind(docs, "WasmPlugin");
    if plugins.is_empty() {
        errors.push("no WasmPlugin".into());
    }
    let mut configs = Vec::new();
    for plugin in &plugins {
        match parse_plugin_config(plugin) {
            Ok(config) => configs.push((plugin, config)),
            Err(e) => errors.extend(e),
        }
        let spec = &plugin.value["spec"];
        if spec["type"] != "HTTP" && spec.get("type").is_some() {
            errors.push(format!(
                "{}: spec.type: the filter is an HTTP filter",
                plugin.id()
            ));
        }
        if spec.get("selector").is_none()
            && spec.get("targetRefs").is_none()
            && spec.get("targetRef").is_none()
        {
            errors.push(format!(
                "{}: no selector or targetRefs: it would load into every proxy of the namespace",
                plugin.id()
            ));
        }
    }
    // One config for the whole rollout: every proxy must decide alike. Only the
    // override block may differ (e.g. a token at the internet-facing gateway), the
    // hosts (the names the service has where the plugin runs), and the fingerprint
    // of the config's text.
    if let Some(((first, first_config), rest)) = configs.split_first() {
        for (other, config) in rest {
            let mut comparable = config.clone();
            comparable.override_ = first_config.override_.clone();
            comparable.hosts = first_config.hosts.clone();
            comparable.fingerprint = first_config.fingerprint;
            if &comparable != first_config {
                errors.push(format!(
                    "{}: pluginConfig differs from {}'s: every proxy must run the same config",
                    other.id(),
                    first.id()
                ));
            }
        }
    }
    let Some((_, config)) = configs.first() else {
        return errors;
    };
    let versions: Vec<&str> = config.versions.iter().map(|v| v.name.as_str()).collect();
    let baseline = versions[0];
    let route_header = config.route_header.as_str();

    let drs = of_kind(docs, "DestinationRule");
    let vss = of_kind(docs, "VirtualService");
    if vss.is_empty() {
        errors.push("no VirtualService routes on the filter's header".into());
    }
    for vs in &vss {
        errors.extend(check_virtual_service(
            vs,
            route_header,
            &versions,
            baseline,
            &drs,
        ));
        for gw in vs.value["spec"]["gateways"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let gw = gw.as_str().unwrap_or("");
            if gw == "mesh" {
                continue;
            }
            let (ns, name) = gw.split_once('/').unwrap_or((vs.namespace(), gw));
            match of_kind(docs, "Gateway")
                .into_iter()
                .find(|g| g.namespace() == ns && g.name() == name)
            {
                None => errors.push(format!(
                    "{}: spec.gateways: no Gateway {ns}/{name}",
                    vs.id()
                )),
                Some(g) => {
                    let served: BTreeSet<&str> = g.value["spec"]["servers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|s| s["hosts"].as_array().into_iter().flatten())
                        .filter_map(Value::as_str)
                        .map(|h| h.rsplit('/').next().unwrap_or(h))
                        .collect();
                    for host in vs.value["spec"]["hosts"].as_array().into_iter().flatten() {
                        let host = host.as_str().unwrap_or("");
                        if !served.contains(host) && !served.contains("*") {
                            errors.push(format!(
                                "{}: host {host} is not served by Gateway {ns}/{name}",
                                vs.id()
                            ));
                        }
                    }
                }
            }
        }
    }

    let deployments = of_kind(docs, "Deployment");
    let services = of_kind(docs, "Service");
    for dr in &drs {
        let host = fqdn(
            dr.value["spec"]["host"].as_str().unwrap_or(""),
            dr.namespace(),
        );
        let subsets: Vec<&Value> = dr.value["spec"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let names: BTreeSet<&str> = subsets.iter().filter_map(|s| s["name"].as_str()).collect();
        let expected: BTreeSet<&str> = versions.iter().copied().collect();
        if names != expected {
            errors.push(format!(
                "{}: subsets {names:?} differ from the plugin config's versions {expected:?}",
                dr.id()
            ));
        }
        let service = services
            .iter()
            .find(|s| fqdn(s.name(), s.namespace()) == host);
        let Some(service) = service else {
            errors.push(format!("{}: no Service for host {host}", dr.id()));
            continue;
        };
        let ports = service.value["spec"]["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, p) in ports.iter().enumerate() {
            let http = p["appProtocol"]
                .as_str()
                .is_some_and(|a| a.starts_with("http"))
                || p["name"]
                    .as_str()
                    .is_some_and(|n| n == "http" || n.starts_with("http-"));
            if !http {
                errors.push(format!(
                    "{}: spec.ports[{i}]: name it http (or appProtocol: http) so Istio treats it as HTTP",
                    service.id()
                ));
            }
        }
        let service_selector = &service.value["spec"]["selector"];
        for subset in subsets {
            let name = subset["name"].as_str().unwrap_or("");
            let labels = &subset["labels"];
            if labels.get("version").and_then(Value::as_str) != Some(name) {
                errors.push(format!(
                    "{}: subset {name}: labels must be version: {name} (the version label of its pods)",
                    dr.id()
                ));
            }
            let pods = deployments.iter().filter(|d| {
                d.namespace() == dr.namespace()
                    && labels_include(&d.value["spec"]["template"]["metadata"]["labels"], labels)
                    && labels_include(
                        &d.value["spec"]["template"]["metadata"]["labels"],
                        service_selector,
                    )
            });
            if pods.count() == 0 {
                errors.push(format!(
                    "{}: subset {name}: no Deployment's pods carry {labels} and the Service's selector",
                    dr.id()
                ));
            }
        }
        if service_selector.get("version").is_some() {
            errors.push(format!(
                "{}: spec.selector must not pin a version",
                service.id()
            ));
        }
    }

    // The pods of the versions (what the DestinationRules' subsets select).
    let version_pods: Vec<&&Doc> = deployments
        .iter()
        .filter(|d| {
            drs.iter().any(|dr| {
                dr.namespace() == d.namespace()
                    && dr.value["spec"]["subsets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| {
                            labels_include(
                                &d.value["spec"]["template"]["metadata"]["labels"],
                                &s["labels"],
                            )
                        })
            })
        })
        .collect();
    // The ports the mesh VirtualServices' hosts listen on (what callers send to).
    let mut routed_ports = BTreeSet::new();
    for vs in vss
        .iter()
        .filter(|vs| vs.value["spec"].get("gateways").is_none())
    {
        for host in vs.value["spec"]["hosts"].as_array().into_iter().flatten() {
            let host = fqdn(host.as_str().unwrap_or(""), vs.namespace());
            for s in services
                .iter()
                .filter(|s| fqdn(s.name(), s.namespace()) == host)
            {
                for p in s.value["spec"]["ports"].as_array().into_iter().flatten() {
                    routed_ports.extend(p["port"].as_u64());
                }
            }
        }
    }
    let tags = metric_tag_keys();
    for plugin in &plugins {
        let Some(selector) = plugin.value["spec"]["selector"]["matchLabels"].as_object() else {
            continue;
        };
        let selector = Value::Object(selector.clone());
        let gateway_selected = of_kind(docs, "Gateway")
            .iter()
            .any(|g| labels_include(&g.value["spec"]["selector"], &selector));
        let selected: Vec<&&Doc> = deployments
            .iter()
            .filter(|d| {
                // A selector applies in the plugin's namespace; in the root namespace, in all.
                (d.namespace() == plugin.namespace() || plugin.namespace() == "istio-system")
                    && labels_include(
                        &d.value["spec"]["template"]["metadata"]["labels"],
                        &selector,
                    )
            })
            .collect();
        if selected.is_empty() && !gateway_selected {
            errors.push(format!(
                "{}: spec.selector {selector} matches no Deployment and no Gateway's pods in these manifests",
                plugin.id()
            ));
        }
        for d in &selected {
            if version_pods.iter().any(|p| p.id() == d.id()) {
                errors.push(format!(
                    "{}: selects {}, a version of the service itself: the header must be set by the caller's proxy, where the route is picked",
                    plugin.id(),
                    d.id()
                ));
            }
            let annotation = d.value["spec"]["template"]["metadata"]["annotations"]
                ["sidecar.istio.io/extraStatTags"]
                .as_str()
                .unwrap_or("");
            let listed: BTreeSet<String> = annotation
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            if !tags.is_subset(&listed) {
                errors.push(format!(
                    "{}: pod annotation sidecar.istio.io/extraStatTags {listed:?} lacks the metric tags {tags:?}",
                    d.id()
                ));
            }
        }
        if selected.is_empty() {
            continue;
        }
        // A sidecar plugin limited to some ports must cover the routed Service's port.
        for m in plugin.value["spec"]["match"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if m["mode"] == "SERVER" {
                errors.push(format!(
                    "{}: match mode SERVER runs on the inbound side, after the route was picked",
                    plugin.id()
                ));
            }
            let ports: BTreeSet<u64> = m["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["number"].as_u64())
                .collect();
            if !ports.is_empty() && !routed_ports.is_subset(&ports) {
                errors.push(format!(
                    "{}: match ports {ports:?} miss the routed Service ports {routed_ports:?}",
                    plugin.id()
                ));
            }
        }
    }
    errors
}

fn check_virtual_service(
    vs: &Doc,
    route_header: &str,
    versions: &[&str],
    baseline: &str,
    drs: &[&Doc],
) -> Vec<String> {
    let mut errors = Vec::new();
    let id = vs.id();
    let routes = vs.value["spec"]["http"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut reached = BTreeSet::new();
    for (i, route) in routes.iter().enumerate() {
        let at = format!("{id}: spec.http[{i}]");
        let dests: Vec<&Value> = route["route"].as_array().into_iter().flatten().collect();
        if dests.len() != 1 {
            errors.push(format!(
                "{at}: one destination per route (the filter already split the traffic)"
            ));
        }
        let matches: Vec<&Value> = route["match"].as_array().into_iter().flatten().collect();
        let mut wanted: Option<String> = None;
        for m in &matches {
            let headers = m["headers"].as_object().cloned().unwrap_or_default();
            for (name, matcher) in &headers {
                if name != route_header {
                    errors.push(format!(
                        "{at}: matches header {name}, but the filter writes {route_header} (its route_header)"
                    ));
                    continue;
                }
                match matcher["exact"].as_str() {
                    Some(v) => wanted = Some(v.to_string()),
                    None => {
                        errors.push(format!("{at}: match {route_header} with exact: <version>"))
                    }
                }
            }
        }
        for dest in dests {
            let subset = dest["destination"]["subset"].as_str().unwrap_or("");
            let host = fqdn(
                dest["destination"]["host"].as_str().unwrap_or(""),
                vs.namespace(),
            );
            if !versions.contains(&subset) {
                errors.push(format!(
                    "{at}: subset {subset:?} is not a version of the plugin config {versions:?}"
                ));
            }
            match (&wanted, matches.is_empty()) {
                (Some(v), _) if v != subset => errors.push(format!(
                    "{at}: {route_header}: {v} goes to subset {subset}: must be subset {v}"
                )),
                (None, true) if subset != baseline => errors.push(format!(
                    "{at}: the catch-all route goes to {subset}, must be the baseline {baseline} (where requests the filter did not see belong)"
                )),
                _ => {}
            }
            let defined = drs.iter().any(|dr| {
                fqdn(
                    dr.value["spec"]["host"].as_str().unwrap_or(""),
                    dr.namespace(),
                ) == host
                    && dr.value["spec"]["subsets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| s["name"] == subset)
            });
            if !defined {
                errors.push(format!(
                    "{at}: no DestinationRule defines subset {subset} of {host}"
                ));
            }
            reached.insert(subset.to_string());
        }
        if matches.is_empty() && i + 1 != routes.len() {
            errors.push(format!("{at}: a route without match must be the last"));
        }
    }
    if routes.last().is_some_and(|r| r.get("match").is_some()) {
        errors.push(format!(
            "{id}: the last route must have no match and go to {baseline}"
        ));
    }
    for v in versions {
        if !reached.contains(*v) {
            errors.push(format!("{id}: no route to version {v}"));
        }
    }
    errors
}

// ---- Rendering (make istio-manifests) -----------------------------------------------

pub struct RenderOptions {
    /// `oci://registry/repo:tag` (a reference without a scheme gets `oci://`).
    pub image: String,
    /// The manifest digest to pin (64 hex digits), if any.
    pub sha256: Option<String>,
    /// The plugin config JSON; `None` keeps the shipped one.
    pub plugin_config: Option<String>,
}

/// A rendered file: its path relative to the output directory and its text.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub path: String,
    pub text: String,
}

/// The manifest digest of an OCI image layout written by `make oci`.
pub fn layout_digest(layout: &Path) -> Result<String, String> {
    let index = fs::read_to_string(layout.join("index.json")).map_err(|e| {
        format!(
            "{}: {e} (run `make oci`)",
            layout.join("index.json").display()
        )
    })?;
    let index: Value = serde_json::from_str(&index).map_err(|e| format!("index.json: {e}"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    if manifests.len() != 1 {
        return Err(format!(
            "index.json: expected one manifest, found {}",
            manifests.len()
        ));
    }
    manifests[0]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .map(str::to_string)
        .ok_or_else(|| "index.json: no sha256 digest".into())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Renders the shipped manifests (under `root`) for an image and a plugin config;
/// refuses (with every reason) a config the filter rejects and output that would
/// not validate.
pub fn render(
    root: &Path,
    schemas: &Schemas,
    options: &RenderOptions,
) -> Result<Vec<Rendered>, Vec<String>> {
    let mut image = options.image.trim().to_string();
    if !image.contains("://") {
        image = format!("oci://{image}");
    }
    if !url_scheme_allowed(&image) {
        return Err(vec![format!(
            "image {image}: the scheme must be one of oci, https, http, file"
        )]);
    }
    let in_ref = image.split_once("@sha256:").map(|(_, d)| d.to_string());
    let sha256 = match (&options.sha256, &in_ref) {
        (Some(s), Some(r)) if s != r => {
            return Err(vec![format!(
                "sha256 {s} differs from the digest in the image reference {r}"
            )])
        }
        (Some(s), _) => Some(s.clone()),
        (None, r) => r.clone(),
    };
    if let Some(s) = &sha256 {
        if !is_hex64(s) {
            return Err(vec![format!("sha256 {s:?}: 64 lowercase hex digits")]);
        }
    }

    let mut docs = load_manifests(root);
    let shipped = of_kind(&docs, "WasmPlugin")
        .first()
        .map(|p| p.value["spec"]["pluginConfig"].clone())
        .ok_or_else(|| vec!["no WasmPlugin in istio/".to_string()])?;
    let plugin_config: Value = match &options.plugin_config {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| vec![format!("plugin config: not JSON: {e}")])?
        }
        None => shipped.clone(),
    };
    // istio/app/ is one service (its Deployments, DestinationRule and
    // VirtualService follow the config's versions): a config of several services
    // has no one set of versions to render them from.
    if plugin_config.get("rollouts").is_some_and(|r| !r.is_null()) {
        return Err(vec![
            "plugin config: has `rollouts` (several services): make istio-manifests renders istio/app/, one service; for several services at a gateway start from istio/gateway-rollouts/ (docs/rollouts.md)".to_string(),
        ]);
    }
    let config =
        Config::from_json(istio_plugin_config_json(&plugin_config).as_bytes()).map_err(|errs| {
            errs.iter()
                .map(|e| format!("plugin config: {e}"))
                .collect::<Vec<_>>()
        })?;
    let versions: Vec<String> = config.versions.iter().map(|v| v.name.clone()).collect();
    let baseline = versions[0].clone();

    // Deployments: one per version, from the shipped baseline's.
    let shipped_config = Config::from_json(istio_plugin_config_json(&shipped).as_bytes())
        .map_err(|_| vec!["the shipped pluginConfig does not parse".to_string()])?;
    let shipped_versions: Vec<String> = shipped_config
        .versions
        .iter()
        .map(|v| v.name.clone())
        .collect();
    let mut out_docs: Vec<Doc> = Vec::new();
    let mut template: Option<Doc> = None;
    for doc in docs.drain(..) {
        let version_label = doc.value["spec"]["template"]["metadata"]["labels"]["version"]
            .as_str()
            .map(str::to_string);
        match (doc.kind(), version_label) {
            ("Deployment", Some(v)) if shipped_versions.contains(&v) => {
                if v == shipped_versions[0] {
                    template = Some(doc.clone());
                }
            }
            _ => out_docs.push(doc),
        }
    }
    let template =
        template.ok_or_else(|| vec!["no Deployment of the baseline version".to_string()])?;
    let old_baseline = &shipped_versions[0];
    let insert_at = out_docs
        .iter()
        .position(|d| d.file == template.file && d.index > template.index)
        .unwrap_or(out_docs.len());
    let mut new_deployments = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let mut d = template.clone();
        let app = d.value["metadata"]["labels"]["app"]
            .as_str()
            .unwrap_or("myapp")
            .to_string();
        d.value["metadata"]["name"] = json!(format!("{app}-{v}"));
        for labels in [
            "/metadata/labels",
            "/spec/selector/matchLabels",
            "/spec/template/metadata/labels",
        ] {
            if let Some(l) = d.value.pointer_mut(labels) {
                l["version"] = json!(v);
            }
        }
        if i > 0 {
            d.value["spec"]["replicas"] = json!(1);
        }
        if let Some(containers) = d.value.pointer_mut("/spec/template/spec/containers") {
            for c in containers.as_array_mut().into_iter().flatten() {
                for arg in c["args"].as_array_mut().into_iter().flatten() {
                    if arg.as_str() == Some(&format!("-text={old_baseline}")) {
                        *arg = json!(format!("-text={v}"));
                    }
                }
            }
        }
        new_deployments.push(d);
    }
    out_docs.splice(insert_at..insert_at, new_deployments);

    for doc in &mut out_docs {
        match doc.kind() {
            "WasmPlugin" => {
                let spec = &mut doc.value["spec"];
                spec["url"] = json!(image);
                match &sha256 {
                    Some(s) => spec["sha256"] = json!(s),
                    None => {
                        if let Some(m) = spec.as_object_mut() {
                            m.remove("sha256");
                        }
                    }
                }
                // `hosts` belongs to the placement (the callers' sidecars know the
                // service by its cluster names, the gateway by its public one): each
                // manifest keeps its own unless your config sets hosts.
                let own_hosts = spec["pluginConfig"].get("hosts").cloned();
                let mut config = plugin_config.clone();
                if let (Some(hosts), Some(c)) = (own_hosts, config.as_object_mut()) {
                    c.entry("hosts").or_insert(hosts);
                }
                spec["pluginConfig"] = config;
            }
            "DestinationRule" => {
                doc.value["spec"]["subsets"] = Value::Array(
                    versions
                        .iter()
                        .map(|v| json!({"name": v, "labels": {"version": v}}))
                        .collect(),
                );
            }
            "VirtualService" => {
                let host = doc.value["spec"]["http"][0]["route"][0]["destination"]["host"].clone();
                let mut routes: Vec<Value> = versions[1..]
                    .iter()
                    .map(|v| {
                        json!({
                            "name": v,
                            "match": [{"headers": {config.route_header.clone(): {"exact": v}}}],
                            "route": [{"destination": {"host": host, "subset": v}}]
                        })
                    })
                    .collect();
                routes.push(json!({"name": baseline, "route": [{"destination": {"host": host, "subset": baseline}}]}));
                doc.value["spec"]["http"] = Value::Array(routes);
            }
            _ => {}
        }
    }

    let mut errors: Vec<String> = out_docs.iter().flat_map(|d| schemas.validate(d)).collect();
    errors.extend(cross_check(&out_docs));
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut files: Vec<Rendered> = Vec::new();
    let mut by_file: BTreeMap<String, Vec<&Doc>> = BTreeMap::new();
    for d in &out_docs {
        by_file.entry(d.file.clone()).or_default().push(d);
    }
    for (file, docs) in by_file {
        let mut text = format!(
            "# Rendered by `make istio-manifests` from {file}: image {image}, plugin config with versions {versions:?}.\n"
        );
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                text.push_str("---\n");
            }
            text.push_str(&serde_yaml::to_string(&d.value).expect("YAML"));
        }
        files.push(Rendered {
            path: file.trim_start_matches("istio/").to_string(),
            text,
        });
    }

    // Monitoring: the metric prefix and the baseline's name come from the config;
    // the service is the shipped app's (`make monitoring` renders for another).
    let target = monitoring::Target {
        prefix: config.metrics_prefix.clone(),
        baseline: baseline.clone(),
        ..monitoring::Target::default()
    };
    let read = |file: &str| fs::read_to_string(root.join(file)).map_err(|e| vec![e.to_string()]);
    files.push(Rendered {
        path: "monitoring/prometheus-rules.yaml".into(),
        text: monitoring::render_istio_rules(&read(monitoring::ISTIO_RULES)?, &target)?,
    });
    files.push(Rendered {
        path: "monitoring/grafana-dashboard.json".into(),
        text: monitoring::render_dashboard(&read(monitoring::DASHBOARD)?, &target)?,
    });
    let values = fs::read_to_string(root.join(STAT_TAGS_FILE)).map_err(|e| vec![e.to_string()])?;
    files.push(Rendered {
        path: "monitoring/istio-values.yaml".into(),
        text: values,
    });
    Ok(files)
}

// ---- PromQL selectors in the rules and the dashboard --------------------------------

/// A metric selector found in a PromQL expression: `name{label op "value", ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<(String, String, String)>,
}

/// The selectors of metrics named with one of `prefixes` (a small scanner, not a
/// parser: promtool checks the syntax).
pub fn selectors(expr: &str, prefixes: &[&str]) -> Vec<Selector> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    while i < bytes.len() {
        if bytes[i] == b'"' || bytes[i] == b'\'' {
            // Skip string literals (label values, annotations).
            let quote = bytes[i];
            i += 1;
            while i < bytes.len() && bytes[i] != quote {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if !prefixes.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let mut matchers = Vec::new();
            if i < bytes.len() && bytes[i] == b'{' {
                let end = expr[i..].find('}').map(|e| i + e).unwrap_or(bytes.len());
                for part in expr[i + 1..end].split(',') {
                    let part = part.trim();
                    if part.is_empty() {
                        continue;
                    }
                    let op_at = part.find(['=', '!']).unwrap_or(part.len());
                    let label = part[..op_at].trim().to_string();
                    let rest = &part[op_at..];
                    let op_len = if rest.starts_with("!=")
                        || rest.starts_with("=~")
                        || rest.starts_with("!~")
                    {
                        2
                    } else {
                        1
                    };
                    let op = rest[..op_len.min(rest.len())].to_string();
                    let value = rest[op_len.min(rest.len())..]
                        .trim()
                        .trim_matches('"')
                        .to_string();
                    matchers.push((label, op, value));
                }
                i = end + 1;
            }
            out.push(Selector {
                metric: name.to_string(),
                matchers,
            });
            continue;
        }
        i += 1;
    }
    out
}

/// What the filter exports with prefix `p` (Prometheus names) and the labels each has.
/// Every series but the config health ones may carry `rollout` too: a config with
/// several `rollouts` labels each series with its rollout (issue 21); a
/// single-rollout config's series have none, which PromQL reads as empty.
pub fn exported_metrics(p: &str) -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut m = BTreeMap::new();
    m.insert(
        format!("{p}_requests_total"),
        BTreeSet::from(["version", "reason"]),
    );
    m.insert(
        format!("{p}_responses_total"),
        BTreeSet::from(["version", "code_class"]),
    );
    m.insert(
        format!("{p}_grpc_responses_total"),
        BTreeSet::from(["version", "grpc_code"]),
    );
    for suffix in ["_bucket", "_sum", "_count"] {
        let mut labels = BTreeSet::from(["version"]);
        if suffix == "_bucket" {
            labels.insert("le");
        }
        m.insert(format!("{p}_request_duration_milliseconds{suffix}"), labels);
    }
    // Gauges of the ramp schedule and rollback guard (issue: ramp/guard work).
    m.insert(
        format!("{p}_weight_basis_points"),
        BTreeSet::from(["version"]),
    );
    m.insert(format!("{p}_guard_tripped"), BTreeSet::from(["version"]));
    for labels in m.values_mut() {
        labels.insert("rollout");
    }
    // Config health: always under the default prefix, no tags (issue 12).
    for name in [
        canary_router::metrics::CONFIG_REJECTED_TOTAL,
        canary_router::metrics::CONFIG_STALE,
        canary_router::metrics::CONFIG_SAFE_MODE,
    ] {
        m.insert(name.to_string(), BTreeSet::new());
    }
    m
}

/// Checks a PromQL expression's canary-router selectors against the metric contract:
/// known metric names, labels the metric has, values the filter can produce.
pub fn check_selectors(expr: &str, prefix: &str, recorded: &BTreeSet<String>) -> Vec<String> {
    use canary_router::decide::Reason;
    use canary_router::grpc::CODE_NAMES;
    use canary_router::metrics::CODE_CLASSES;
    let exported = exported_metrics(prefix);
    let mut errors = Vec::new();
    for s in selectors(expr, &[&format!("{prefix}_"), &format!("{prefix}:")]) {
        let labels: Option<BTreeSet<&str>> = if let Some(l) = exported.get(&s.metric) {
            Some(l.clone())
        } else if recorded.contains(&s.metric) {
            None // a recording rule: its labels are whatever it keeps
        } else {
            errors.push(format!(
                "{}: not a metric canary-router exports, nor a recording rule",
                s.metric
            ));
            continue;
        };
        for (label, op, value) in &s.matchers {
            if let Some(labels) = &labels {
                if !labels.contains(label.as_str()) {
                    errors.push(format!("{}: has no label {label}", s.metric));
                }
            }
            if op == "=" || op == "!=" {
                let ok = match label.as_str() {
                    "reason" => Reason::ALL.iter().any(|r| r.as_str() == value),
                    "code_class" => CODE_CLASSES.contains(&value.as_str()),
                    "grpc_code" => CODE_NAMES.contains(&value.as_str()),
                    _ => true,
                };
                if !ok {
                    errors.push(format!(
                        "{}: {label}{op}\"{value}\" is never exported",
                        s.metric
                    ));
                }
            }
            // A list of code names (`grpc_code=~"UNKNOWN|UNAVAILABLE"`): each one real.
            if label == "grpc_code" && (op == "=~" || op == "!~") {
                for name in value.split('|').filter(|n| !CODE_NAMES.contains(n)) {
                    errors.push(format!(
                        "{}: {label}{op}\"{value}\": {name} is not a gRPC code name",
                        s.metric
                    ));
                }
            }
        }
    }
    errors
}

/// Istio's standard metrics that the rules and the dashboard read for response
/// classes and latency per version, with the labels they select on (Istio's
/// documented standard labels; the filter records these only when opted in).
pub fn istio_standard_metrics() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let labels = [
        "reporter",
        "source_workload",
        "source_workload_namespace",
        "source_app",
        "source_version",
        "destination_workload",
        "destination_workload_namespace",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "request_protocol",
        "response_code",
        "grpc_response_status",
        "response_flags",
        "connection_security_policy",
    ];
    let mut m = BTreeMap::new();
    m.insert("istio_requests_total", BTreeSet::from(labels));
    for suffix in ["_bucket", "_sum", "_count"] {
        let mut l = BTreeSet::from(labels);
        if suffix == "_bucket" {
            l.insert("le");
        }
        let name: &'static str = match suffix {
            "_bucket" => "istio_request_duration_milliseconds_bucket",
            "_sum" => "istio_request_duration_milliseconds_sum",
            _ => "istio_request_duration_milliseconds_count",
        };
        m.insert(name, l);
    }
    m
}

/// Checks the Istio selectors of a PromQL expression: known metrics and labels,
/// and always one service's responses as its own sidecars report them
/// (`reporter="destination"`, `destination_service_name` and
/// `destination_service_namespace`), so that other services (also a namesake in
/// another namespace) and the client side's duplicate reports never mix in.
pub fn check_istio_selectors(expr: &str) -> Vec<String> {
    let known = istio_standard_metrics();
    let mut errors = Vec::new();
    for s in selectors(expr, &["istio_request"]) {
        let Some(labels) = known.get(s.metric.as_str()) else {
            errors.push(format!("{}: not an Istio standard metric", s.metric));
            continue;
        };
        for (label, _, _) in &s.matchers {
            if !labels.contains(label.as_str()) {
                errors.push(format!("{}: has no label {label}", s.metric));
            }
        }
        let has = |label: &str, op: &str, value: Option<&str>| {
            s.matchers
                .iter()
                .any(|(l, o, v)| l == label && o == op && value.is_none_or(|x| x == v))
        };
        if !has("reporter", "=", Some("destination")) {
            errors.push(format!(
                "{}: not scoped to reporter=\"destination\"",
                s.metric
            ));
        }
        for label in ["destination_service_name", "destination_service_namespace"] {
            if !has(label, "=", None) {
                errors.push(format!("{}: not scoped to one {label}", s.metric));
            }
        }
    }
    errors
}

/// Prometheus' promtool: `$PROMTOOL`, else the one `make promtool` installs.
pub fn promtool() -> PathBuf {
    let path = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin/promtool"));
    assert!(
        path.exists(),
        "promtool not found at {}: run `make promtool` (or set PROMTOOL). These tests never skip.",
        path.display()
    );
    path
}

/// Runs promtool; returns (success, stdout + stderr).
pub fn run_promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("canary-router-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

//! `make monitoring` (examples/monitoring.rs) and the monitoring part of `make
//! istio-manifests`: the Prometheus rules (Istio's and plain Envoy's) and the Grafana
//! dashboard for one service.
//!
//! The shipped files are the rendering for the shipped example ([`Target::default`]:
//! Service `myapp` in namespace `myapp`, prefix `canary`, baseline `stable`, Envoy
//! clusters `stable` and `canary` of envoy/envoy.yaml, no rollout label): they load
//! as they are, and rendering them for the defaults gives them back unchanged. Any
//! other target is the same text with the service's selectors, names and labels
//! replaced, each replacement required to apply (a file that stops matching the
//! renderer fails here, not silently in a user's Prometheus).

use super::{is_dns_label, selectors, Rendered};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

pub const ISTIO_RULES: &str = "istio/monitoring/prometheus-rules.yaml";
pub const ISTIO_RULE_TESTS: &str = "istio/monitoring/prometheus-rules.test.yaml";
pub const ENVOY_RULES: &str = "envoy/monitoring/prometheus-rules.yaml";
pub const ENVOY_RULE_TESTS: &str = "envoy/monitoring/prometheus-rules.test.yaml";
pub const DASHBOARD: &str = "istio/monitoring/grafana-dashboard.json";
/// The plain-Envoy bootstrap whose clusters the shipped Envoy rules name.
pub const ENVOY_BOOTSTRAP: &str = "envoy/envoy.yaml";

/// What `make monitoring` writes, relative to its output directory.
pub const OUT_ISTIO_RULES: &str = "prometheus-rules.yaml";
pub const OUT_ENVOY_RULES: &str = "envoy-prometheus-rules.yaml";
pub const OUT_DASHBOARD: &str = "grafana-dashboard.json";

/// The Envoy clusters of the shipped rules, each with the version it serves.
pub const SHIPPED_CLUSTERS: [(&str, &str); 2] = [("stable", "stable"), ("canary", "canary")];
/// The Envoy series whose clusters the rules name as versions.
pub const ENVOY_CLUSTER_METRICS: [&str; 2] = [
    "envoy_cluster_upstream_rq_xx",
    "envoy_cluster_upstream_rq_time_bucket",
];

/// The service (and its canary-router config) the rules and the dashboard are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Istio: `destination_service_name` of the service's own sidecars' reports.
    pub service: String,
    /// Istio: `destination_service_namespace`.
    pub namespace: String,
    /// The `rollout` of a config with several `rollouts`: every filter series is
    /// selected with `rollout="NAME"` and the Istio/Envoy series are labelled with it,
    /// so that one file per rollout can be loaded side by side. `None` for a
    /// single-rollout config (its series have no rollout label).
    pub rollout: Option<String>,
    /// The config's `metrics_prefix`.
    pub prefix: String,
    /// The baseline version (the config's first version).
    pub baseline: String,
    /// Plain Envoy: each version's upstream cluster, `(cluster, version)`.
    pub envoy_clusters: Vec<(String, String)>,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            service: "myapp".into(),
            namespace: "myapp".into(),
            rollout: None,
            prefix: "canary".into(),
            baseline: "stable".into(),
            envoy_clusters: SHIPPED_CLUSTERS
                .iter()
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// `cluster=version,cluster=version` (as `ENVOY_CLUSTERS=` takes it).
pub fn parse_cluster_map(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(c, v)| (c.trim().to_string(), v.trim().to_string()))
                .filter(|(c, v)| !c.is_empty() && !v.is_empty())
                .ok_or_else(|| format!("envoy clusters: {pair:?} is not CLUSTER=VERSION"))
        })
        .collect()
}

/// The clusters envoy/envoy.yaml routes each version to: the route matching the
/// plugin's `route_header` with `exact: V` serves version V, the route without that
/// header the baseline (the plugin config's first version).
pub fn envoy_yaml_clusters(root: &Path) -> Result<Vec<(String, String)>, String> {
    let text = fs::read_to_string(root.join(ENVOY_BOOTSTRAP))
        .map_err(|e| format!("{ENVOY_BOOTSTRAP}: {e}"))?;
    let yaml: serde_json::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{ENVOY_BOOTSTRAP}: {e}"))?;
    let listeners = yaml["static_resources"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ingress = listeners
        .iter()
        .find(|l| l["name"] == "ingress")
        .ok_or_else(|| format!("{ENVOY_BOOTSTRAP}: no listener `ingress`"))?;
    let hcm = &ingress["filter_chains"][0]["filters"][0]["typed_config"];
    let plugin = hcm["http_filters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == "canary-router")
        .ok_or_else(|| format!("{ENVOY_BOOTSTRAP}: no canary-router filter"))?;
    let config_text = plugin["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .ok_or_else(|| format!("{ENVOY_BOOTSTRAP}: no plugin configuration"))?;
    let config = canary_router::config::Config::from_json(config_text.as_bytes())
        .map_err(|e| format!("{ENVOY_BOOTSTRAP}: plugin configuration: {e:?}"))?;
    let baseline = config.versions[0].name.clone();
    let mut clusters = Vec::new();
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for route in routes {
        let cluster = route["route"]["cluster"]
            .as_str()
            .ok_or_else(|| format!("{ENVOY_BOOTSTRAP}: a route without one cluster"))?;
        let version = route["match"]["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["name"] == config.route_header.as_str())
            .and_then(|h| h["string_match"]["exact"].as_str())
            .unwrap_or(&baseline);
        clusters.push((cluster.to_string(), version.to_string()));
    }
    // The baseline first, as in the config.
    clusters.sort_by_key(|(_, v)| *v != baseline);
    Ok(clusters)
}

/// A PromQL string literal.
pub fn promql_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `s` as a regular expression matching exactly `s` (RE2 syntax).
pub fn regex_literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `rate(METRIC[5m])` of the clusters of `clusters`, each series labelled with its
/// cluster's version.
pub fn envoy_versions_expr(metric: &str, clusters: &[(String, String)]) -> String {
    let names: Vec<String> = clusters.iter().map(|(c, _)| regex_literal(c)).collect();
    let mut expr = format!(
        "rate({metric}{{envoy_cluster_name=~{}}}[5m])",
        promql_string(&names.join("|"))
    );
    for (cluster, version) in clusters {
        expr = format!(
            "label_replace({expr}, \"version\", {}, \"envoy_cluster_name\", {})",
            promql_string(version),
            promql_string(&regex_literal(cluster))
        );
    }
    expr
}

/// A version, rollout or prefix name safe to write into PromQL and YAML unquoted.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Target {
    /// Everything that would make the rendered files wrong.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !is_dns_label(&self.service) {
            errors.push(format!(
                "service {:?}: a Kubernetes Service name (RFC 1123 label)",
                self.service
            ));
        }
        if !is_dns_label(&self.namespace) {
            errors.push(format!(
                "namespace {:?}: a Kubernetes namespace (RFC 1123 label)",
                self.namespace
            ));
        }
        if let Some(r) = &self.rollout {
            if !is_plain_name(r) {
                errors.push(format!("rollout {r:?}: letters, digits, '.', '_', '-'"));
            }
        }
        let prefix_ok = self
            .prefix
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !prefix_ok {
            errors.push(format!(
                "metrics prefix {:?}: a Prometheus metric name prefix ([a-zA-Z_][a-zA-Z0-9_]*)",
                self.prefix
            ));
        }
        if !is_plain_name(&self.baseline) {
            errors.push(format!(
                "baseline {:?}: a version name (letters, digits, '.', '_', '-')",
                self.baseline
            ));
        }
        errors
    }

    /// What would make the plain-Envoy rules wrong: the cluster -> version map.
    pub fn check_envoy(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.envoy_clusters.is_empty() {
            errors.push("envoy clusters: at least one CLUSTER=VERSION".into());
        }
        for (cluster, version) in &self.envoy_clusters {
            if cluster.is_empty() || cluster.chars().any(char::is_control) {
                errors.push(format!("envoy cluster {cluster:?}: a cluster name"));
            }
            if !is_plain_name(version) {
                errors.push(format!(
                    "envoy cluster {cluster}: version {version:?}: letters, digits, '.', '_', '-'"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (cluster, _) in &self.envoy_clusters {
            if !seen.insert(cluster) {
                errors.push(format!("envoy cluster {cluster} is listed twice"));
            }
        }
        if !self.envoy_clusters.is_empty()
            && !self.envoy_clusters.iter().any(|(_, v)| *v == self.baseline)
        {
            errors.push(format!(
                "envoy clusters: no cluster serves the baseline {:?}",
                self.baseline
            ));
        }
        errors
    }
}

/// Replaces every `from` with `to`; an error when `from` does not occur (the file no
/// longer has what the renderer replaces).
fn replace_all(text: &str, from: &str, to: &str, file: &str, errors: &mut Vec<String>) -> String {
    if !text.contains(from) {
        errors.push(format!("{file}: the renderer expects {from:?}"));
    }
    text.replace(from, to)
}

/// The filter's metric names (and the records' `canary:` level) under `prefix`. The
/// canary_config_* series keep the default prefix whatever the config says.
pub fn rename_prefix(text: &str, prefix: &str) -> String {
    let mut t = text.to_string();
    for metric in [
        "requests_total",
        "responses_total",
        "grpc_responses_total",
        "request_duration_milliseconds",
        "weight_basis_points",
        "guard_tripped",
    ] {
        t = t.replace(&format!("canary_{metric}"), &format!("{prefix}_{metric}"));
    }
    t.replace("canary:", &format!("{prefix}:"))
}

/// The baseline's name in the alerts' version matchers.
fn rename_baseline(text: &str, baseline: &str, file: &str, errors: &mut Vec<String>) -> String {
    let t = replace_all(
        text,
        "version=\"stable\"",
        &format!("version=\"{baseline}\""),
        file,
        errors,
    );
    replace_all(
        &t,
        "version!=\"stable\"",
        &format!("version!=\"{baseline}\""),
        file,
        errors,
    )
}

/// Istio's rules (istio/monitoring/prometheus-rules.yaml) for `target`.
pub fn render_istio_rules(text: &str, target: &Target) -> Result<String, Vec<String>> {
    let mut errors = target.check();
    let file = ISTIO_RULES;
    let mut t = rename_prefix(text, &target.prefix);
    t = rename_baseline(&t, &target.baseline, file, &mut errors);
    t = replace_all(
        &t,
        "destination_service_name=\"myapp\"",
        &format!(
            "destination_service_name={}",
            promql_string(&target.service)
        ),
        file,
        &mut errors,
    );
    t = replace_all(
        &t,
        "destination_service_namespace=\"myapp\"",
        &format!(
            "destination_service_namespace={}",
            promql_string(&target.namespace)
        ),
        file,
        &mut errors,
    );
    if let Some(rollout) = &target.rollout {
        t = scope_to_rollout(&t, &target.prefix, rollout);
    }
    if errors.is_empty() {
        Ok(t)
    } else {
        Err(errors)
    }
}

/// Plain Envoy's rules (envoy/monitoring/prometheus-rules.yaml) for `target`.
pub fn render_envoy_rules(text: &str, target: &Target) -> Result<String, Vec<String>> {
    let mut errors = target.check();
    errors.extend(target.check_envoy());
    let file = ENVOY_RULES;
    let shipped: Vec<(String, String)> = Target::default().envoy_clusters;
    let mut t = rename_prefix(text, &target.prefix);
    t = rename_baseline(&t, &target.baseline, file, &mut errors);
    for metric in ENVOY_CLUSTER_METRICS {
        t = replace_all(
            &t,
            &envoy_versions_expr(metric, &shipped),
            &envoy_versions_expr(metric, &target.envoy_clusters),
            file,
            &mut errors,
        );
    }
    if let Some(rollout) = &target.rollout {
        t = scope_to_rollout(&t, &target.prefix, rollout);
    }
    if errors.is_empty() {
        Ok(t)
    } else {
        Err(errors)
    }
}

/// The Grafana dashboard for `target`: the prefix, and the variables' defaults (the
/// queries read the variables, so any service can be picked in Grafana).
pub fn render_dashboard(text: &str, target: &Target) -> Result<String, Vec<String>> {
    let mut errors = target.check();
    let prefix = &target.prefix;
    let mut t = rename_prefix(text, prefix);
    if prefix != "canary" {
        t = t
            .replace(
                "\"uid\": \"canary-router\"",
                &format!("\"uid\": \"canary-router-{prefix}\""),
            )
            .replace(
                "\"title\": \"canary-router\"",
                &format!("\"title\": \"canary-router ({prefix})\""),
            );
    }
    // The variables' current values: line by line inside each variable's object
    // (serde_json would reorder the keys of the whole file).
    let defaults = [
        ("namespace", Some(target.namespace.as_str())),
        ("service", Some(target.service.as_str())),
        ("rollout", target.rollout.as_deref()),
    ];
    let mut out = String::new();
    let mut variable: Option<&str> = None;
    let mut in_current = false;
    for line in t.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some((name, _)) = defaults
            .iter()
            .find(|(name, _)| trimmed == format!("\"name\": \"{name}\","))
        {
            variable = Some(name);
        }
        let value = defaults
            .iter()
            .find(|(n, _)| Some(*n) == variable)
            .and_then(|(_, v)| *v);
        if variable.is_some() && trimmed == "\"current\": {" {
            in_current = true;
        } else if in_current && trimmed.starts_with('}') {
            in_current = false;
            variable = None;
        }
        let key = ["text", "value"]
            .into_iter()
            .find(|k| trimmed.starts_with(&format!("\"{k}\": ")));
        match (in_current, value, key) {
            (true, Some(v), Some(key)) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                let comma = if trimmed.ends_with(',') { "," } else { "" };
                out.push_str(&format!(
                    "{indent}\"{key}\": {}{comma}\n",
                    serde_json::to_string(v).expect("string")
                ));
            }
            _ => out.push_str(line),
        }
    }
    // Check what was written: valid JSON with the defaults in place.
    match serde_json::from_str::<serde_json::Value>(&out) {
        Err(e) => errors.push(format!("{DASHBOARD}: rendered JSON: {e}")),
        Ok(d) => {
            for (name, value) in defaults {
                let v = d["templating"]["list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| v["name"] == name);
                match (v, value) {
                    (None, _) => errors.push(format!("{DASHBOARD}: no variable {name}")),
                    (Some(v), Some(value)) if v["current"]["value"] != value => errors.push(
                        format!("{DASHBOARD}: variable {name}: current value not set"),
                    ),
                    _ => {}
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Adds `rollout="NAME"` to every selector of the filter's series and of the
/// records (`PREFIX_...`, `PREFIX:...`; not the config health series, which have no
/// rollout), and labels every Istio or Envoy series read with `rate(...)` with
/// `rollout="NAME"`, in the `expr:` values of a rules file (comments, names and
/// annotations are left alone).
pub fn scope_to_rollout(yaml: &str, prefix: &str, rollout: &str) -> String {
    let mut out = String::new();
    let mut block_indent: Option<usize> = None;
    for line in yaml.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        if let Some(key_indent) = block_indent {
            if body.trim().is_empty() || indent > key_indent {
                out.push_str(&scope_expr(line, prefix, rollout));
                continue;
            }
            block_indent = None;
        }
        if let Some(rest) = body.strip_prefix("expr:") {
            let value = rest.trim_start();
            if value.starts_with('|') || value.starts_with('>') {
                block_indent = Some(indent);
                out.push_str(line);
            } else {
                out.push_str(&line[..indent + "expr:".len()]);
                out.push_str(&scope_expr(rest, prefix, rollout));
            }
            continue;
        }
        out.push_str(line);
    }
    out
}

/// The end (exclusive) of the string literal starting at `i` (a quote).
fn skip_string(bytes: &[u8], i: usize) -> usize {
    let quote = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() && bytes[j] != quote {
        j += if bytes[j] == b'\\' { 2 } else { 1 };
    }
    (j + 1).min(bytes.len())
}

/// One PromQL expression (or a piece of one, line by line): see [`scope_to_rollout`].
fn scope_expr(expr: &str, prefix: &str, rollout: &str) -> String {
    let matcher = format!("rollout={}", promql_string(rollout));
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let bytes = expr.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' || b == b'`' {
            let end = skip_string(bytes, i);
            out.push_str(&expr[i..end]);
            i = end;
            continue;
        }
        // Not the start of a name: a digit (`5m`) or the middle of one.
        if !is_ident(b) || b.is_ascii_digit() || (i > 0 && is_ident(bytes[i - 1])) {
            out.push(b as char);
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        let filter_series = (name.starts_with(&format!("{prefix}_"))
            && !name.starts_with("canary_config_"))
            || name.starts_with(&format!("{prefix}:"));
        let rest = expr[i..].trim_start();
        if name == "rate"
            && (rest.starts_with("(istio_request") || rest.starts_with("(envoy_cluster_"))
        {
            // rate(SERIES[5m]) -> label_replace(rate(SERIES[5m]), "rollout", "NAME", "", "")
            let open = i + (expr[i..].len() - rest.len());
            let close = matching_paren(bytes, open);
            out.push_str(&format!(
                "label_replace({}, \"rollout\", {}, \"\", \"\")",
                &expr[start..close],
                promql_string(rollout)
            ));
            i = close;
            continue;
        }
        out.push_str(name);
        if filter_series && !rest.starts_with('(') {
            if bytes.get(i) == Some(&b'{') {
                let empty = expr[i + 1..].trim_start().starts_with('}');
                out.push('{');
                out.push_str(&matcher);
                if !empty {
                    out.push(',');
                }
                i += 1;
            } else {
                out.push_str(&format!("{{{matcher}}}"));
            }
        }
    }
    out
}

/// The position just after the parenthesis that closes the one at `open`.
fn matching_paren(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// The first lines of a rendered rules file: what it was rendered for (the comments
/// after it describe the shipped example).
fn banner(source: &str, target: &Target) -> String {
    let clusters: Vec<String> = target
        .envoy_clusters
        .iter()
        .map(|(c, v)| format!("{c}={v}"))
        .collect();
    let clusters = if source == ENVOY_RULES {
        format!(", Envoy clusters {}", clusters.join(","))
    } else {
        String::new()
    };
    format!(
        "# Rendered by `make monitoring` from {source} for service {} in namespace {}, rollout {},\n# metrics prefix {}, baseline {}{clusters}. The comments below describe the shipped example.\n",
        target.service,
        target.namespace,
        target.rollout.as_deref().unwrap_or("(none)"),
        target.prefix,
        target.baseline,
    )
}

/// Everything `make monitoring` writes for `target`.
pub fn render_monitoring(root: &Path, target: &Target) -> Result<Vec<Rendered>, Vec<String>> {
    let read =
        |file: &str| fs::read_to_string(root.join(file)).map_err(|e| vec![format!("{file}: {e}")]);
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for (out, source, render) in [
        (
            OUT_ISTIO_RULES,
            ISTIO_RULES,
            render_istio_rules as fn(&str, &Target) -> Result<String, Vec<String>>,
        ),
        (OUT_ENVOY_RULES, ENVOY_RULES, render_envoy_rules),
        (OUT_DASHBOARD, DASHBOARD, render_dashboard),
    ] {
        match render(&read(source)?, target) {
            Ok(text) => files.push(Rendered {
                path: out.to_string(),
                text: if out.ends_with(".yaml") {
                    format!("{}{text}", banner(source, target))
                } else {
                    text
                },
            }),
            Err(e) => errors.extend(e),
        }
    }
    errors.sort();
    errors.dedup();
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// Envoy's cluster stats that the plain-Envoy rules read, with their labels (after
/// Envoy's default tag extraction).
pub fn envoy_cluster_stats() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    BTreeMap::from([
        (
            "envoy_cluster_upstream_rq_xx",
            BTreeSet::from(["envoy_cluster_name", "envoy_response_code_class"]),
        ),
        (
            "envoy_cluster_upstream_rq_time_bucket",
            BTreeSet::from(["envoy_cluster_name", "le"]),
        ),
    ])
}

/// Checks the Envoy selectors of a PromQL expression: known stats and labels, and
/// always scoped to the versions' clusters (`envoy_cluster_name`), so that other
/// clusters of the same Envoy never mix in.
pub fn check_envoy_selectors(expr: &str) -> Vec<String> {
    let known = envoy_cluster_stats();
    let mut errors = Vec::new();
    // Label names start with envoy_ too: only the stats' names are selectors here.
    for s in selectors(expr, &["envoy_cluster_"])
        .into_iter()
        .filter(|s| s.metric != "envoy_cluster_name")
    {
        let Some(labels) = known.get(s.metric.as_str()) else {
            errors.push(format!(
                "{}: not an Envoy cluster stat the rules know",
                s.metric
            ));
            continue;
        };
        for (label, _, _) in &s.matchers {
            if !labels.contains(label.as_str()) {
                errors.push(format!("{}: has no label {label}", s.metric));
            }
        }
        if !s
            .matchers
            .iter()
            .any(|(l, op, _)| l == "envoy_cluster_name" && (op == "=" || op == "=~"))
        {
            errors.push(format!(
                "{}: not scoped to the versions' clusters",
                s.metric
            ));
        }
    }
    errors
}

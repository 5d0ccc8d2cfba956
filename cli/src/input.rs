//! CONFIG: the plugin config as the filter receives it. JSON goes to the filter's
//! parser byte for byte; YAML (as written in Istio's `pluginConfig`) is turned into
//! the JSON that Istio hands the filter. A whole `WasmPlugin` (or
//! `TrafficExtension`) manifest works too: its plugin config is taken out.

use canary_router::config::ConfigError;
use serde_json::Value;
use std::io::Read;

/// Where a config came from, for messages: the file name, or `<stdin>`.
pub fn display_name(path: &str) -> String {
    if path == "-" {
        "<stdin>".to_string()
    } else {
        path.to_string()
    }
}

/// Reads CONFIG: a file, or standard input for `-`. Failing to read is a usage
/// problem (exit 2), not an invalid config.
pub fn read(path: &str) -> Result<Vec<u8>, String> {
    if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(bytes);
    }
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// How a config is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// JSON if the name ends in `.json`, YAML if it ends in `.yaml` or `.yml`; else
/// (standard input, other names) JSON when the text starts with `{`, YAML otherwise.
/// A `.json` file or a text starting with `{` is never read as YAML: YAML would
/// forgive JSON mistakes (trailing commas, comments) that the filter rejects.
pub fn format_of(path: &str, bytes: &[u8]) -> Format {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".json") {
        Format::Json
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        Format::Yaml
    } else if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        Format::Json
    } else {
        Format::Yaml
    }
}

/// The bytes the filter would get as its configuration. Errors are config errors
/// (exit 1), shaped like the filter's.
pub fn plugin_json(bytes: &[u8], format: Format) -> Result<Vec<u8>, Vec<ConfigError>> {
    match format {
        Format::Json => {
            // A manifest in JSON (`kubectl get wasmplugin -o json`) is unwrapped; any
            // other JSON reaches the filter's parser untouched, errors and all.
            match serde_json::from_slice::<Value>(bytes) {
                Ok(value) if plugin_resource(&value).is_some() => {
                    from_resource(&value).and_then(|v| to_json(&v))
                }
                _ => Ok(bytes.to_vec()),
            }
        }
        Format::Yaml => {
            let documents = yaml_documents(bytes)?;
            let resources: Vec<&Value> = documents
                .iter()
                .filter(|d| plugin_resource(d).is_some())
                .collect();
            let config = match (resources.as_slice(), documents.as_slice()) {
                ([one], _) => from_resource(one)?,
                ([], [one]) => (*one).clone(),
                ([], []) => return Err(error("", "the config is empty")),
                ([], many) => {
                    return Err(error(
                        "",
                        format!(
                            "{} YAML documents and no WasmPlugin or TrafficExtension among them: give one config",
                            many.len()
                        ),
                    ))
                }
                (many, _) => {
                    let names: Vec<String> = many.iter().map(|r| describe(r)).collect();
                    return Err(error(
                        "",
                        format!(
                            "{} plugin resources ({}): give a file with one",
                            many.len(),
                            names.join(", ")
                        ),
                    ));
                }
            };
            to_json(&config)
        }
    }
}

/// Drops serde_json's ` at line L column C` from a message.
pub fn without_position(mut error: ConfigError) -> ConfigError {
    if let Some(at) = error.message.rfind(" at line ") {
        let tail = &error.message[at + " at line ".len()..];
        let is_position = tail.split_once(" column ").is_some_and(|(line, column)| {
            [line, column]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
        if is_position {
            error.message.truncate(at);
        }
    }
    error
}

fn error(field: &str, message: impl Into<String>) -> Vec<ConfigError> {
    vec![ConfigError {
        field: field.to_string(),
        message: message.into(),
    }]
}

/// The YAML documents, read as Kubernetes reads a manifest (YAML 1.1: see yaml.rs).
fn yaml_documents(bytes: &[u8]) -> Result<Vec<Value>, Vec<ConfigError>> {
    let invalid = |e: String| error("", format!("not valid YAML for a config: {e}"));
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?;
    let mut documents = crate::yaml::documents(text).map_err(invalid)?;
    // `---` at the end, or an empty file, is an empty document: skip it.
    documents.retain(|d| !d.is_null());
    Ok(documents)
}

/// `WasmPlugin` -> `spec.pluginConfig`, `TrafficExtension` -> `spec.wasm.pluginConfig`.
fn plugin_resource(value: &Value) -> Option<(&'static str, &'static [&'static str])> {
    let api = value.get("apiVersion")?.as_str()?;
    if !api.starts_with("extensions.istio.io/") {
        return None;
    }
    match value.get("kind")?.as_str()? {
        "WasmPlugin" => Some(("WasmPlugin", &["spec", "pluginConfig"])),
        "TrafficExtension" => Some(("TrafficExtension", &["spec", "wasm", "pluginConfig"])),
        _ => None,
    }
}

fn describe(resource: &Value) -> String {
    let kind = plugin_resource(resource).map_or("resource", |(k, _)| k);
    match resource.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) => format!("{kind} {name}"),
        None => kind.to_string(),
    }
}

fn from_resource(resource: &Value) -> Result<Value, Vec<ConfigError>> {
    let Some((kind, path)) = plugin_resource(resource) else {
        return Err(error("", "not a plugin resource"));
    };
    let mut value = resource;
    for key in path {
        value = match value.get(key) {
            Some(v) => v,
            None => {
                return Err(error(
                    &path.join("."),
                    format!("missing: the {kind} carries no config for the filter"),
                ))
            }
        };
    }
    Ok(value.clone())
}

/// What Istio does with `pluginConfig` (a `google.protobuf.Struct`): writes it as JSON.
fn to_json(value: &Value) -> Result<Vec<u8>, Vec<ConfigError>> {
    serde_json::to_vec(value).map_err(|e| error("", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(text: &str, format: Format) -> String {
        String::from_utf8(plugin_json(text.as_bytes(), format).unwrap()).unwrap()
    }

    fn error_of(text: &str, format: Format) -> String {
        plugin_json(text.as_bytes(), format).unwrap_err()[0].to_string()
    }

    #[test]
    fn formats_by_name_then_by_content() {
        assert_eq!(format_of("c.json", b"versions: []"), Format::Json);
        assert_eq!(format_of("C.YML", b"{}"), Format::Yaml);
        assert_eq!(format_of("c.yaml", b"{}"), Format::Yaml);
        assert_eq!(format_of("-", b"  \n{\"versions\":[]}"), Format::Json);
        assert_eq!(format_of("-", b"versions: []"), Format::Yaml);
        assert_eq!(format_of("config", b""), Format::Yaml);
    }

    #[test]
    fn json_reaches_the_filter_untouched() {
        let text = "{\"versions\": [ {\"name\":\"s\"} ],}";
        assert_eq!(json_of(text, Format::Json), text);
    }

    #[test]
    fn yaml_becomes_the_json_istio_sends() {
        let yaml =
            "versions:\n- name: stable\n- name: canary\n  weight: 10\nhash: {header: x-user-id}\n";
        assert_eq!(
            json_of(yaml, Format::Yaml),
            r#"{"hash":{"header":"x-user-id"},"versions":[{"name":"stable"},{"name":"canary","weight":10}]}"#
        );
    }

    #[test]
    fn a_manifest_gives_its_plugin_config() {
        let manifest = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\n---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: canary-router}\nspec:\n  url: oci://example/canary-router:1\n  pluginConfig:\n    versions: [{name: stable}]\n---\n";
        assert_eq!(
            json_of(manifest, Format::Yaml),
            r#"{"versions":[{"name":"stable"}]}"#
        );
        let traffic = "apiVersion: extensions.istio.io/v1alpha1\nkind: TrafficExtension\nspec:\n  wasm:\n    pluginConfig: {versions: [{name: s}]}\n";
        assert_eq!(
            json_of(traffic, Format::Yaml),
            r#"{"versions":[{"name":"s"}]}"#
        );
        let as_json = r#"{"apiVersion":"extensions.istio.io/v1alpha1","kind":"WasmPlugin","spec":{"pluginConfig":{"versions":[{"name":"s"}]}}}"#;
        assert_eq!(
            json_of(as_json, Format::Json),
            r#"{"versions":[{"name":"s"}]}"#
        );
    }

    #[test]
    fn positions_are_dropped_only_when_they_are_positions() {
        let e = |m: &str| {
            without_position(ConfigError {
                field: "f".into(),
                message: m.into(),
            })
            .message
        };
        assert_eq!(
            e("missing field `x` at line 1 column 29"),
            "missing field `x`"
        );
        assert_eq!(
            e("`at line 5` at line x column 2"),
            "`at line 5` at line x column 2"
        );
        assert_eq!(e("120 is above 100"), "120 is above 100");
    }

    #[test]
    fn unusable_yaml_is_an_invalid_config() {
        assert_eq!(error_of("", Format::Yaml), "the config is empty");
        assert!(error_of("versions: [", Format::Yaml).starts_with("not valid YAML"));
        assert!(error_of("a: 1\n---\nb: 2\n", Format::Yaml).starts_with("2 YAML documents"));
        let two = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: a}\n---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: b}\n";
        assert_eq!(
            error_of(two, Format::Yaml),
            "2 plugin resources (WasmPlugin a, WasmPlugin b): give a file with one"
        );
        assert_eq!(
            error_of(
                "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec: {url: x}\n",
                Format::Yaml
            ),
            "spec.pluginConfig: missing: the WasmPlugin carries no config for the filter"
        );
    }

    /// What Istio hands the filter for a `pluginConfig` with a plain `interpolate: yes`:
    /// kubectl reads the manifest with sigs.k8s.io/yaml (YAML 1.1, so `yes` is true),
    /// the `pluginConfig` Struct holds a bool, and Istio writes the Struct as the JSON
    /// string in the filter's `configuration`.
    const ISTIO_JSON: &str = r#"{"versions":[{"name":"stable"},{"name":"canary","schedule":{"interpolate":true,"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"2h","weight":100}]}}]}"#;

    const PLAIN: &str = "versions:\n- name: stable\n- name: canary\n  schedule:\n    start: 2026-12-01T09:00:00Z\n    steps: [{after: 0s, weight: 1}, {after: 2h, weight: 100}]\n    interpolate: yes\n";

    fn interpolates(json: &str) -> bool {
        let config = canary_router::config::Config::from_json(json.as_bytes()).unwrap();
        match &config.versions[1].weight {
            canary_router::config::Weight::Scheduled(s) => s.interpolate,
            other => panic!("not scheduled: {other:?}"),
        }
    }

    #[test]
    fn interpolate_yes_reaches_the_filter_as_through_istio() {
        let manifest = format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: canary-router}}\nspec:\n  url: oci://example/canary-router:1\n  pluginConfig:\n{}",
            PLAIN.lines().map(|l| format!("    {l}\n")).collect::<String>()
        );
        for text in [PLAIN.to_string(), manifest] {
            let json = json_of(&text, Format::Yaml);
            assert_eq!(json, ISTIO_JSON, "{text}");
            assert!(interpolates(&json));
        }
        assert!(interpolates(ISTIO_JSON));
        // Quoted, it is the string "yes", as in the cluster: the filter refuses it.
        let quoted = json_of(&PLAIN.replace("yes", "\"yes\""), Format::Yaml);
        assert_eq!(quoted, ISTIO_JSON.replace("true", "\"yes\""));
        let errors = canary_router::config::Config::from_json(quoted.as_bytes()).unwrap_err();
        assert_eq!(
            errors[0].field, "versions[1].schedule.interpolate",
            "{errors:?}"
        );
    }
}

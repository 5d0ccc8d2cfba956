//! Rollouts in the commands' output: a rollout's match in words and as JSON, the
//! rollout `simulate` works on, and the rollouts that `validate` warns can never
//! match.

use crate::args::UsageError;
use crate::Failure;
use canary_router::config::{ConfigError, PluginConfig, Rollout};
use canary_router::router::{shadowed, HeaderTest, Match};
use serde_json::{json, Value};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The hosts as listed: exact names, then wildcards.
fn hosts_of(m: &Match) -> Option<Vec<String>> {
    m.hosts.as_ref().map(|hosts| {
        hosts
            .exact()
            .iter()
            .map(|h| text(h))
            .chain(hosts.suffixes().iter().map(|s| format!("*{}", text(s))))
            .collect()
    })
}

fn test_json(test: &HeaderTest) -> (&'static str, Value) {
    match test {
        HeaderTest::Exact(v) => ("exact", json!(text(v))),
        HeaderTest::Prefix(v) => ("prefix", json!(text(v))),
        HeaderTest::Suffix(v) => ("suffix", json!(text(v))),
        HeaderTest::Present(p) => ("present", json!(p)),
    }
}

/// `hosts a.example, *.b.example; path /api/v2/ or /v2/; header x-client = "ios"`,
/// or `every request`.
pub fn match_text(m: &Match) -> String {
    let mut parts = Vec::new();
    if let Some(hosts) = hosts_of(m) {
        parts.push(format!("hosts {}", hosts.join(", ")));
    }
    if !m.path_prefixes.is_empty() {
        let prefixes: Vec<String> = m.path_prefixes.iter().map(|p| text(p)).collect();
        parts.push(format!("path {}", prefixes.join(" or ")));
    }
    for condition in &m.headers {
        let test = match &condition.test {
            HeaderTest::Exact(v) => format!("= {:?}", text(v)),
            HeaderTest::Prefix(v) => format!("starts with {:?}", text(v)),
            HeaderTest::Suffix(v) => format!("ends with {:?}", text(v)),
            HeaderTest::Present(true) => "present".to_string(),
            HeaderTest::Present(false) => "absent".to_string(),
        };
        parts.push(format!("header {} {test}", condition.name));
    }
    if parts.is_empty() {
        "every request".to_string()
    } else {
        parts.join("; ")
    }
}

/// The match as the config would write it.
pub fn match_json(m: &Match) -> Value {
    let headers: Vec<Value> = m
        .headers
        .iter()
        .map(|c| {
            let (key, value) = test_json(&c.test);
            let mut out = serde_json::Map::new();
            out.insert("name".into(), json!(c.name));
            out.insert(key.into(), value);
            Value::Object(out)
        })
        .collect();
    json!({
        "hosts": hosts_of(m),
        "path_prefixes": (!m.path_prefixes.is_empty())
            .then(|| m.path_prefixes.iter().map(|p| text(p)).collect::<Vec<_>>()),
        "headers": (!headers.is_empty()).then_some(headers),
    })
}

/// The names of the rollouts, for messages: `checkout, api-v2, ios`.
fn names(plugin: &PluginConfig) -> String {
    plugin
        .rollouts
        .iter()
        .filter_map(|r| r.name.as_deref())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rollout a command works on: the one named by `--rollout`, or the only one.
pub fn chosen<'a>(
    plugin: &'a PluginConfig,
    name: Option<&str>,
    command: &'static str,
) -> Result<&'a Rollout, Failure> {
    let usage = |message: String| {
        Failure::Usage(UsageError {
            message,
            command: Some(command),
        })
    };
    match name {
        Some(name) if !plugin.has_rollouts() => Err(usage(format!(
            "--rollout {name}: the config has no rollouts (it configures one service): leave --rollout out"
        ))),
        Some(name) => plugin
            .rollout_index(name)
            .and_then(|i| plugin.rollouts.get(i))
            .ok_or_else(|| {
                usage(format!(
                    "--rollout {name}: the config has no rollout of that name; its rollouts: {}",
                    names(plugin)
                ))
            }),
        None => match plugin.rollouts.as_slice() {
            [only] => Ok(only),
            many => Err(usage(format!(
                "the config has {} rollouts: choose one with --rollout NAME ({})",
                many.len(),
                names(plugin)
            ))),
        },
    }
}

/// `rollouts[2]: ios can never match: ...`, one per rollout that an earlier one
/// surely shadows.
pub fn shadow_warnings(plugin: &PluginConfig) -> Vec<ConfigError> {
    let name = |i: usize| {
        plugin
            .rollouts
            .get(i)
            .and_then(|r| r.name.as_deref())
            .unwrap_or("?")
    };
    shadowed(plugin.router.matches())
        .into_iter()
        .map(|(later, earlier)| {
            ConfigError {
                field: format!("rollouts[{later}]"),
                message: format!(
                    "{} can never match: rollouts[{earlier}] ({}) comes first and matches every request it would ({})",
                    name(later),
                    name(earlier),
                    match_text(&plugin.router.matches()[earlier])
                ),
            }
        })
        .collect()
}

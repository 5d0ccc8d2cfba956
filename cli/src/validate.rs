//! `validate`: the filter's parser, and a one-line summary of what it loaded;
//! warnings (rollouts that can never match, settings that have no effect) on
//! standard error, and under `warnings` with `--json`.

use crate::args::Common;
use crate::rollouts::{match_json, match_text, shadow_warnings};
use crate::time::format_rfc3339;
use crate::{eprint, load, print, Failure, Loaded};
use canary_router::config::{format_basis_points, Anonymous, Config, ConfigError, Weight};
use canary_router::schedule::format_duration;
use serde_json::{json, Value};

pub fn run(common: &Common) -> Result<(), Failure> {
    let loaded = load(common, "validate")?;
    let mut warnings = shadow_warnings(&loaded.plugin);
    for (i, rollout) in loaded.plugin.rollouts.iter().enumerate() {
        for mut warning in rollout.config.warnings() {
            if rollout.name.is_some() {
                warning.field = format!("rollouts[{i}].{}", warning.field);
            }
            warnings.push(warning);
        }
    }
    if common.json {
        let mut out = summary_json(&loaded);
        out["warnings"] = warnings
            .iter()
            .map(|w| json!({ "field": w.field, "message": w.message }))
            .collect();
        print(&format!("{out}\n"));
    } else {
        print(&format!("{}\n", summary(&loaded)));
    }
    // Valid, but something in it has no effect: said on standard error, exit 0 (the
    // filter takes the config as it is).
    for warning in &warnings {
        eprint(&format!("warning: {warning}\n"));
    }
    Ok(())
}

/// `error: FIELD: MESSAGE` per problem, then the count, as the filter's log says it.
pub fn errors_text(source: &str, errors: &[ConfigError]) -> String {
    let mut out = String::new();
    for e in errors {
        out.push_str(&format!("error: {e}\n"));
    }
    let n = errors.len();
    out.push_str(&format!(
        "{source}: config rejected ({n} problem{})\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}

pub fn errors_json(errors: &[ConfigError]) -> String {
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "field": e.field, "message": e.message }))
        .collect();
    format!("{}\n", json!({ "valid": false, "errors": errors }))
}

/// A weight in basis points as a percentage: `10%`, `0.25%`.
pub fn percent(bp: u32) -> String {
    format!("{}%", format_basis_points(bp.into()))
}

/// `stable 90%, canary 10%`, and each ramp's course.
fn versions_text(config: &Config, weights: &[u32]) -> String {
    config
        .versions
        .iter()
        .zip(weights)
        .map(|(v, &w)| match &v.weight {
            Weight::Scheduled(s) => {
                let first = s.steps.first().map_or(0, |st| st.weight_basis_points);
                format!(
                    "{} {} (ramp{}: {} at {} to {} at {})",
                    v.name,
                    percent(w),
                    if s.interpolate { ", interpolated" } else { "" },
                    percent(first),
                    format_rfc3339(
                        s.start_ms
                            .saturating_add(s.steps.first().map_or(0, |st| st.after_ms) as i64)
                    ),
                    percent(s.max_weight()),
                    format_rfc3339(s.end_ms())
                )
            }
            _ => format!("{} {}", v.name, percent(w)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn guard_text(config: &Config) -> String {
    let Some(g) = &config.guard else {
        return "no guard".to_string();
    };
    let name = config
        .versions
        .get(g.version)
        .map_or("?", |v| v.name.as_str());
    let margin = g
        .baseline_margin
        .map(|m| {
            format!(
                " and its rate exceeds the baseline's by {} points",
                (m * 10_000.0).round() / 100.0
            )
        })
        .unwrap_or_default();
    let hold = g
        .hold_ms
        .map_or("until the config changes".to_string(), |ms| {
            format!("for {}", format_duration(ms))
        });
    format!(
        "guard on {name}: trips when more than {}% of its responses fail{margin} (at least {} in a {} window), then sends {name}'s traffic to {} {hold}; a gRPC call fails on {}",
        (g.max_error_rate * 10_000.0).round() / 100.0,
        g.min_requests,
        format_duration(g.window_ms),
        config.versions.first().map_or("?", |v| v.name.as_str()),
        g.grpc_status.names().join(", "),
    )
}

/// `valid: 2 versions: stable 90%, canary 10%; guard on canary: ...`. With a ramp,
/// or with `--at`, the line says at which time the weights hold. With rollouts:
/// `valid: 3 rollouts: checkout (hosts a.example): 2 versions: ... | api-v2 (...): ...`.
pub fn summary(loaded: &Loaded) -> String {
    let plugin = &loaded.plugin;
    let scheduled = plugin.rollouts.iter().any(|r| r.config.is_scheduled());
    let when = if scheduled || loaded.at_given {
        format!(", at {}", format_rfc3339(loaded.now_ms))
    } else {
        String::new()
    };
    if !plugin.has_rollouts() {
        let config = &plugin.rollouts[0].config;
        return format!("valid: {}", service_summary(config, loaded.now_ms, &when));
    }
    let rollouts: Vec<String> = plugin
        .rollouts
        .iter()
        .zip(plugin.router.matches())
        .map(|(rollout, matched)| {
            format!(
                "{} ({}): {}",
                rollout.name.as_deref().unwrap_or("?"),
                match_text(matched),
                service_summary(&rollout.config, loaded.now_ms, "")
            )
        })
        .collect();
    format!(
        "valid: {} rollout{}{when}: {}",
        rollouts.len(),
        if rollouts.len() == 1 { "" } else { "s" },
        rollouts.join(" | ")
    )
}

/// `2 versions: stable 90%, canary 10%; no guard`.
fn service_summary(config: &Config, now_ms: i64, when: &str) -> String {
    let weights = config.weights_at(now_ms);
    // Pick mode: the route's weights decide; the config has none.
    let versions = match &config.hash.pick {
        Some(pick) => format!(
            "{} (pick mode: the route's weights decide; pick value in {}, for weights adding up to {})",
            config
                .versions
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            pick.header,
            pick.total
        ),
        None => versions_text(config, &weights),
    };
    let visitors = match config.anonymous {
        Anonymous::Cookie => format!(
            "new visitors get an ID in cookie {}; ",
            crate::visitors::cookie_text(config)
        ),
        Anonymous::Random | Anonymous::Baseline => String::new(),
    };
    format!(
        "{} version{}{when}: {}; {visitors}{}",
        config.versions.len(),
        if config.versions.len() == 1 { "" } else { "s" },
        versions,
        guard_text(config)
    )
}

fn summary_json(loaded: &Loaded) -> Value {
    let plugin = &loaded.plugin;
    let at = format_rfc3339(loaded.now_ms);
    if !plugin.has_rollouts() {
        let mut out = service_json(&plugin.rollouts[0].config, loaded.now_ms);
        out["valid"] = json!(true);
        out["at"] = json!(at);
        return out;
    }
    let rollouts: Vec<Value> = plugin
        .rollouts
        .iter()
        .zip(plugin.router.matches())
        .map(|(rollout, matched)| {
            let mut out = service_json(&rollout.config, loaded.now_ms);
            out["name"] = json!(rollout.name);
            out["match"] = match_json(matched);
            out
        })
        .collect();
    json!({
        "valid": true,
        "at": at,
        "metrics_prefix": plugin.metrics_prefix,
        "rollouts": rollouts,
    })
}

/// One service's versions, route header, buckets, pick mode and guard.
fn service_json(config: &Config, now_ms: i64) -> Value {
    let weights = config.weights_at(now_ms);
    let versions: Vec<Value> = config
        .versions
        .iter()
        .zip(&weights)
        .map(|(v, &w)| {
            json!({
                "name": v.name,
                // Pick mode: the route's weights decide, the config has none.
                "weight": config.hash.pick.is_none().then(|| f64::from(w) / 100.0),
                "scheduled": matches!(v.weight, Weight::Scheduled(_)),
            })
        })
        .collect();
    let guard = config.guard.as_ref().map(|g| {
        json!({
            "version": config.versions.get(g.version).map(|v| v.name.clone()),
            "max_error_rate": g.max_error_rate,
            "baseline_margin": g.baseline_margin,
            "min_requests": g.min_requests,
            "window": format_duration(g.window_ms),
            "hold": g.hold_ms.map_or("forever".to_string(), format_duration),
            "grpc_status": g.grpc_status.names(),
        })
    });
    json!({
        "versions": versions,
        "route_header": config.route_header,
        "buckets": config.buckets,
        "pick": config.hash.pick.as_ref().map(|p| json!({"header": p.header, "total": p.total})),
        "guard": guard,
        "anonymous": match config.anonymous {
            Anonymous::Random => "random",
            Anonymous::Baseline => "baseline",
            Anonymous::Cookie => "cookie",
        },
        "visitor_cookie": (config.anonymous == Anonymous::Cookie).then(|| json!({
            "name": config.hash.cookie,
            "set_cookie_attributes": config.hash.set_cookie_attributes,
        })),
    })
}

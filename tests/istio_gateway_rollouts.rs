//! istio/gateway-rollouts/: one WasmPlugin with three rollouts for three services
//! behind the ingress gateway. Every manifest validates against Istio's CRD
//! schemas (and the CEL rules of the fields it sets); the plugin config is what
//! the filter accepts, every rollout is scoped by match.hosts and none shadows
//! another; every rollout's hosts are served by the Gateway and routed by a
//! VirtualService on its route header, to subsets a DestinationRule defines, and
//! a canary route asks for what its rollout matches (so a client-sent route header
//! on a request the filter passed untouched cannot reach a canary). Each check is
//! shown to reject a broken copy.

mod istio_support;

use canary_router::config::PluginConfig;
use canary_router::router::{shadowed, HeaderTest};
use istio_support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const DIR: &str = "istio/gateway-rollouts";

fn docs() -> Vec<Doc> {
    yaml_files(&repo_root(), DIR)
        .iter()
        .flat_map(|f| load_docs(&repo_root(), f).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

fn plugin_config(docs: &[Doc]) -> Result<PluginConfig, Vec<String>> {
    let plugins = of_kind(docs, "WasmPlugin");
    let [plugin] = plugins.as_slice() else {
        return Err(vec![format!("{} WasmPlugins, expected one", plugins.len())]);
    };
    let json = istio_plugin_config_json(&plugin.value["spec"]["pluginConfig"]);
    PluginConfig::from_json(json.as_bytes()).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {e}", plugin.id()))
            .collect()
    })
}

/// Everything that does not fit together; see the file's documentation.
fn check(docs: &[Doc]) -> Vec<String> {
    let schemas = Schemas::load();
    let mut errors: Vec<String> = docs.iter().flat_map(|d| schemas.validate(d)).collect();
    let plugin = match plugin_config(docs) {
        Ok(plugin) => plugin,
        Err(e) => {
            errors.extend(e);
            return errors;
        }
    };
    if !plugin.has_rollouts() {
        errors.push("the plugin config has no rollouts".into());
    }
    for (later, earlier) in shadowed(plugin.router.matches()) {
        errors.push(format!(
            "rollouts[{later}] is shadowed by rollouts[{earlier}]"
        ));
    }
    let gateways = of_kind(docs, "Gateway");
    let served: BTreeSet<String> = gateways
        .iter()
        .flat_map(|g| g.value["spec"]["servers"].as_array().into_iter().flatten())
        .flat_map(|s| s["hosts"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let vss = of_kind(docs, "VirtualService");
    let drs = of_kind(docs, "DestinationRule");
    for (rollout, matched) in plugin.rollouts.iter().zip(plugin.router.matches()) {
        let name = rollout.name.as_deref().unwrap_or("?");
        let config = &rollout.config;
        let Some(hosts) = &matched.hosts else {
            errors.push(format!(
                "rollout {name}: no match.hosts: it would decide every host the gateway serves"
            ));
            continue;
        };
        let versions: Vec<&str> = config.versions.iter().map(|v| v.name.as_str()).collect();
        for host in hosts.exact() {
            let host = String::from_utf8_lossy(host).into_owned();
            if !served.contains(&host) {
                errors.push(format!(
                    "rollout {name}: host {host} is not served by a Gateway"
                ));
            }
            let routing: Vec<&&Doc> = vss
                .iter()
                .filter(|vs| {
                    vs.value["spec"]["hosts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|h| h == host.as_str())
                })
                .collect();
            let [vs] = routing.as_slice() else {
                errors.push(format!(
                    "rollout {name}: {} VirtualServices for {host}, expected one",
                    routing.len()
                ));
                continue;
            };
            let gateway_names: Vec<&str> = gateways.iter().map(|g| g.name()).collect();
            let bound = vs.value["spec"]["gateways"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|g| gateway_names.contains(&g.rsplit('/').next().unwrap_or(g)));
            if !bound {
                errors.push(format!("{}: not bound to the Gateway", vs.id()));
            }
            let routes = vs.value["spec"]["http"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut reached = BTreeSet::new();
            for (i, route) in routes.iter().enumerate() {
                let at = format!("{}: spec.http[{i}]", vs.id());
                let destination = &route["route"][0]["destination"];
                let subset = destination["subset"].as_str().unwrap_or_default();
                let dest_host = fqdn(
                    destination["host"].as_str().unwrap_or_default(),
                    vs.namespace(),
                );
                let defined = drs.iter().any(|dr| {
                    fqdn(
                        dr.value["spec"]["host"].as_str().unwrap_or_default(),
                        dr.namespace(),
                    ) == dest_host
                        && dr.value["spec"]["subsets"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|s| s["name"] == subset && s["labels"]["version"] == subset)
                });
                if !defined {
                    errors.push(format!(
                        "{at}: no DestinationRule defines subset {subset} (labels version: {subset}) of {dest_host}"
                    ));
                }
                reached.insert(subset.to_string());
                let matches: Vec<&Value> =
                    route["match"].as_array().into_iter().flatten().collect();
                if matches.is_empty() {
                    if i + 1 != routes.len() || subset != versions[0] {
                        errors.push(format!(
                            "{at}: the route without match must be the last and go to the baseline {}",
                            versions[0]
                        ));
                    }
                    continue;
                }
                for m in matches {
                    if m["headers"][&config.route_header]["exact"] != subset {
                        errors.push(format!(
                            "{at}: must match {}: exact: {subset}",
                            config.route_header
                        ));
                    }
                    // Only what the rollout decides may reach a version but the baseline.
                    let prefix = m["uri"]["prefix"].as_str().unwrap_or_default();
                    if !matched.path_prefixes.is_empty()
                        && !matched
                            .path_prefixes
                            .iter()
                            .any(|p| !prefix.is_empty() && prefix.as_bytes().starts_with(p))
                    {
                        errors.push(format!(
                            "{at}: must match a uri prefix of the rollout's match.path_prefixes, or a client-sent {} on other paths reaches {subset}",
                            config.route_header
                        ));
                    }
                    for condition in &matched.headers {
                        let wanted = match &condition.test {
                            HeaderTest::Exact(v) => json!({ "exact": String::from_utf8_lossy(v) }),
                            HeaderTest::Prefix(v) => {
                                json!({ "prefix": String::from_utf8_lossy(v) })
                            }
                            HeaderTest::Suffix(v) => {
                                json!({ "suffix": String::from_utf8_lossy(v) })
                            }
                            HeaderTest::Present(p) => json!({ "present": p }),
                        };
                        if m["headers"][&condition.name] != wanted {
                            errors.push(format!(
                                "{at}: must match header {} as the rollout does ({wanted}), or a client-sent {} reaches {subset} without it",
                                condition.name, config.route_header
                            ));
                        }
                    }
                }
            }
            for version in &versions {
                if !reached.contains(*version) {
                    errors.push(format!("{}: no route to {version}", vs.id()));
                }
            }
        }
    }
    errors
}

#[test]
fn the_gateway_example_is_valid_and_fits_together() {
    let docs = docs();
    let kinds: Vec<&str> = docs.iter().map(Doc::kind).collect();
    for kind in ["WasmPlugin", "Gateway", "VirtualService", "DestinationRule"] {
        assert!(kinds.contains(&kind), "no {kind}: {kinds:?}");
    }
    let errors = check(&docs);
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    let plugin = plugin_config(&docs).expect("valid");
    let names: Vec<&str> = plugin
        .rollouts
        .iter()
        .filter_map(|r| r.name.as_deref())
        .collect();
    assert_eq!(names, ["storefront", "search-v2", "checkout"]);
    // Three services, three salts: nobody's canary in one says anything of another.
    let salts: BTreeSet<&[u8]> = plugin
        .rollouts
        .iter()
        .map(|r| r.config.hash.key_prefix.as_slice())
        .collect();
    assert_eq!(salts.len(), 3);
    let matches = plugin.router.matches();
    assert!(!matches[1].path_prefixes.is_empty() && !matches[2].headers.is_empty());
    assert_eq!(of_kind(&docs, "VirtualService").len(), 3);
    // The gateway's metrics carry the rollout label: extraStatTags must list it.
    assert!(metric_tag_keys().contains("rollout"));
}

fn plugin(docs: &mut [Doc]) -> &mut Value {
    &mut docs
        .iter_mut()
        .find(|d| d.kind() == "WasmPlugin")
        .expect("plugin")
        .value["spec"]["pluginConfig"]
}

fn vs<'a>(docs: &'a mut [Doc], name: &str) -> &'a mut Value {
    &mut docs
        .iter_mut()
        .find(|d| d.kind() == "VirtualService" && d.name() == name)
        .expect("VirtualService")
        .value
}

#[test]
fn the_checks_reject_broken_copies() {
    let broken = |change: &dyn Fn(&mut Vec<Doc>), needle: &str| {
        let mut docs = docs();
        change(&mut docs);
        let errors = check(&docs);
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "expected {needle:?} among {errors:#?}"
        );
    };
    broken(
        &|d| {
            plugin(d)["rollouts"][0]
                .as_object_mut()
                .expect("rollout")
                .remove("match");
        },
        "rollout storefront: no match.hosts",
    );
    broken(
        &|d| plugin(d)["rollouts"][2]["match"]["hosts"] = json!(["www.example.com"]),
        "rollouts[2] is shadowed by rollouts[0]",
    );
    broken(
        &|d| plugin(d)["rollouts"][1]["match"]["hosts"] = json!(["elsewhere.example.com"]),
        "host elsewhere.example.com is not served by a Gateway",
    );
    broken(
        &|d| plugin(d)["rollouts"][1]["versions"][1]["weight"] = json!(250),
        "rollouts[1].versions[1].weight",
    );
    broken(
        &|d| {
            vs(d, "search-ingress")["spec"]["http"][0]["match"][0]
                .as_object_mut()
                .expect("match")
                .remove("uri");
        },
        "must match a uri prefix of the rollout's match.path_prefixes",
    );
    broken(
        &|d| {
            vs(d, "checkout-ingress")["spec"]["http"][0]["match"][0]["headers"]
                .as_object_mut()
                .expect("headers")
                .remove("x-client");
        },
        "must match header x-client as the rollout does",
    );
    broken(
        &|d| {
            vs(d, "storefront-ingress")["spec"]["http"][0]["route"][0]["destination"]["subset"] =
                json!("beta")
        },
        "no DestinationRule defines subset beta",
    );
    broken(
        &|d| vs(d, "storefront-ingress")["spec"]["gateways"] = json!(["mesh"]),
        "not bound to the Gateway",
    );
    broken(
        &|d| vs(d, "storefront-ingress")["spec"]["http"][0]["timeout"] = json!("soon"),
        "storefront-ingress",
    );
}

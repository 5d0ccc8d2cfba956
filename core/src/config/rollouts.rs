//! `rollouts`: several services in one config, each a rollout with a `name`, a
//! `match` (matching.rs) and every per-service field of a single-service config,
//! as written. The top level (mod.rs) reads a rollout with its own code for the
//! per-service fields, checks each rollout's fields as it checks a
//! single-service config's, into a `Config` per rollout, and gathers them
//! in a `PluginConfig`.

use super::anonymous::Anonymous;
use super::guard::RawGuard;
use super::hash::RawHash;
use super::matching::RawMatch;
#[cfg(feature = "schema")]
use super::names::{
    DEFAULT_ROUTE_HEADER, HEADER_NAME_PATTERN, MAX_VERSION_NAME_LEN, VERSION_NAME_PATTERN,
};
use super::overrides::RawOverride;
use super::users::UserLists;
use super::versions::RawVersion;
#[cfg(feature = "schema")]
use super::versions::MAX_VERSIONS;
use serde::Deserialize;

/// At most this many rollouts in one config: each defines its own metrics, and a
/// bound keeps a config's load time and memory in check.
pub const MAX_ROLLOUTS: usize = 1000;

/// One service's rollout: which requests it decides (`match`) and how.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Rollout"))]
// As at the top level: the versions after the baseline have a weight or a
// schedule, except in pick mode (hash.pick_header set).
#[cfg_attr(feature = "schema", schemars(extend(
    "if" = { "required": ["hash"], "properties": { "hash": {
        "required": ["pick_header"], "properties": { "pick_header": { "type": "string" } } } } },
    "then" = { "properties": { "versions": { "items": { "not": { "anyOf": [
        { "required": ["weight"], "properties": { "weight": { "type": "number" } } },
        { "required": ["schedule"], "properties": { "schedule": { "type": "object" } } }
    ] } } } } },
    "else" = { "properties": { "versions": { "prefixItems": [true], "items": { "oneOf": [
        { "required": ["weight"], "properties": { "weight": { "type": "number" } } },
        { "required": ["schedule"], "properties": { "schedule": { "type": "object" } } }
    ] } } } },
    // anonymous: "cookie" issues the ID in hash.cookie.
    "allOf" = [{
        "if": { "required": ["anonymous"], "properties": { "anonymous": { "const": "cookie" } } },
        "then": { "required": ["hash"], "properties": { "hash": {
            "required": ["cookie"], "properties": { "cookie": { "type": "string" } } } } }
    }]
)))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    /// The rollout's name, unique in the config: the value of the `rollout` metric
    /// label.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSION_NAME_LEN), regex(pattern = VERSION_NAME_PATTERN)))]
    pub(super) name: String,
    /// Which requests this rollout decides: all that is given must hold. Absent or
    /// empty: every request. The first rollout whose match holds decides; a request
    /// that matches none passes untouched.
    #[serde(rename = "match")]
    pub(super) match_: Option<RawMatch>,
    /// As the top-level route_header: the request header set to the chosen version.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN), extend("default" = DEFAULT_ROUTE_HEADER)))]
    pub(super) route_header: Option<String>,
    /// As the top-level versions: the versions of this rollout's service.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSIONS), extend(
        "prefixItems" = [{ "$ref": "#/$defs/Version", "not": { "anyOf": [
            { "required": ["weight"], "properties": { "weight": { "type": "number" } } },
            { "required": ["schedule"], "properties": { "schedule": { "type": "object" } } }
        ] } }],
        "items" = { "$ref": "#/$defs/Version" }
    )))]
    pub(super) versions: Vec<RawVersion>,
    /// As the top-level override.
    #[serde(rename = "override")]
    pub(super) override_: Option<RawOverride>,
    /// As the top-level users.
    #[cfg_attr(feature = "schema", schemars(extend(
        "propertyNames" = { "minLength": 1, "maxLength": MAX_VERSION_NAME_LEN, "pattern": VERSION_NAME_PATTERN },
        "default" = {}
    )))]
    pub(super) users: Option<UserLists>,
    /// As the top-level hash; its own salt reshuffles this rollout's users only.
    pub(super) hash: Option<RawHash>,
    /// As the top-level anonymous.
    #[cfg_attr(feature = "schema", schemars(extend("default" = "random")))]
    pub(super) anonymous: Option<Anonymous>,
    /// As the top-level guard; it trips for this rollout only.
    pub(super) guard: Option<RawGuard>,
}

#[cfg(test)]
mod tests {
    use super::MAX_ROLLOUTS;
    use crate::config::{Anonymous, Config, PluginConfig};
    use crate::request::{serialize_headers, SerializedHeaders};
    use crate::router::Match;

    const THREE: &str = r#"{
      "metrics_prefix": "shop",
      "metrics": { "responses": true },
      "rollouts": [
        { "name": "checkout", "match": { "hosts": ["a.example"] },
          "versions": [ { "name": "stable" }, { "name": "canary", "weight": 10 } ],
          "hash": { "header": "x-user-id", "salt": "checkout" } },
        { "name": "api-v2", "match": { "hosts": ["b.example"], "path_prefixes": ["/api/v2/"] },
          "route_header": "x-api-version",
          "versions": [ { "name": "v1" }, { "name": "v2", "weight": 50 } ],
          "hash": { "header": "x-user-id", "salt": "api" },
          "guard": { "version": "v2", "max_error_rate": 0.1 } },
        { "name": "ios", "match": { "hosts": ["b.example"],
            "headers": [ { "name": "X-Client", "exact": "ios" } ] },
          "versions": [ { "name": "stable" }, { "name": "beta", "weight": 25 } ],
          "anonymous": "baseline" }
      ]
    }"#;

    fn errors_of(json: &str) -> Vec<String> {
        match PluginConfig::from_json(json.as_bytes()) {
            Ok(_) => panic!("config was accepted: {json}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_rejected(json: &str, expected: &str) {
        let errors = errors_of(json);
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "expected an error starting with {expected:?}, got {errors:?}"
        );
    }

    /// A rollouts config around one rollout's fields.
    fn with_rollout(fields: &str) -> String {
        format!(
            r#"{{"rollouts":[{{"name":"a","versions":[{{"name":"s"}}]}},{{"name":"b",{fields}}}]}}"#
        )
    }

    fn route(plugin: &PluginConfig, pairs: &[(&str, &str)]) -> Option<usize> {
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let map = serialize_headers(&pairs);
        plugin.router.route(&SerializedHeaders::new(&map))
    }

    #[test]
    fn each_rollout_is_a_service_config_with_the_global_metrics_settings() {
        let plugin = PluginConfig::from_json(THREE.as_bytes()).unwrap();
        assert!(plugin.has_rollouts());
        let names: Vec<_> = plugin.rollouts.iter().map(|r| r.name.as_deref()).collect();
        assert_eq!(names, [Some("checkout"), Some("api-v2"), Some("ios")]);
        for rollout in &plugin.rollouts {
            assert_eq!(rollout.config.metrics_prefix, "shop");
            assert!(rollout.config.metrics.responses);
            assert_eq!(rollout.config.fingerprint, plugin.fingerprint);
        }
        let [checkout, api, ios] = &plugin.rollouts[..] else {
            panic!("three rollouts")
        };
        assert_eq!(checkout.config.hash.key_prefix, b"checkout:");
        assert_eq!(api.config.hash.key_prefix, b"api:");
        assert_eq!(api.config.route_header, "x-api-version");
        assert_eq!(
            checkout.config.route_header,
            crate::config::DEFAULT_ROUTE_HEADER
        );
        assert_eq!(api.config.weights_at(0), [5000, 5000]);
        assert!(api.config.guard.is_some() && checkout.config.guard.is_none());
        assert_eq!(ios.config.anonymous, Anonymous::Baseline);
        assert_eq!(
            ios.config.hosts,
            plugin.router.matches()[2].hosts,
            "a rollout's config names the hosts of its match"
        );
        assert_eq!(plugin.router.matches()[2].headers[0].name, "x-client");
        assert_eq!(plugin.rollout_index("ios"), Some(2));
        assert_eq!(plugin.rollout_index("nope"), None);
        assert!(plugin.needs_tick());

        let at = |host: &str, path: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![(":authority", host), (":path", path)];
            pairs.extend_from_slice(extra);
            route(&plugin, &pairs)
        };
        assert_eq!(at("a.example", "/anything", &[]), Some(0));
        assert_eq!(
            at(
                "b.example:8443",
                "/api/v2/items?x=1",
                &[("x-client", "ios")]
            ),
            Some(1)
        );
        assert_eq!(at("b.example", "/home", &[("x-client", "ios")]), Some(2));
        assert_eq!(at("b.example", "/home", &[("x-client", "android")]), None);
        assert_eq!(at("c.example", "/api/v2/", &[("x-client", "ios")]), None);
    }

    #[test]
    fn a_single_service_config_is_one_unnamed_rollout_as_before() {
        let json =
            r#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}],"hosts":["myapp"]}"#;
        let plugin = PluginConfig::from_json(json.as_bytes()).unwrap();
        assert!(!plugin.has_rollouts());
        assert_eq!(plugin.rollouts.len(), 1);
        assert_eq!(plugin.rollouts[0].name, None);
        let config = Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(plugin.rollouts[0].config, config);
        assert_eq!(
            plugin.fingerprint,
            crate::bucket::hash_key(b"", json.as_bytes())
        );
        assert_eq!(route(&plugin, &[(":authority", "MYAPP:80")]), Some(0));
        assert_eq!(route(&plugin, &[(":authority", "other")]), None);
        assert_eq!(route(&plugin, &[]), None);
        assert_eq!(
            plugin.guard_key(0),
            format!("canary-router/guard/{:08x}", plugin.fingerprint)
        );
        assert!(!plugin.needs_tick());

        let everyone = PluginConfig::from_json(br#"{"versions":[{"name":"s"}]}"#).unwrap();
        assert_eq!(route(&everyone, &[]), Some(0));

        // A config of several services is not one Config.
        assert_eq!(
            Config::from_json(THREE.as_bytes())
                .unwrap_err()
                .iter()
                .map(|e| e.field.as_str())
                .collect::<Vec<_>>(),
            ["rollouts"]
        );
    }

    #[test]
    fn each_rollout_has_its_own_guard_key() {
        let plugin = PluginConfig::from_json(THREE.as_bytes()).unwrap();
        let keys: Vec<String> = (0..3).map(|i| plugin.guard_key(i)).collect();
        let fp = format!("{:08x}", plugin.fingerprint);
        assert_eq!(
            keys,
            [
                format!("canary-router/guard/{fp}/checkout"),
                format!("canary-router/guard/{fp}/api-v2"),
                format!("canary-router/guard/{fp}/ios"),
            ]
        );
    }

    #[test]
    fn per_service_fields_at_the_top_level_are_named_and_sent_into_a_rollout() {
        let errors = errors_of(
            r#"{"versions":[{"name":"s"}],"hash":{"header":"u"},"hosts":["a"],"route_header":"x-v","guard":null,
                "rollouts":[{"name":"a","versions":[{"name":"s"}]}]}"#,
        );
        assert_eq!(
            errors,
            [
                "route_header: a config with `rollouts` has no top-level `route_header`: move it into a rollout",
                "versions: a config with `rollouts` has no top-level `versions`: move it into a rollout",
                "hash: a config with `rollouts` has no top-level `hash`: move it into a rollout",
                "hosts: a config with `rollouts` has no top-level `hosts`: move it into a rollout's match.hosts",
            ]
        );
        assert_eq!(
            errors_of(r#"{"metrics_prefix":"shop"}"#),
            ["missing field `versions` (or `rollouts`, for a config of several services)"]
        );
        // `rollouts: null` is no rollouts, as every other null.
        assert!(PluginConfig::from_json(br#"{"versions":[{"name":"s"}],"rollouts":null}"#).is_ok());
    }

    #[test]
    fn rollout_lists_and_names_are_checked() {
        assert_rejected(r#"{"rollouts":[]}"#, "rollouts: is empty");
        assert_rejected(
            r#"{"rollouts":[{"name":"a","versions":[{"name":"s"}]},{"name":"a","versions":[{"name":"s"}]}]}"#,
            "rollouts[1].name: `a` is already the name of rollouts[0]",
        );
        assert_rejected(
            &with_rollout(r#""versions":[{"name":"s"}],"name":"has space""#)
                .replace(r#""name":"b","#, ""),
            "rollouts[1].name: `has space` has characters outside [A-Za-z0-9._-]",
        );
        assert_rejected(
            r#"{"rollouts":[{"name":"","versions":[{"name":"s"}]}]}"#,
            "rollouts[0].name: must not be empty",
        );
        let many: Vec<String> = (0..=MAX_ROLLOUTS)
            .map(|i| format!(r#"{{"name":"r{i}","versions":[{{"name":"s"}}]}}"#))
            .collect();
        assert_rejected(
            &format!(r#"{{"rollouts":[{}]}}"#, many.join(",")),
            "rollouts: 1001 rollouts; at most 1000 are allowed",
        );
        let most: Vec<String> = (0..MAX_ROLLOUTS)
            .map(|i| {
                format!(
                    r#"{{"name":"r{i}","match":{{"hosts":["h{i}.example","*.w{i}.example"]}},"versions":[{{"name":"s"}},{{"name":"c","weight":1}}]}}"#
                )
            })
            .collect();
        let plugin =
            PluginConfig::from_json(format!(r#"{{"rollouts":[{}]}}"#, most.join(",")).as_bytes())
                .unwrap();
        assert_eq!(route(&plugin, &[(":authority", "h999.example")]), Some(999));
        assert_eq!(route(&plugin, &[(":authority", "x.w7.example")]), Some(7));
    }

    #[test]
    fn errors_inside_a_rollout_name_it_by_index() {
        assert_rejected(
            &with_rollout(r#""versions":[{"name":"s s"}]"#),
            "rollouts[1].versions[0].name: `s s` has characters outside",
        );
        assert_rejected(
            &with_rollout(r#""versions":[{"name":"s"}],"users":{"c":["x"]},"hash":{"header":"u"}"#),
            "rollouts[1].users.c: no version is named `c`",
        );
        assert_rejected(
            &with_rollout(r#""versions":[{"name":"s"}],"hash":{"header":"x-canary-version"}"#),
            "rollouts[1].hash.header: `x-canary-version` is the route_header",
        );
        // Parse errors name the field through the rollout too.
        assert_rejected(
            &with_rollout(r#""versions":[{"name":"s","weight":"5"}]"#),
            "rollouts[1].versions[0].weight: invalid type: string \"5\", expected f64",
        );
        assert_rejected(
            &with_rollout(r#""versions":7"#),
            "rollouts[1].versions: invalid type",
        );
        assert_rejected(
            r#"{"rollouts":[{"versions":[{"name":"s"}]}]}"#,
            "rollouts[0]: missing field `name`",
        );
        assert_rejected(
            r#"{"rollouts":[{"name":"a"}]}"#,
            "rollouts[0]: missing field `versions`",
        );
        assert_rejected(
            &with_rollout(r#""versions":[{"name":"s"}],"metrics_prefix":"x""#),
            "rollouts[1].metrics_prefix: unknown field `metrics_prefix`",
        );
        assert_rejected(
            &with_rollout(r#""versions":[{"name":"s"}],"hosts":["a"]"#),
            "rollouts[1].hosts: unknown field `hosts`",
        );
    }

    #[test]
    fn match_errors_name_their_field() {
        let rejected = |matched: &str, expected: &str| {
            assert_rejected(
                &with_rollout(&format!(r#""versions":[{{"name":"s"}}],"match":{matched}"#)),
                expected,
            )
        };
        rejected(
            r#"{"hosts":["a","a:80"]}"#,
            "rollouts[1].match.hosts[1]: `a:80` has a port",
        );
        rejected(r#"{"hosts":[]}"#, "rollouts[1].match.hosts: is empty");
        rejected(
            r#"{"path_prefixes":["api"]}"#,
            "rollouts[1].match.path_prefixes[0]: `api` does not start with `/`",
        );
        rejected(
            r#"{"path_prefixes":["/a","/b c"]}"#,
            "rollouts[1].match.path_prefixes[1]: `/b c` has a character outside visible ASCII",
        );
        rejected(
            r#"{"path_prefixes":["/a","/a"]}"#,
            "rollouts[1].match.path_prefixes[1]: `/a` is already listed as path_prefixes[0]",
        );
        rejected(
            r#"{"path_prefixes":[]}"#,
            "rollouts[1].match.path_prefixes: is empty",
        );
        rejected(
            r#"{"headers":[{"name":"x-a","exact":"1"},{"name":"x-b","prefix":""}]}"#,
            "rollouts[1].match.headers[1].prefix: is empty, which every value meets",
        );
        rejected(
            r#"{"headers":[{"name":"x a","present":true}]}"#,
            "rollouts[1].match.headers[0].name: `x a` is not an HTTP header name",
        );
        rejected(
            r#"{"headers":[{"name":"x","exact":"1","suffix":"2"}]}"#,
            "rollouts[1].match.headers[0]: gives exact and suffix: give exactly one of",
        );
        rejected(
            r#"{"headers":[{"name":"x"}]}"#,
            "rollouts[1].match.headers[0]: gives no test",
        );
        rejected(
            r#"{"headers":[{"name":"x","suffix":"a\nb"}]}"#,
            "rollouts[1].match.headers[0].suffix: `a\\nb` holds a NUL, CR or LF",
        );
        rejected(r#"{"headers":[]}"#, "rollouts[1].match.headers: is empty");
        rejected(
            r#"{"headers":[{"name":"x","present":"yes"}]}"#,
            "rollouts[1].match.headers[0].present: invalid type: string \"yes\", expected a boolean",
        );
        rejected(
            r#"{"paths":["/"]}"#,
            "rollouts[1].match.paths: unknown field `paths`, expected one of `hosts`, `path_prefixes`, `headers`",
        );
        let many: Vec<String> = (0..17)
            .map(|i| format!(r#"{{"name":"x{i}","present":true}}"#))
            .collect();
        rejected(
            &format!(r#"{{"headers":[{}]}}"#, many.join(",")),
            "rollouts[1].match.headers: 17 conditions; at most 16 are allowed",
        );
    }

    #[test]
    fn an_empty_match_matches_every_request() {
        let plugin = PluginConfig::from_json(
            with_rollout(r#""versions":[{"name":"s"}],"match":{}"#).as_bytes(),
        )
        .unwrap();
        assert!(plugin.router.matches().iter().all(Match::is_empty));
        assert_eq!(route(&plugin, &[]), Some(0));
    }
}

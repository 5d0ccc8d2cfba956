//! The plugin configuration: the JSON users write in Envoy's `configuration` or
//! Istio's `pluginConfig`, its validation, and the precomputed form that the
//! per-request decision reads. Parsing happens once per config; nothing here runs
//! per request. Every error names the field it is about, so that the log line that
//! rejects a config tells the operator exactly what to fix.
//!
//! One module per section of the JSON, each with its serde type beside its
//! validation; this one holds the top level of a single service: [`Config`], its
//! parsing and the checks that span sections. A config of several services
//! (`rollouts`, [`PluginConfig`]) holds one [`Config`] per rollout (rollouts.rs,
//! with each rollout's `match` in matching.rs).

mod anonymous;
mod cookie;
mod error;
mod guard;
mod hash;
mod hosts;
pub(crate) mod json;
mod matching;
mod metrics;
mod names;
mod overrides;
mod pick;
mod rollouts;
mod schedule;
#[cfg(test)]
mod tests;
mod users;
mod versions;

// The public API, as it was when this was one file.
pub use self::anonymous::Anonymous;
pub use self::cookie::{
    CookieAttributes, SameSite, DEFAULT_COOKIE_MAX_AGE_MS, MAX_COOKIE_ATTRIBUTE_LEN,
};
pub use self::error::ConfigError;
pub use self::guard::{DEFAULT_GUARD_HOLD_MS, DEFAULT_GUARD_MIN_REQUESTS, DEFAULT_GUARD_WINDOW_MS};
pub use self::hash::{HashConfig, ALLOWED_BUCKETS, DEFAULT_BUCKETS};
pub use self::hosts::MAX_HOSTS;
pub use self::matching::{MAX_HEADER_CONDITIONS, MAX_PATH_PREFIXES};
pub use self::metrics::{MetricsConfig, DEFAULT_METRICS_PREFIX};
pub use self::names::{DEFAULT_ROUTE_HEADER, MAX_VERSION_NAME_LEN};
pub use self::overrides::{OverrideConfig, TokenConfig, MAX_TOKEN_VALUES, MIN_TOKEN_LEN};
pub use self::pick::{PickConfig, DEFAULT_PICK_TOTAL, MAX_PICK_TOTAL, WEIGHTED_VERSION};
pub use self::rollouts::MAX_ROLLOUTS;
pub use self::users::UserIndex;
pub use self::versions::{Split, Version, Weight, MAX_VERSIONS};
pub use crate::hosts::Hosts;
pub use crate::units::{format_basis_points, weight_to_basis_points, FULL_WEIGHT_BASIS_POINTS};

use self::anonymous::read_anonymous;
use self::guard::RawGuard;
use self::hash::RawHash;
use self::json::Json;
use self::matching::{validate_match, RawMatch};
use self::metrics::RawMetrics;
use self::names::checked_header_name;
#[cfg(feature = "schema")]
use self::names::{HEADER_NAME_PATTERN, VERSION_NAME_PATTERN};
use self::overrides::RawOverride;
use self::rollouts::RawRollout;
use self::users::UserLists;
use self::versions::RawVersion;
use crate::guard::GuardConfig;
use crate::router::{Match, Router};
use serde::Deserialize;

// ---- The JSON as written (serde types) ------------------------------------------
//
// With the `schema` feature these types also derive the JSON Schema of the config
// (`config.schema.json`, `canary-router schema`): the doc comments become its
// descriptions, the `schemars` attributes the constraints that JSON Schema can
// express. The checks that it cannot (sums, cross-references, ordering) stay in
// each section's validation, which is the authority.

/// The plugin configuration of canary-router: Envoy's `config.configuration` (a
/// `google.protobuf.StringValue`) or Istio's `WasmPlugin.pluginConfig`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "canary-router plugin config"))]
// The versions after the baseline have a weight or a schedule, except in pick mode
// (hash.pick_header set), where the route's weights decide and they have neither.
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
// Either one service (versions, and no rollouts) or several (rollouts, and none of
// the per-service fields at the top level). A null counts as absent, as in the
// filter.
#[cfg_attr(feature = "schema", schemars(extend("oneOf" = [
    { "required": ["versions"], "properties": {
        "versions": { "type": "array" }, "rollouts": { "type": "null" } } },
    { "required": ["rollouts"], "properties": {
        "rollouts": { "type": "array" },
        "route_header": { "type": "null" }, "versions": { "type": "null" },
        "override": { "type": "null" }, "users": { "type": "null" },
        "hash": { "type": "null" }, "anonymous": { "type": "null" },
        "guard": { "type": "null" }, "hosts": { "type": "null" } } }
])))]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The request header the filter sets to the chosen version's name; routes match
    /// on it. Case-insensitive. Must differ from override.header, override.token.header
    /// and hash.header.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN), extend("default" = DEFAULT_ROUTE_HEADER)))]
    route_header: Option<String>,
    /// The versions of the service, in order, with unique names. The first is the
    /// baseline: it has no weight and takes the share the others leave. Every other
    /// version has a weight or a schedule (none in pick mode, hash.pick_header); the
    /// weights add up to at most 100. Required, unless the config has rollouts.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSIONS), extend(
        "prefixItems" = [{ "$ref": "#/$defs/Version", "not": { "anyOf": [
            { "required": ["weight"], "properties": { "weight": { "type": "number" } } },
            { "required": ["schedule"], "properties": { "schedule": { "type": "object" } } }
        ] } }],
        "items" = { "$ref": "#/$defs/Version" }
    )))]
    versions: Option<Vec<RawVersion>>,
    /// Lets a request name its version by a header or a cookie.
    #[serde(rename = "override")]
    override_: Option<RawOverride>,
    /// Version name -> user IDs always sent to that version. A user ID may be listed
    /// under one version only. Needs hash.header or hash.cookie.
    // In name order, so that errors about users come out in a stable order.
    #[cfg_attr(feature = "schema", schemars(extend(
        "propertyNames" = { "minLength": 1, "maxLength": MAX_VERSION_NAME_LEN, "pattern": VERSION_NAME_PATTERN },
        "default" = {}
    )))]
    users: Option<UserLists>,
    /// Where the user ID comes from and how it is bucketed.
    hash: Option<RawHash>,
    /// Requests without a user ID: drawn independently by the weights ("random"),
    /// sent to the baseline ("baseline"), or issued a new visitor ID in the cookie
    /// hash.cookie and decided on it as their later requests will be ("cookie"; needs
    /// hash.cookie).
    #[cfg_attr(feature = "schema", schemars(extend("default" = "random")))]
    anonymous: Option<Anonymous>,
    /// Prefix of every metric name.
    #[cfg_attr(feature = "schema", schemars(length(max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), extend("default" = DEFAULT_METRICS_PREFIX)))]
    metrics_prefix: Option<String>,
    /// Which per-version metrics to record; each costs host calls on every request.
    metrics: Option<RawMetrics>,
    /// The rollback guard of one version: when its failure rate is too high, its
    /// traffic goes to the baseline.
    guard: Option<RawGuard>,
    /// The hosts the plugin is for, matched against the request's `:authority`
    /// without its port, ignoring case; `*.example.com` matches every subdomain (not
    /// example.com itself). Other requests pass untouched: no header written or
    /// removed, not counted, not seen by the guard. Absent: every request.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_HOSTS), inner(length(max = 253), regex(pattern = self::hosts::HOST_PATTERN))))]
    hosts: Option<Vec<String>>,
    /// Several services in one config, each a rollout with its own name, match and
    /// versions: the first rollout whose match holds decides a request, and a
    /// request that matches none passes untouched. With rollouts, the per-service
    /// fields (route_header, versions, override, users, hash, anonymous, guard,
    /// hosts) go into each rollout; metrics_prefix and metrics stay here.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_ROLLOUTS)))]
    rollouts: Option<Vec<RawRollout>>,
}

impl RawConfig {
    #[cold]
    #[inline(never)]
    fn empty() -> Self {
        RawConfig {
            route_header: None,
            versions: None,
            override_: None,
            users: None,
            hash: None,
            anonymous: None,
            metrics_prefix: None,
            metrics: None,
            guard: None,
            hosts: None,
            rollouts: None,
        }
    }

    #[cold]
    #[inline(never)]
    fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawConfig::empty();
        json.object("struct RawConfig", &CONFIG_FIELDS, 0, &mut |json, field| {
            raw.read_field(json, field)
        })?;
        Ok(raw)
    }

    /// Reads the value of `CONFIG_FIELDS[field]`, at the top level or in a rollout
    /// (one copy of the per-service fields' reading in the `.wasm`).
    #[cold]
    #[inline(never)]
    fn read_field(&mut self, json: &mut Json, field: usize) -> json::Result<()> {
        match field {
            0 => self.route_header = json.option(Json::string)?,
            1 => self.versions = json.option(|json| json.array(RawVersion::read))?,
            2 => self.override_ = json.option(RawOverride::read)?,
            3 => {
                self.users = json
                    .option(|json| json.map(|json| json.array(Json::string)))?
                    .map(UserLists)
            }
            4 => self.hash = json.option(RawHash::read)?,
            5 => self.anonymous = json.option(read_anonymous)?,
            6 => self.metrics_prefix = json.option(Json::string)?,
            7 => self.metrics = json.option(RawMetrics::read)?,
            8 => self.guard = json.option(RawGuard::read)?,
            9 => self.hosts = json.option_strings()?,
            _ => self.rollouts = json.option(|json| json.array(RawRollout::read))?,
        }
        Ok(())
    }
}

/// The top level's fields, in the order of [`RawConfig`]'s (serde's messages list them so).
const CONFIG_FIELDS: [&str; 11] = [
    "route_header",
    "versions",
    "override",
    "users",
    "hash",
    "anonymous",
    "metrics_prefix",
    "metrics",
    "guard",
    "hosts",
    "rollouts",
];

/// A rollout's fields, in the order of `RawRollout`'s, and where each of its
/// per-service fields is in [`CONFIG_FIELDS`].
const ROLLOUT_FIELDS: [&str; 9] = [
    "name",
    "match",
    "route_header",
    "versions",
    "override",
    "users",
    "hash",
    "anonymous",
    "guard",
];
const ROLLOUT_FIELD_AT_TOP: [usize; 9] = [0, 0, 0, 1, 2, 3, 4, 5, 8];

impl RawRollout {
    /// Here rather than beside the type (rollouts.rs): it reads the per-service
    /// fields with the top level's code.
    #[cold]
    #[inline(never)]
    fn read(json: &mut Json) -> json::Result<Self> {
        let (mut name, mut match_, mut service) = (String::new(), None, RawConfig::empty());
        json.object(
            "struct RawRollout",
            &ROLLOUT_FIELDS,
            0b1001,
            &mut |json, field| match field {
                0 => {
                    name = json.string()?;
                    Ok(())
                }
                1 => {
                    match_ = json.option(RawMatch::read)?;
                    Ok(())
                }
                _ => service.read_field(json, ROLLOUT_FIELD_AT_TOP[field]),
            },
        )?;
        Ok(RawRollout {
            name,
            match_,
            route_header: service.route_header,
            versions: service.versions.unwrap_or_default(),
            override_: service.override_,
            users: service.users,
            hash: service.hash,
            anonymous: service.anonymous,
            guard: service.guard,
        })
    }
}

/// Reads the config's JSON into its written form; a syntax or type error is the
/// one error returned.
#[cold]
#[inline(never)]
fn read_raw(bytes: &[u8]) -> Result<RawConfig, Vec<ConfigError>> {
    // serde would also read a struct from an array; say plainly what is expected.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            return Err(vec![ConfigError::new(
            "",
            "the config must be a JSON object, such as {\"versions\": [{\"name\": \"stable\"}]}",
        )])
        }
        None => return Err(vec![ConfigError::new("", "the config is empty")]),
    }
    let mut json = Json::new(bytes);
    match RawConfig::read(&mut json).and_then(|raw| json.end().map(|()| raw)) {
        Ok(raw) => Ok(raw),
        Err(err) => {
            let (path, message) = json.render(err);
            // "?" is a syntax error before any field was read: it names no field.
            let field = if path == "?" { String::new() } else { path };
            Err(vec![ConfigError::new(field, message)])
        }
    }
}

/// The JSON Schema of the config, generated from the types above.
#[cfg(feature = "schema")]
pub fn json_schema() -> schemars::Schema {
    schemars::schema_for!(RawConfig)
}

/// A parsed, validated config: everything the per-request decision needs, in the
/// shape it needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub route_header: String,
    pub versions: Vec<Version>,
    pub override_: OverrideConfig,
    /// User ID -> version index.
    pub users: UserIndex,
    pub hash: HashConfig,
    /// 100, 1000 or 10000: user hashes and anonymous draws land in 1..=buckets.
    pub buckets: u32,
    pub anonymous: Anonymous,
    pub metrics_prefix: String,
    pub metrics: MetricsConfig,
    pub guard: Option<GuardConfig>,
    /// The hosts the plugin is for; `None`: every request.
    pub hosts: Option<Hosts>,
    /// murmur3 of the config text: names this config's proxy-wide guard state.
    pub fingerprint: u32,
}

impl Config {
    /// Parses and validates a single-service config (one without `rollouts`). On
    /// failure returns every problem found (a JSON syntax or type error stops at
    /// that error; semantic checks all run). A config with `rollouts` is refused
    /// here: [`PluginConfig::from_json`] reads every config.
    #[cold]
    #[inline(never)]
    pub fn from_json(bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
        let mut plugin = PluginConfig::from_json(bytes)?;
        match plugin.rollouts.pop() {
            Some(Rollout { name: None, config }) if plugin.rollouts.is_empty() => Ok(config),
            _ => Err(vec![ConfigError::new(
                "rollouts",
                "a config of several services: read it with PluginConfig::from_json",
            )]),
        }
    }

    /// Each version's share at `now_ms` (unix ms), in basis points; the baseline's
    /// is what the others leave.
    #[inline]
    pub fn weights_at(&self, now_ms: i64) -> Vec<u32> {
        let mut weights: Vec<u32> = self
            .versions
            .iter()
            .map(|v| v.weight.at(now_ms, self.buckets))
            .collect();
        let others: u32 = weights.iter().sum();
        if let Some(baseline) = weights.first_mut() {
            *baseline = FULL_WEIGHT_BASIS_POINTS.saturating_sub(others);
        }
        weights
    }

    /// The bucket ranges at `now_ms` (unix ms).
    #[inline]
    pub fn split_at(&self, now_ms: i64) -> Split {
        let to_buckets = |bp: u32| {
            (u64::from(bp) * u64::from(self.buckets) / u64::from(FULL_WEIGHT_BASIS_POINTS)) as u32
        };
        let mut reserved_start = 0u32;
        let mut ranges = Vec::with_capacity(self.versions.len().saturating_sub(1));
        for version in self.versions.iter().skip(1) {
            let now = to_buckets(version.weight.at(now_ms, self.buckets));
            ranges.push((reserved_start, reserved_start.saturating_add(now)));
            reserved_start = reserved_start.saturating_add(to_buckets(version.weight.max()));
        }
        Split {
            buckets: self.buckets,
            ranges,
        }
    }

    /// True if some weight follows a schedule, so the split changes with time.
    #[inline]
    pub fn is_scheduled(&self) -> bool {
        self.versions
            .iter()
            .any(|v| matches!(v.weight, Weight::Scheduled(_)))
    }

    /// What this valid config holds that has no effect, each naming its field:
    /// `canary-router validate` prints them. The filter takes the config as it is (a
    /// mesh config is not refused for them).
    #[cold]
    #[inline(never)]
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        if self.hash.cookie_attributes.is_some() && self.anonymous != Anonymous::Cookie {
            warnings.push(ConfigError::new(
                "hash.cookie_attributes",
                "has no effect: only anonymous: \"cookie\" sets a cookie",
            ));
        }
        warnings
    }

    /// The index of the version with this exact name.
    #[inline]
    pub fn version_index(&self, name: &[u8]) -> Option<usize> {
        self.versions.iter().position(|v| v.name.as_bytes() == name)
    }
}

#[cold]
#[inline(never)]
fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();

    let route_header = match raw.route_header {
        Some(h) => checked_header_name("route_header", &h, &mut errors),
        None => DEFAULT_ROUTE_HEADER.to_string(),
    };
    let buckets = hash::validate_buckets(raw.hash.as_ref(), &mut errors);
    let pick_mode = hash::pick_mode(raw.hash.as_ref());
    let versions = versions::validate_versions(
        raw.versions.as_deref().unwrap_or_default(),
        buckets,
        pick_mode,
        &mut errors,
    );
    let override_ = match raw.override_ {
        Some(o) => overrides::validate_override(o, &mut errors),
        None => OverrideConfig::default(),
    };
    let hash = hash::validate_hash(raw.hash, &mut errors);

    // A client must never pick a version by sending the route header itself: the
    // header the route table matches must not double as an input.
    let token_header = override_.token.as_ref().map(|t| t.header.clone());
    for (field, name) in [
        ("override.header", &override_.header),
        ("hash.header", &hash.header),
        ("override.token.header", &token_header),
    ] {
        if name.as_deref() == Some(route_header.as_str()) {
            errors.push(ConfigError::new(
                field,
                format!("`{route_header}` is the route_header; it must be a different header"),
            ));
        }
    }
    // Nor the pick value: the filter always writes or removes that header, so it
    // cannot double as an input, nor be the route header.
    if let Some(pick) = &hash.pick {
        for (field, name) in [
            ("route_header", Some(&route_header)),
            ("hash.header", hash.header.as_ref()),
            ("override.header", override_.header.as_ref()),
            ("override.token.header", token_header.as_ref()),
        ] {
            if name == Some(&pick.header) {
                errors.push(ConfigError::new(
                    "hash.pick_header",
                    format!(
                        "`{}` is also {field}; the pick value needs a header of its own",
                        pick.header
                    ),
                ));
            }
        }
    }

    let anonymous = raw.anonymous.unwrap_or_default();
    if anonymous == Anonymous::Cookie && hash.cookie.is_none() {
        errors.push(ConfigError::new(
            "anonymous",
            "\"cookie\" needs hash.cookie: the cookie in which a new visitor gets its ID and sends it back",
        ));
    }

    let users = users::validate_users(raw.users, &hash, &versions, &mut errors);
    let metrics_prefix = metrics::validate_metrics_prefix(raw.metrics_prefix, &mut errors);
    let guard = raw
        .guard
        .and_then(|g| guard::validate_guard(g, &versions, &mut errors));
    let hosts = hosts::validate_hosts(raw.hosts, &mut errors);

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        route_header,
        versions,
        override_,
        users,
        hash,
        buckets,
        anonymous,
        metrics_prefix,
        metrics: metrics::validate_metrics(raw.metrics),
        guard,
        hosts,
        fingerprint: 0,
    })
}

// ---- Several services: rollouts ----------------------------------------------------

/// One rollout of a loaded config.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// `None` for a config without `rollouts` (one service, no `rollout` tag).
    pub name: Option<String>,
    /// Its settings, with the config's metrics_prefix and metrics.
    pub config: Config,
}

/// A parsed, validated plugin config: its rollouts, in config order, and the
/// router that finds a request's rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub rollouts: Vec<Rollout>,
    /// The rollouts' matches, and the lookup per request.
    pub router: Router,
    pub metrics_prefix: String,
    pub metrics: MetricsConfig,
    /// murmur3 of the config text: names this config's proxy-wide guard states.
    pub fingerprint: u32,
}

impl PluginConfig {
    /// Parses and validates a plugin config, with or without `rollouts`. On failure
    /// returns every problem found (a JSON syntax or type error stops at that error;
    /// semantic checks all run).
    #[cold]
    #[inline(never)]
    pub fn from_json(bytes: &[u8]) -> Result<PluginConfig, Vec<ConfigError>> {
        let raw = read_raw(bytes)?;
        let fingerprint = crate::bucket::hash_key(b"", bytes);
        let mut plugin = match raw.rollouts {
            None => single(raw)?,
            Some(_) => several(raw)?,
        };
        plugin.fingerprint = fingerprint;
        for rollout in &mut plugin.rollouts {
            rollout.config.fingerprint = fingerprint;
        }
        Ok(plugin)
    }

    /// True if the config lists `rollouts` (its metrics carry a `rollout` tag).
    #[inline]
    pub fn has_rollouts(&self) -> bool {
        self.rollouts.iter().any(|r| r.name.is_some())
    }

    /// The index of the rollout with this name.
    #[inline]
    pub fn rollout_index(&self, name: &str) -> Option<usize> {
        self.rollouts
            .iter()
            .position(|r| r.name.as_deref() == Some(name))
    }

    /// The shared-data key of rollout `index`'s proxy-wide guard state: a
    /// single-service config keeps the key it always had.
    #[cold]
    #[inline(never)]
    pub fn guard_key(&self, index: usize) -> String {
        match self.rollouts.get(index).and_then(|r| r.name.as_deref()) {
            None => format!("canary-router/guard/{:08x}", self.fingerprint),
            Some(name) => format!("canary-router/guard/{:08x}/{name}", self.fingerprint),
        }
    }

    /// True if some rollout's weights follow a schedule or some rollout has a
    /// guard: the config needs a timer.
    #[inline]
    pub fn needs_tick(&self) -> bool {
        self.rollouts
            .iter()
            .any(|r| r.config.is_scheduled() || r.config.guard.is_some())
    }
}

/// A config without `rollouts`: one service, matched by the top-level `hosts`.
#[cold]
#[inline(never)]
fn single(raw: RawConfig) -> Result<PluginConfig, Vec<ConfigError>> {
    if raw.versions.is_none() {
        return Err(vec![ConfigError::new(
            "",
            "missing field `versions` (or `rollouts`, for a config of several services)",
        )]);
    }
    let config = validate(raw)?;
    let matched = Match {
        hosts: config.hosts.clone(),
        ..Match::default()
    };
    Ok(PluginConfig {
        router: Router::new(vec![matched]),
        metrics_prefix: config.metrics_prefix.clone(),
        metrics: config.metrics,
        fingerprint: 0,
        rollouts: vec![Rollout { name: None, config }],
    })
}

/// A config with `rollouts`.
#[cold]
#[inline(never)]
fn several(raw: RawConfig) -> Result<PluginConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    // Each per-service field belongs to a rollout once there are rollouts.
    for (field, given) in [
        ("route_header", raw.route_header.is_some()),
        ("versions", raw.versions.is_some()),
        ("override", raw.override_.is_some()),
        ("users", raw.users.is_some()),
        ("hash", raw.hash.is_some()),
        ("anonymous", raw.anonymous.is_some()),
        ("guard", raw.guard.is_some()),
    ] {
        if given {
            errors.push(ConfigError::new(
                field,
                format!(
                    "a config with `rollouts` has no top-level `{field}`: move it into a rollout"
                ),
            ));
        }
    }
    if raw.hosts.is_some() {
        errors.push(ConfigError::new(
            "hosts",
            "a config with `rollouts` has no top-level `hosts`: move it into a rollout's match.hosts",
        ));
    }
    let metrics_prefix = metrics::validate_metrics_prefix(raw.metrics_prefix, &mut errors);
    let metrics = metrics::validate_metrics(raw.metrics);
    let raw_rollouts = raw.rollouts.unwrap_or_default();
    if raw_rollouts.is_empty() {
        errors.push(ConfigError::new(
            "rollouts",
            "is empty: give at least one rollout, or leave rollouts out for a single service",
        ));
    }
    if raw_rollouts.len() > MAX_ROLLOUTS {
        errors.push(ConfigError::new(
            "rollouts",
            format!(
                "{} rollouts; at most {MAX_ROLLOUTS} are allowed",
                raw_rollouts.len()
            ),
        ));
    }
    let names: Vec<String> = raw_rollouts.iter().map(|r| r.name.clone()).collect();
    let mut rollouts = Vec::with_capacity(raw_rollouts.len());
    let mut matches = Vec::with_capacity(raw_rollouts.len());
    for (i, rollout) in raw_rollouts.into_iter().enumerate() {
        let at = format!("rollouts[{i}]");
        let mut inner = Vec::new();
        if let Some(problem) = names::version_name_problem(&rollout.name) {
            inner.push(ConfigError::new("name", problem));
        } else if let Some(first) = names[..i].iter().position(|n| *n == rollout.name) {
            inner.push(ConfigError::new(
                "name",
                format!(
                    "`{}` is already the name of rollouts[{first}]",
                    rollout.name
                ),
            ));
        }
        let matched = validate_match(rollout.match_, &mut inner);
        // The per-service fields, checked as a single-service config's are; the
        // metrics settings are the config's, checked once above.
        let service = RawConfig {
            route_header: rollout.route_header,
            versions: Some(rollout.versions),
            override_: rollout.override_,
            users: rollout.users,
            hash: rollout.hash,
            anonymous: rollout.anonymous,
            metrics_prefix: None,
            metrics: None,
            guard: rollout.guard,
            hosts: None,
            rollouts: None,
        };
        match validate(service) {
            Ok(mut config) => {
                config.metrics_prefix = metrics_prefix.clone();
                config.metrics = metrics;
                config.hosts = matched.hosts.clone();
                rollouts.push(Rollout {
                    name: Some(rollout.name),
                    config,
                });
            }
            Err(service_errors) => inner.extend(service_errors),
        }
        errors.extend(inner.into_iter().map(|e| e.within(&at)));
        matches.push(matched);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PluginConfig {
        rollouts,
        router: Router::new(matches),
        metrics_prefix,
        metrics,
        fingerprint: 0,
    })
}

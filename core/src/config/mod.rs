//! The plugin configuration: the JSON users write in Envoy's `configuration` or
//! Istio's `pluginConfig`, its validation, and the precomputed form that the
//! per-request decision reads. Parsing happens once per config; nothing here runs
//! per request. Every error names the field it is about, so that the log line that
//! rejects a config tells the operator exactly what to fix.
//!
//! One module per section of the JSON, each with its serde type beside its
//! validation; this one holds the top level: [`Config`], its parsing and the
//! checks that span sections.

mod cookie;
mod error;
mod guard;
mod hash;
mod hosts;
pub(crate) mod json;
mod metrics;
mod names;
mod overrides;
mod pick;
mod schedule;
#[cfg(test)]
mod tests;
mod users;
mod versions;

// The public API, as it was when this was one file.
pub use self::cookie::{
    CookieAttributes, SameSite, DEFAULT_COOKIE_MAX_AGE_MS, MAX_COOKIE_ATTRIBUTE_LEN,
};
pub use self::error::ConfigError;
pub use self::guard::{DEFAULT_GUARD_HOLD_MS, DEFAULT_GUARD_MIN_REQUESTS, DEFAULT_GUARD_WINDOW_MS};
pub use self::hash::{HashConfig, ALLOWED_BUCKETS, DEFAULT_BUCKETS};
pub use self::hosts::MAX_HOSTS;
pub use self::metrics::{MetricsConfig, DEFAULT_METRICS_PREFIX};
pub use self::names::MAX_VERSION_NAME_LEN;
pub use self::overrides::{OverrideConfig, TokenConfig, MAX_TOKEN_VALUES, MIN_TOKEN_LEN};
pub use self::pick::{PickConfig, DEFAULT_PICK_TOTAL, MAX_PICK_TOTAL, WEIGHTED_VERSION};
pub use self::users::UserIndex;
pub use self::versions::{Split, Version, Weight, MAX_VERSIONS};
pub use crate::hosts::Hosts;
pub use crate::units::{format_basis_points, weight_to_basis_points, FULL_WEIGHT_BASIS_POINTS};

use self::guard::RawGuard;
use self::hash::RawHash;
use self::json::Json;
use self::metrics::RawMetrics;
use self::names::checked_header_name;
#[cfg(feature = "schema")]
use self::names::{HEADER_NAME_PATTERN, VERSION_NAME_PATTERN};
use self::overrides::RawOverride;
use self::users::UserLists;
use self::versions::RawVersion;
use crate::guard::GuardConfig;
use serde::Deserialize;

pub const DEFAULT_ROUTE_HEADER: &str = "x-canary-version";

/// What to do with a request that carries no user ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Draw each request independently by the weights.
    #[default]
    Random,
    /// Send it to the first (baseline) version.
    Baseline,
    /// Issue it a new visitor ID in the cookie hash.cookie and decide it on that ID,
    /// exactly as its later requests, which carry the cookie, are decided. Where no
    /// ID can be issued (gRPC calls), drawn as with random.
    Cookie,
}

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
    /// weights add up to at most 100.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSIONS), extend(
        "prefixItems" = [{ "$ref": "#/$defs/Version", "not": { "anyOf": [
            { "required": ["weight"], "properties": { "weight": { "type": "number" } } },
            { "required": ["schedule"], "properties": { "schedule": { "type": "object" } } }
        ] } }],
        "items" = { "$ref": "#/$defs/Version" }
    )))]
    versions: Vec<RawVersion>,
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
}

impl RawConfig {
    #[cold]
    #[inline(never)]
    fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawConfig {
            route_header: None,
            versions: Vec::new(),
            override_: None,
            users: None,
            hash: None,
            anonymous: None,
            metrics_prefix: None,
            metrics: None,
            guard: None,
            hosts: None,
        };
        let fields = [
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
        ];
        json.object("struct RawConfig", &fields, 0b10, &mut |json, field| {
            match field {
                0 => raw.route_header = json.option(Json::string)?,
                1 => raw.versions = json.array(RawVersion::read)?,
                2 => raw.override_ = json.option(RawOverride::read)?,
                3 => {
                    raw.users = json
                        .option(|json| json.map(|json| json.array(Json::string)))?
                        .map(UserLists)
                }
                4 => raw.hash = json.option(RawHash::read)?,
                5 => {
                    raw.anonymous = json
                        .option(|json| json.unit_enum(&["random", "baseline", "cookie"]))?
                        .map(|i| match i {
                            0 => Anonymous::Random,
                            1 => Anonymous::Baseline,
                            _ => Anonymous::Cookie,
                        })
                }
                6 => raw.metrics_prefix = json.option(Json::string)?,
                7 => raw.metrics = json.option(RawMetrics::read)?,
                8 => raw.guard = json.option(RawGuard::read)?,
                _ => raw.hosts = json.option(|json| json.array(Json::string))?,
            }
            Ok(())
        })?;
        Ok(raw)
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
    /// Parses and validates a config. On failure returns every problem found
    /// (a JSON syntax or type error stops at that error; semantic checks all run).
    #[cold]
    #[inline(never)]
    pub fn from_json(bytes: &[u8]) -> Result<Config, Vec<ConfigError>> {
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
        let raw = match RawConfig::read(&mut json).and_then(|raw| json.end().map(|()| raw)) {
            Ok(raw) => raw,
            Err(err) => {
                let (path, message) = json.render(err);
                // "?" is a syntax error before any field was read: it names no field.
                let field = if path == "?" { String::new() } else { path };
                return Err(vec![ConfigError::new(field, message)]);
            }
        };
        let mut config = validate(raw)?;
        config.fingerprint = crate::bucket::hash_key(b"", bytes);
        Ok(config)
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
    let versions = versions::validate_versions(&raw.versions, buckets, pick_mode, &mut errors);
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

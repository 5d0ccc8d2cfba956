//! The plugin configuration: the JSON users write in Envoy's `configuration` or
//! Istio's `pluginConfig`, its validation, and the precomputed form that the
//! per-request decision reads. Parsing happens once per config; nothing here runs
//! per request. Every error names the field it is about, so that the log line that
//! rejects a config tells the operator exactly what to fix.

use crate::guard::{GuardConfig, StatusMatcher};
use crate::schedule::{parse_duration, parse_rfc3339, Schedule, Step};
use crate::trust::Cidr;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// At most this many versions: they end up in metric labels, and a bounded set
/// keeps the metric table (versions x reasons x status classes) small.
pub const MAX_VERSIONS: usize = 16;
/// Longest version name: a DNS label's limit, so names fit Kubernetes labels too.
pub const MAX_VERSION_NAME_LEN: usize = 63;
pub const DEFAULT_ROUTE_HEADER: &str = "x-canary-version";
pub const DEFAULT_METRICS_PREFIX: &str = "canary";
pub const DEFAULT_BUCKETS: u32 = 10_000;
pub const ALLOWED_BUCKETS: [u32; 3] = [100, 1_000, 10_000];
/// Weights are percentages with two decimals: 10000 basis points are 100%.
pub const FULL_WEIGHT_BASIS_POINTS: u32 = 10_000;
pub const DEFAULT_GUARD_MIN_REQUESTS: u64 = 50;
pub const DEFAULT_GUARD_WINDOW_MS: u64 = 30_000;
pub const DEFAULT_GUARD_HOLD_MS: u64 = 600_000;

/// One problem in a config: the JSON path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

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
}

// ---- The JSON as written (serde types) ------------------------------------------
//
// With the `schema` feature these types also derive the JSON Schema of the config
// (`config.schema.json`, `canary-router schema`): the doc comments become its
// descriptions, the `schemars` attributes the constraints that JSON Schema can
// express. The checks that it cannot (sums, cross-references, ordering) stay in
// `validate` below, which is the authority.

/// The plugin configuration of canary-router: Envoy's `config.configuration` (a
/// `google.protobuf.StringValue`) or Istio's `WasmPlugin.pluginConfig`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "canary-router plugin config"))]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The request header the filter sets to the chosen version's name; routes match
    /// on it. Case-insensitive. Must differ from override.header, override.token.header
    /// and hash.header.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN), extend("default" = DEFAULT_ROUTE_HEADER)))]
    route_header: Option<String>,
    /// The versions of the service, in order, with unique names. The first is the
    /// baseline: it has no weight and takes the share the others leave. Every other
    /// version has a weight or a schedule; the weights add up to at most 100.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSIONS), extend(
        "prefixItems" = [{ "$ref": "#/$defs/Version", "not": { "anyOf": [
            { "required": ["weight"], "properties": { "weight": { "type": "number" } } },
            { "required": ["schedule"], "properties": { "schedule": { "type": "object" } } }
        ] } }],
        "items" = { "$ref": "#/$defs/Version", "oneOf": [
            { "required": ["weight"], "properties": { "weight": { "type": "number" } } },
            { "required": ["schedule"], "properties": { "schedule": { "type": "object" } } }
        ] }
    )))]
    versions: Vec<RawVersion>,
    /// Lets a request name its version by a header or a cookie.
    #[serde(rename = "override")]
    override_: Option<RawOverride>,
    /// Version name -> user IDs always sent to that version. A user ID may be listed
    /// under one version only. Needs hash.header or hash.cookie.
    // BTreeMap: errors about users come out in a stable order.
    #[cfg_attr(feature = "schema", schemars(extend(
        "propertyNames" = { "minLength": 1, "maxLength": MAX_VERSION_NAME_LEN, "pattern": VERSION_NAME_PATTERN },
        "default" = {}
    )))]
    users: Option<BTreeMap<String, Vec<String>>>,
    /// Where the user ID comes from and how it is bucketed.
    hash: Option<RawHash>,
    /// Requests without a user ID: drawn independently by the weights ("random"), or
    /// sent to the baseline ("baseline").
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
}

/// Which per-version metrics the filter records.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Metrics"))]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Record P_request_duration_milliseconds (two clock reads and a histogram record
    /// per request).
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    latency: Option<bool>,
    /// Count P_responses_total by status class (a `:status` read per response, which a
    /// guard makes anyway).
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    responses: Option<bool>,
}

/// A version of the service.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Version"))]
#[serde(deny_unknown_fields)]
struct RawVersion {
    /// The version's name: the value of the route header and of the `version` metric
    /// label.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSION_NAME_LEN), regex(pattern = VERSION_NAME_PATTERN)))]
    name: String,
    /// Percentage from 0 to 100 with at most two decimals, and a whole number of
    /// buckets (steps of 1 with hash.buckets 100, 0.1 with 1000, 0.01 with 10000).
    /// Not for the first version.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    weight: Option<f64>,
    /// Instead of weight: a ramp that raises the weight over time.
    schedule: Option<RawSchedule>,
}

/// A ramp: from start + after, the weight is that step's weight.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Schedule"))]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    /// When the ramp starts, an RFC 3339 time such as 2026-12-01T09:00:00Z. Before it
    /// the weight is 0.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    start: String,
    /// The steps, `after` strictly increasing, `weight` never decreasing.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    steps: Vec<RawStep>,
    /// True: between two steps the weight rises linearly (rounded down to whole
    /// buckets).
    #[cfg_attr(feature = "schema", schemars(extend("default" = false)))]
    interpolate: Option<bool>,
}

/// One step of a ramp.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Step"))]
#[serde(deny_unknown_fields)]
struct RawStep {
    /// Time after the start, in whole hours, minutes and seconds: 0s, 90s, 10m, 1h30m.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = DURATION_PATTERN)))]
    after: String,
    /// The weight from then on, a percentage as for a version's weight.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    weight: f64,
}

/// The rollback guard.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Guard"))]
#[serde(deny_unknown_fields)]
struct RawGuard {
    /// The guarded version; not the baseline.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSION_NAME_LEN), regex(pattern = VERSION_NAME_PATTERN)))]
    version: String,
    /// Trip when the failure rate in the window is above this fraction (0.05 = 5%).
    #[cfg_attr(feature = "schema", schemars(range(min = 0), extend("exclusiveMaximum" = 1)))]
    max_error_rate: f64,
    /// Also require the guarded rate to exceed the baseline's by this much (0.02 = 2
    /// points), so that an outage of every version does not roll back the canary.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1)))]
    baseline_margin: Option<f64>,
    /// Responses of the guarded version needed in the window before the guard may
    /// trip.
    #[cfg_attr(feature = "schema", schemars(range(min = 1), extend("default" = DEFAULT_GUARD_MIN_REQUESTS)))]
    min_requests: Option<u64>,
    /// The sliding window over which responses and failures are counted: a duration
    /// longer than 0s.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = DURATION_PATTERN), extend("default" = crate::schedule::format_duration(DEFAULT_GUARD_WINDOW_MS))))]
    window: Option<String>,
    /// Responses that count as failures: status classes ("5xx") and codes ("503").
    #[cfg_attr(feature = "schema", schemars(length(min = 1), inner(regex(pattern = r"^(?:[1-5][xX][xX]|[1-5][0-9][0-9])$")), extend("default" = ["5xx"])))]
    status: Option<Vec<String>>,
    /// How long a tripped guard keeps the version's traffic on the baseline before it
    /// re-arms: a duration, or "forever" (until a new config is loaded).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HOLD_PATTERN), extend("default" = crate::schedule::format_duration(DEFAULT_GUARD_HOLD_MS))))]
    hold: Option<String>,
}

/// Overrides: a request names its version.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Override"))]
#[serde(deny_unknown_fields)]
struct RawOverride {
    /// A request header whose value names a version.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN)))]
    header: Option<String>,
    /// A cookie whose value names a version; read when the header is absent or names
    /// no version.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN)))]
    cookie: Option<String>,
    /// If set, an override counts only when the request also carries the secret.
    token: Option<RawToken>,
    /// If set, an override counts only from a client in one of these IP addresses or
    /// CIDR blocks, such as 10.0.0.0/8 or fd00::/8.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    trusted_sources: Option<Vec<String>>,
}

/// The secret that unlocks overrides.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "OverrideToken"))]
#[serde(deny_unknown_fields)]
struct RawToken {
    /// The header that carries the secret; removed before the request goes upstream.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN)))]
    header: String,
    /// Accepted secrets, each at least 16 visible ASCII characters. Several values
    /// let you rotate.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_TOKEN_VALUES), inner(length(min = MIN_TOKEN_LEN), regex(pattern = r"^[!-~]+$"))))]
    values: Vec<String>,
}

/// Where the user ID comes from and how it is bucketed. Needs header or cookie.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Hash", extend("anyOf" = [
    { "required": ["header"], "properties": { "header": { "type": "string" } } },
    { "required": ["cookie"], "properties": { "cookie": { "type": "string" } } }
])))]
#[serde(deny_unknown_fields)]
struct RawHash {
    /// Request header holding the user ID.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN)))]
    header: Option<String>,
    /// Cookie holding the user ID; read when the header is absent or empty.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN)))]
    cookie: Option<String>,
    /// Prefixed to the user ID (salt:user_id) before hashing. Change it to reshuffle
    /// who is in the canary; use the Unleash group ID to match Unleash.
    #[cfg_attr(feature = "schema", schemars(extend("default" = "")))]
    salt: Option<String>,
    /// Bucket count; weights go in steps of 100 / buckets percent.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = [100, 1000, 10000, null], "default" = DEFAULT_BUCKETS)))]
    buckets: Option<u32>,
}

/// The JSON Schema of the config, generated from the types above.
#[cfg(feature = "schema")]
pub fn json_schema() -> schemars::Schema {
    schemars::schema_for!(RawConfig)
}

// Patterns of the JSON Schema, the same rules as the checks in `validate`.
#[cfg(feature = "schema")]
const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
#[cfg(feature = "schema")]
const VERSION_NAME_PATTERN: &str = r"^[A-Za-z0-9._-]+$";
#[cfg(feature = "schema")]
const DURATION_PATTERN: &str = r"^(?:[0-9]+h(?:[0-9]+m)?(?:[0-9]+s)?|[0-9]+m(?:[0-9]+s)?|[0-9]+s)$";
#[cfg(feature = "schema")]
const HOLD_PATTERN: &str =
    r"^(?:forever|[0-9]+h(?:[0-9]+m)?(?:[0-9]+s)?|[0-9]+m(?:[0-9]+s)?|[0-9]+s)$";

// ---- The validated config -------------------------------------------------------

/// A version of the upstream service, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    pub weight: Weight,
}

/// How a version's share is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weight {
    /// The baseline (first version): whatever the others leave.
    Remainder,
    /// A fixed share, in basis points (hundredths of a percent).
    Fixed(u32),
    /// A share that follows a time-based ramp.
    Scheduled(Schedule),
}

impl Weight {
    /// The share at `now_ms` (unix ms), in basis points; 0 for the baseline.
    pub fn at(&self, now_ms: i64, buckets: u32) -> u32 {
        match self {
            Weight::Remainder => 0,
            Weight::Fixed(bp) => *bp,
            Weight::Scheduled(schedule) => schedule.weight_at(now_ms, buckets),
        }
    }

    /// The largest share it ever takes: the size of its reserved bucket range.
    pub fn max(&self) -> u32 {
        match self {
            Weight::Remainder => 0,
            Weight::Fixed(bp) => *bp,
            Weight::Scheduled(schedule) => schedule.max_weight(),
        }
    }
}

/// The bucket ranges of the versions at one moment. Version `i + 1` owns the
/// buckets `b` with `ranges[i].0 < b <= ranges[i].1`; the baseline owns the rest.
/// Each non-baseline version's range starts where the previous version's largest
/// range ends, so a version's range only grows as its weight ramps up: with fixed
/// weights the ranges are contiguous from bucket 1 (the documented layout), and no
/// ramp ever moves a user from one version to another except out of the baseline.
/// Precomputed, so a decision is a hash and a short scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub buckets: u32,
    pub ranges: Vec<(u32, u32)>,
}

impl Split {
    /// The version index (0 = baseline) that owns `bucket` (1..=`buckets`).
    pub fn version_of_bucket(&self, bucket: u32) -> usize {
        match self
            .ranges
            .iter()
            .position(|&(start, end)| start < bucket && bucket <= end)
        {
            Some(i) => i + 1,
            None => 0,
        }
    }
}

/// Where the user ID comes from and how it is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    pub header: Option<String>,
    pub cookie: Option<String>,
    /// `salt + ":"`, or empty when there is no salt: the bytes hashed before the user ID.
    pub key_prefix: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverrideConfig {
    pub header: Option<String>,
    pub cookie: Option<String>,
    /// If set, an override counts only with this secret in this header.
    pub token: Option<TokenConfig>,
    /// If not empty, an override counts only from these source addresses.
    pub trusted_sources: Vec<Cidr>,
}

/// The secret that unlocks overrides: a header, and the accepted values (several,
/// so that a secret can be rotated without a window where none works).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub header: String,
    pub values: Vec<Vec<u8>>,
}

impl fmt::Debug for TokenConfig {
    // Never print the secrets, wherever a config is debug-printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("header", &self.header)
            .field("values", &format_args!("[{} redacted]", self.values.len()))
            .finish()
    }
}

/// Shortest accepted override token: guessing must be hopeless.
pub const MIN_TOKEN_LEN: usize = 16;
/// At most this many token values: the current secret and the ones being rotated.
pub const MAX_TOKEN_VALUES: usize = 4;

/// Which per-version metrics to record. Each costs host calls on every request, so
/// users who read latency from Envoy's own per-cluster histograms can turn it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `P_request_duration_milliseconds`: two clock reads and a histogram record.
    pub latency: bool,
    /// `P_responses_total`: a `:status` read (still made when a guard needs it).
    pub responses: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            latency: true,
            responses: true,
        }
    }
}

/// A parsed, validated config: everything the per-request decision needs, in the
/// shape it needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub route_header: String,
    pub versions: Vec<Version>,
    pub override_: OverrideConfig,
    /// User ID -> version index.
    pub users: HashMap<Box<[u8]>, usize>,
    pub hash: HashConfig,
    /// 100, 1000 or 10000: user hashes and anonymous draws land in 1..=buckets.
    pub buckets: u32,
    pub anonymous: Anonymous,
    pub metrics_prefix: String,
    pub metrics: MetricsConfig,
    pub guard: Option<GuardConfig>,
    /// murmur3 of the config text: names this config's proxy-wide guard state.
    pub fingerprint: u32,
}

impl Config {
    /// Parses and validates a config. On failure returns every problem found
    /// (a JSON syntax or type error stops at that error; semantic checks all run).
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
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(raw) => raw,
            Err(err) => {
                let path = err.path().to_string();
                // "." is the top level; "?" is serde's placeholder for a syntax error
                // before any field was read: neither names a field.
                let field = if path == "." || path == "?" {
                    String::new()
                } else {
                    path
                };
                return Err(vec![ConfigError::new(field, err.inner().to_string())]);
            }
        };
        if let Err(err) = deserializer.end() {
            return Err(vec![ConfigError::new("", err.to_string())]);
        }
        let mut config = validate(raw)?;
        config.fingerprint = crate::bucket::hash_key(b"", bytes);
        Ok(config)
    }

    /// Each version's share at `now_ms` (unix ms), in basis points; the baseline's
    /// is what the others leave.
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
    pub fn is_scheduled(&self) -> bool {
        self.versions
            .iter()
            .any(|v| matches!(v.weight, Weight::Scheduled(_)))
    }

    /// The index of the version with this exact name.
    pub fn version_index(&self, name: &[u8]) -> Option<usize> {
        self.versions.iter().position(|v| v.name.as_bytes() == name)
    }
}

fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();

    let route_header = match raw.route_header {
        Some(h) => checked_header_name("route_header", &h, &mut errors),
        None => DEFAULT_ROUTE_HEADER.to_string(),
    };

    let buckets = match raw.hash.as_ref().and_then(|h| h.buckets) {
        Some(b) if ALLOWED_BUCKETS.contains(&b) => b,
        Some(b) => {
            errors.push(ConfigError::new(
                "hash.buckets",
                format!("{b} is not one of 100, 1000, 10000"),
            ));
            DEFAULT_BUCKETS
        }
        None => DEFAULT_BUCKETS,
    };

    let versions = validate_versions(&raw.versions, buckets, &mut errors);

    let override_ = match raw.override_ {
        Some(o) => validate_override(o, &mut errors),
        None => OverrideConfig::default(),
    };

    let hash = match raw.hash {
        Some(h) => {
            if h.header.is_none() && h.cookie.is_none() {
                errors.push(ConfigError::new(
                    "hash",
                    "names neither a header nor a cookie to read the user ID from",
                ));
            }
            let key_prefix = match h.salt.as_deref() {
                None | Some("") => Vec::new(),
                Some(salt) => format!("{salt}:").into_bytes(),
            };
            HashConfig {
                header: h
                    .header
                    .map(|n| checked_header_name("hash.header", &n, &mut errors)),
                cookie: h
                    .cookie
                    .map(|c| checked_cookie_name("hash.cookie", &c, &mut errors)),
                key_prefix,
            }
        }
        None => HashConfig {
            header: None,
            cookie: None,
            key_prefix: Vec::new(),
        },
    };

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

    let users = match raw.users {
        Some(users) => {
            if !users.is_empty() && hash.header.is_none() && hash.cookie.is_none() {
                errors.push(ConfigError::new(
                    "users",
                    "needs hash.header or hash.cookie to read the user ID from",
                ));
            }
            validate_users(&users, &versions, &mut errors)
        }
        None => HashMap::new(),
    };

    let metrics_prefix = match raw.metrics_prefix {
        Some(p) => {
            if !is_metric_name(&p) {
                errors.push(ConfigError::new(
                    "metrics_prefix",
                    format!("`{p}` is not a metric name: use 1 to 64 of [A-Za-z0-9_], not starting with a digit"),
                ));
            }
            p
        }
        None => DEFAULT_METRICS_PREFIX.to_string(),
    };

    let guard = raw
        .guard
        .and_then(|g| validate_guard(g, &versions, &mut errors));

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
        anonymous: raw.anonymous.unwrap_or_default(),
        metrics_prefix,
        metrics: raw
            .metrics
            .map_or_else(MetricsConfig::default, |m| MetricsConfig {
                latency: m.latency.unwrap_or(true),
                responses: m.responses.unwrap_or(true),
            }),
        guard,
        fingerprint: 0,
    })
}

fn validate_override(raw: RawOverride, errors: &mut Vec<ConfigError>) -> OverrideConfig {
    let header = raw
        .header
        .map(|h| checked_header_name("override.header", &h, errors));
    let cookie = raw
        .cookie
        .map(|c| checked_cookie_name("override.cookie", &c, errors));
    let unlocks_nothing = header.is_none() && cookie.is_none();
    let token = raw.token.map(|t| {
        if unlocks_nothing {
            errors.push(ConfigError::new(
                "override.token",
                "there is no override.header or override.cookie for it to protect",
            ));
        }
        let header = checked_header_name("override.token.header", &t.header, errors);
        if t.values.is_empty() || t.values.len() > MAX_TOKEN_VALUES {
            errors.push(ConfigError::new(
                "override.token.values",
                format!("{} values; give 1 to {MAX_TOKEN_VALUES} (the current secret, and the next while rotating)", t.values.len()),
            ));
        }
        for (i, value) in t.values.iter().enumerate() {
            // The message never repeats the secret.
            if value.len() < MIN_TOKEN_LEN {
                errors.push(ConfigError::new(
                    format!("override.token.values[{i}]"),
                    format!("{} characters; a token needs at least {MIN_TOKEN_LEN}", value.len()),
                ));
            }
            if value.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                errors.push(ConfigError::new(
                    format!("override.token.values[{i}]"),
                    "use visible ASCII characters only, so that it survives as a header value",
                ));
            }
        }
        TokenConfig {
            header,
            values: t.values.into_iter().map(String::into_bytes).collect(),
        }
    });
    let trusted_sources = raw
        .trusted_sources
        .map(|sources| {
            if unlocks_nothing {
                errors.push(ConfigError::new(
                    "override.trusted_sources",
                    "there is no override.header or override.cookie for it to protect",
                ));
            }
            if sources.is_empty() {
                errors.push(ConfigError::new(
                    "override.trusted_sources",
                    "is empty, which would trust nobody: leave it out to trust every source",
                ));
            }
            sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    Cidr::parse(s)
                        .map_err(|msg| {
                            errors.push(ConfigError::new(
                                format!("override.trusted_sources[{i}]"),
                                msg,
                            ))
                        })
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    OverrideConfig {
        header,
        cookie,
        token,
        trusted_sources,
    }
}

fn validate_versions(
    raw: &[RawVersion],
    buckets: u32,
    errors: &mut Vec<ConfigError>,
) -> Vec<Version> {
    if raw.is_empty() {
        errors.push(ConfigError::new("versions", "needs at least one version"));
    }
    if raw.len() > MAX_VERSIONS {
        errors.push(ConfigError::new(
            "versions",
            format!("{} versions; at most {MAX_VERSIONS} are allowed", raw.len()),
        ));
    }
    let mut versions = Vec::with_capacity(raw.len());
    let mut total: u64 = 0;
    for (i, v) in raw.iter().enumerate() {
        let field = format!("versions[{i}]");
        if let Some(problem) = version_name_problem(&v.name) {
            errors.push(ConfigError::new(format!("{field}.name"), problem));
        }
        if let Some(first) = raw[..i].iter().position(|o| o.name == v.name) {
            errors.push(ConfigError::new(
                format!("{field}.name"),
                format!("`{}` is already the name of versions[{first}]", v.name),
            ));
        }
        let weight = match (i, v.weight, &v.schedule) {
            (0, None, None) => Weight::Remainder,
            (0, _, _) => {
                let what = if v.weight.is_some() {
                    "weight"
                } else {
                    "schedule"
                };
                errors.push(ConfigError::new(
                    format!("{field}.{what}"),
                    format!("the first version is the baseline: it takes the share the others leave and has no {what}"),
                ));
                Weight::Remainder
            }
            (_, Some(_), Some(_)) => {
                errors.push(ConfigError::new(
                    format!("{field}.schedule"),
                    "a version has either a weight or a schedule, not both",
                ));
                Weight::Fixed(0)
            }
            (_, None, None) => {
                errors.push(ConfigError::new(
                    format!("{field}.weight"),
                    "missing: every version after the first needs a weight (a percentage from 0 to 100) or a schedule",
                ));
                Weight::Fixed(0)
            }
            (_, Some(w), None) => match weight_to_basis_points(w, buckets) {
                Ok(bp) => Weight::Fixed(bp),
                Err(msg) => {
                    errors.push(ConfigError::new(format!("{field}.weight"), msg));
                    Weight::Fixed(0)
                }
            },
            (_, None, Some(schedule)) => {
                match validate_schedule(&format!("{field}.schedule"), schedule, buckets, errors) {
                    Some(schedule) => Weight::Scheduled(schedule),
                    None => Weight::Fixed(0),
                }
            }
        };
        total += u64::from(weight.max());
        versions.push(Version {
            name: v.name.clone(),
            weight,
        });
    }
    if total > u64::from(FULL_WEIGHT_BASIS_POINTS) {
        errors.push(ConfigError::new(
            "versions",
            format!(
                "the weights add up to {}, above 100 (a schedule counts with its last step)",
                format_basis_points(total)
            ),
        ));
    }
    versions
}

fn validate_schedule(
    field: &str,
    raw: &RawSchedule,
    buckets: u32,
    errors: &mut Vec<ConfigError>,
) -> Option<Schedule> {
    let before = errors.len();
    let start_ms = parse_rfc3339(&raw.start)
        .map_err(|msg| errors.push(ConfigError::new(format!("{field}.start"), msg)))
        .unwrap_or(0);
    if raw.steps.is_empty() {
        errors.push(ConfigError::new(
            format!("{field}.steps"),
            "needs at least one step",
        ));
    }
    let mut steps: Vec<Step> = Vec::with_capacity(raw.steps.len());
    for (j, step) in raw.steps.iter().enumerate() {
        let step_field = format!("{field}.steps[{j}]");
        let after_ms = parse_duration(&step.after)
            .map_err(|msg| errors.push(ConfigError::new(format!("{step_field}.after"), msg)));
        let weight = weight_to_basis_points(step.weight, buckets)
            .map_err(|msg| errors.push(ConfigError::new(format!("{step_field}.weight"), msg)));
        let (Ok(after_ms), Ok(weight_basis_points)) = (after_ms, weight) else {
            continue;
        };
        if let Some(previous) = steps.last() {
            if after_ms <= previous.after_ms {
                errors.push(ConfigError::new(
                    format!("{step_field}.after"),
                    format!(
                        "`{}` is not later than the step before it: steps go in increasing time",
                        step.after
                    ),
                ));
            }
            if weight_basis_points < previous.weight_basis_points {
                errors.push(ConfigError::new(
                    format!("{step_field}.weight"),
                    format!(
                        "{} is below the step before it ({}): a ramp never goes down (roll back by changing the config)",
                        step.weight,
                        format_basis_points(previous.weight_basis_points.into())
                    ),
                ));
            }
        }
        steps.push(Step {
            after_ms,
            weight_basis_points,
        });
    }
    (errors.len() == before).then_some(Schedule {
        start_ms,
        steps,
        interpolate: raw.interpolate.unwrap_or(false),
    })
}

fn validate_guard(
    raw: RawGuard,
    versions: &[Version],
    errors: &mut Vec<ConfigError>,
) -> Option<GuardConfig> {
    let before = errors.len();
    let version = match versions.iter().position(|v| v.name == raw.version) {
        Some(0) => {
            errors.push(ConfigError::new(
                "guard.version",
                format!("`{}` is the baseline, where a tripped guard sends traffic; guard another version", raw.version),
            ));
            0
        }
        Some(i) => i,
        None => {
            errors.push(ConfigError::new(
                "guard.version",
                format!("no version is named `{}`", raw.version),
            ));
            0
        }
    };
    let rate_ok = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
    if !rate_ok(raw.max_error_rate) || raw.max_error_rate >= 1.0 {
        errors.push(ConfigError::new(
            "guard.max_error_rate",
            format!(
                "{} is not a fraction from 0 up to (not including) 1, such as 0.05 for 5%",
                raw.max_error_rate
            ),
        ));
    }
    if let Some(margin) = raw.baseline_margin {
        if !rate_ok(margin) {
            errors.push(ConfigError::new(
                "guard.baseline_margin",
                format!("{margin} is not a fraction from 0 to 1, such as 0.02 for 2 points"),
            ));
        }
    }
    let min_requests = raw.min_requests.unwrap_or(DEFAULT_GUARD_MIN_REQUESTS);
    if min_requests == 0 {
        errors.push(ConfigError::new(
            "guard.min_requests",
            "must be at least 1: a guard needs evidence before it trips",
        ));
    }
    let window_ms = match raw.window.as_deref() {
        None => DEFAULT_GUARD_WINDOW_MS,
        Some(text) => match parse_duration(text) {
            Ok(0) => {
                errors.push(ConfigError::new("guard.window", "must be longer than 0s"));
                1000
            }
            Ok(ms) => ms,
            Err(msg) => {
                errors.push(ConfigError::new("guard.window", msg));
                1000
            }
        },
    };
    let status = match raw.status {
        None => StatusMatcher::parse(&["5xx".to_string()]).ok(),
        Some(entries) if entries.is_empty() => {
            errors.push(ConfigError::new(
                "guard.status",
                "needs at least one status class or code, such as \"5xx\"",
            ));
            None
        }
        Some(entries) => StatusMatcher::parse(&entries)
            .map_err(|(i, msg)| errors.push(ConfigError::new(format!("guard.status[{i}]"), msg)))
            .ok(),
    };
    let hold_ms = match raw.hold.as_deref() {
        None => Some(DEFAULT_GUARD_HOLD_MS),
        Some("forever") => None,
        Some(text) => match parse_duration(text) {
            Ok(ms) => Some(ms),
            Err(msg) => {
                errors.push(ConfigError::new(
                    "guard.hold",
                    format!("{msg}, or \"forever\""),
                ));
                None
            }
        },
    };
    if errors.len() != before {
        return None;
    }
    Some(GuardConfig {
        version,
        max_error_rate: raw.max_error_rate,
        baseline_margin: raw.baseline_margin,
        min_requests,
        window_ms,
        status: status?,
        hold_ms,
    })
}

/// Converts a percentage to basis points, checking its range, its precision and
/// that it maps to a whole number of buckets.
pub fn weight_to_basis_points(weight: f64, buckets: u32) -> Result<u32, String> {
    if !weight.is_finite() {
        return Err(format!("{weight} is not a number"));
    }
    if weight < 0.0 {
        return Err(format!("{weight} is below 0"));
    }
    if weight > 100.0 {
        return Err(format!("{weight} is above 100"));
    }
    let scaled = weight * 100.0;
    let bp = scaled.round();
    if (scaled - bp).abs() > 1e-6 {
        return Err(format!(
            "{weight} has more than two decimals (0.01 is the smallest step)"
        ));
    }
    // In range 0..=10000 after the checks above, so the cast is exact.
    let bp = bp as u32;
    if (u64::from(bp) * u64::from(buckets)) % u64::from(FULL_WEIGHT_BASIS_POINTS) != 0 {
        let step = f64::from(FULL_WEIGHT_BASIS_POINTS / buckets) / 100.0;
        return Err(format!(
            "{weight} is not a whole number of buckets: with hash.buckets = {buckets} weights go in steps of {step}"
        ));
    }
    Ok(bp)
}

fn validate_users(
    users: &BTreeMap<String, Vec<String>>,
    versions: &[Version],
    errors: &mut Vec<ConfigError>,
) -> HashMap<Box<[u8]>, usize> {
    let mut map: HashMap<Box<[u8]>, usize> = HashMap::new();
    let mut listed_under: HashMap<&str, &str> = HashMap::new();
    for (version, ids) in users {
        let field = format!("users.{version}");
        let Some(index) = versions.iter().position(|v| &v.name == version) else {
            errors.push(ConfigError::new(
                field,
                format!("no version is named `{version}`"),
            ));
            continue;
        };
        for (j, id) in ids.iter().enumerate() {
            if id.is_empty() {
                errors.push(ConfigError::new(
                    format!("{field}[{j}]"),
                    "an empty user ID never matches (an empty value counts as no user ID)",
                ));
                continue;
            }
            match listed_under.insert(id.as_str(), version.as_str()) {
                Some(other) if other != version => errors.push(ConfigError::new(
                    format!("{field}[{j}]"),
                    format!("this user ID is also listed under users.{other}"),
                )),
                _ => {
                    map.insert(id.as_bytes().into(), index);
                }
            }
        }
    }
    map
}

fn version_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_string());
    }
    if name.len() > MAX_VERSION_NAME_LEN {
        return Some(format!(
            "{} characters; at most {MAX_VERSION_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some(format!(
            "`{}` has characters outside [A-Za-z0-9._-]",
            name.escape_debug()
        ));
    }
    None
}

/// RFC 9110 token characters: what a header or cookie name may contain.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Header names are compared in lower case, as Envoy stores them.
fn checked_header_name(field: &str, name: &str, errors: &mut Vec<ConfigError>) -> String {
    if !is_token(name) {
        errors.push(ConfigError::new(
            field,
            format!(
                "`{}` is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~; no pseudo-headers)",
                name.escape_debug()
            ),
        ));
    }
    name.to_ascii_lowercase()
}

fn checked_cookie_name(field: &str, name: &str, errors: &mut Vec<ConfigError>) -> String {
    if !is_token(name) {
        errors.push(ConfigError::new(
            field,
            format!(
                "`{}` is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                name.escape_debug()
            ),
        ));
    }
    name.to_string()
}

fn is_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// `1025` -> `"10.25"`, `1000` -> `"10"`: how weights read in messages.
pub fn format_basis_points(bp: u64) -> String {
    if bp % 100 == 0 {
        format!("{}", bp / 100)
    } else if bp % 10 == 0 {
        format!("{}.{}", bp / 100, (bp % 100) / 10)
    } else {
        format!("{}.{:02}", bp / 100, bp % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, Vec<ConfigError>> {
        Config::from_json(json.as_bytes())
    }

    fn errors_of(json: &str) -> Vec<String> {
        match parse(json) {
            Ok(_) => panic!("config was accepted: {json}"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn assert_rejected(json: &str, expected: &str) {
        let errors = errors_of(json);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "expected an error containing {expected:?}, got {errors:?}"
        );
    }

    const FULL: &str = r#"{
      "route_header": "x-canary-version",
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 10 } ],
      "override": { "header": "x-canary", "cookie": "canary" },
      "users": { "canary": ["qa-alice", "qa-bob"] },
      "hash": { "header": "x-user-id", "cookie": "uid", "salt": "checkout-v2", "buckets": 10000 },
      "anonymous": "random",
      "metrics_prefix": "canary"
    }"#;

    #[test]
    fn the_documented_example_parses_with_every_field() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.route_header, "x-canary-version");
        assert_eq!(c.versions.len(), 2);
        assert_eq!(c.weights_at(0), vec![9000, 1000]);
        assert_eq!(c.versions[0].weight, Weight::Remainder);
        assert_eq!(c.versions[1].weight, Weight::Fixed(1000));
        assert!(!c.is_scheduled());
        assert_eq!(c.guard, None);
        assert_eq!(c.override_.header.as_deref(), Some("x-canary"));
        assert_eq!(c.override_.cookie.as_deref(), Some("canary"));
        assert_eq!(c.users.get(b"qa-alice".as_slice()), Some(&1));
        assert_eq!(c.users.get(b"qa-bob".as_slice()), Some(&1));
        assert_eq!(c.hash.header.as_deref(), Some("x-user-id"));
        assert_eq!(c.hash.cookie.as_deref(), Some("uid"));
        assert_eq!(c.hash.key_prefix, b"checkout-v2:");
        assert_eq!(
            c.split_at(0),
            Split {
                buckets: 10000,
                ranges: vec![(0, 1000)]
            }
        );
        assert_eq!(c.anonymous, Anonymous::Random);
        assert_eq!(c.metrics_prefix, "canary");
    }

    #[test]
    fn defaults_apply_to_a_minimal_config() {
        let c = parse(r#"{"versions":[{"name":"stable"}]}"#).unwrap();
        assert_eq!(c.route_header, DEFAULT_ROUTE_HEADER);
        assert_eq!(c.metrics_prefix, DEFAULT_METRICS_PREFIX);
        assert_eq!(
            c.metrics,
            MetricsConfig {
                latency: true,
                responses: true
            }
        );
        assert_eq!(c.anonymous, Anonymous::Random);
        assert_eq!(c.buckets, DEFAULT_BUCKETS);
        assert!(c.split_at(0).ranges.is_empty());
        assert_eq!(c.override_, OverrideConfig::default());
        assert!(c.hash.header.is_none() && c.hash.cookie.is_none());
        assert!(c.users.is_empty());
        assert_eq!(c.weights_at(0), vec![10000]);
    }

    #[test]
    fn header_names_are_lower_cased() {
        let c = parse(
            r#"{"route_header":"X-Route","versions":[{"name":"a"}],
                "override":{"header":"X-Canary"},"hash":{"header":"X-User-ID"}}"#,
        )
        .unwrap();
        assert_eq!(c.route_header, "x-route");
        assert_eq!(c.override_.header.as_deref(), Some("x-canary"));
        assert_eq!(c.hash.header.as_deref(), Some("x-user-id"));
    }

    #[test]
    fn a_salt_becomes_a_key_prefix_and_an_empty_salt_none() {
        let c = parse(r#"{"versions":[{"name":"a"}],"hash":{"header":"u","salt":""}}"#).unwrap();
        assert!(c.hash.key_prefix.is_empty());
        let c = parse(r#"{"versions":[{"name":"a"}],"hash":{"header":"u"}}"#).unwrap();
        assert!(c.hash.key_prefix.is_empty());
    }

    #[test]
    fn weights_with_two_decimals_map_to_basis_points() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":0.25},{"name":"b","weight":33.33},{"name":"c","weight":0}]}"#,
        )
        .unwrap();
        let bps = c.weights_at(0);
        assert_eq!(bps, vec![10000 - 25 - 3333, 25, 3333, 0]);
        assert_eq!(
            c.split_at(0).ranges,
            vec![(0, 25), (25, 3358), (3358, 3358)]
        );
    }

    #[test]
    fn split_ranges_follow_list_order_per_bucket_count() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":10},{"name":"b","weight":20}],"hash":{"header":"u","buckets":100}}"#,
        )
        .unwrap();
        assert_eq!(
            c.split_at(0),
            Split {
                buckets: 100,
                ranges: vec![(0, 10), (10, 30)]
            }
        );
        assert_eq!(c.split_at(0).version_of_bucket(1), 1);
        assert_eq!(c.split_at(0).version_of_bucket(10), 1);
        assert_eq!(c.split_at(0).version_of_bucket(11), 2);
        assert_eq!(c.split_at(0).version_of_bucket(30), 2);
        assert_eq!(c.split_at(0).version_of_bucket(31), 0);
        assert_eq!(c.split_at(0).version_of_bucket(100), 0);
    }

    #[test]
    fn weights_may_add_up_to_exactly_100() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":60},{"name":"b","weight":40}]}"#,
        )
        .unwrap();
        assert_eq!(c.weights_at(0)[0], 0);
        assert_eq!(c.split_at(0).ranges, vec![(0, 6000), (6000, 10000)]);
    }

    #[test]
    fn the_issue_example_error_reads_as_documented() {
        assert_eq!(
            errors_of(r#"{"versions":[{"name":"stable"},{"name":"canary","weight":120}]}"#),
            vec!["versions[1].weight: 120 is above 100".to_string()]
        );
    }

    #[test]
    fn every_weight_error_names_its_field() {
        let v = |w: &str| format!(r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":{w}}}]}}"#);
        assert_rejected(&v("-1"), "versions[1].weight: -1 is below 0");
        assert_rejected(&v("100.5"), "versions[1].weight: 100.5 is above 100");
        assert_rejected(
            &v("0.125"),
            "versions[1].weight: 0.125 has more than two decimals",
        );
        assert_rejected(
            &v("\"10\""),
            "versions[1].weight: invalid type: string \"10\"",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c"}]}"#,
            "versions[1].weight: missing",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s","weight":5}]}"#,
            "versions[0].weight: the first version is the baseline",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":60},{"name":"b","weight":40.5}]}"#,
            "versions: the weights add up to 100.5, above 100",
        );
    }

    #[test]
    fn weights_must_be_whole_buckets() {
        let cfg = |w: &str, b: u32| {
            format!(
                r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":{w}}}],"hash":{{"header":"u","buckets":{b}}}}}"#
            )
        };
        assert_rejected(
            &cfg("0.5", 100),
            "versions[1].weight: 0.5 is not a whole number of buckets: with hash.buckets = 100 weights go in steps of 1",
        );
        assert_rejected(
            &cfg("0.25", 1000),
            "versions[1].weight: 0.25 is not a whole number of buckets: with hash.buckets = 1000 weights go in steps of 0.1",
        );
        assert!(parse(&cfg("0.2", 1000)).is_ok());
        assert!(parse(&cfg("7", 100)).is_ok());
        assert!(parse(&cfg("0.01", 10000)).is_ok());
        assert_rejected(
            &cfg("5", 500),
            "hash.buckets: 500 is not one of 100, 1000, 10000",
        );
    }

    #[test]
    fn every_version_list_error_names_its_field() {
        assert_rejected(r#"{"versions":[]}"#, "versions: needs at least one version");
        let many: Vec<String> = (0..17)
            .map(|i| {
                if i == 0 {
                    r#"{"name":"v0"}"#.to_string()
                } else {
                    format!(r#"{{"name":"v{i}","weight":1}}"#)
                }
            })
            .collect();
        assert_rejected(
            &format!(r#"{{"versions":[{}]}}"#, many.join(",")),
            "versions: 17 versions; at most 16 are allowed",
        );
        assert_rejected(
            r#"{"versions":[{"name":""}]}"#,
            "versions[0].name: must not be empty",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"can ary","weight":1}]}"#,
            "versions[1].name: `can ary` has characters outside [A-Za-z0-9._-]",
        );
        assert_rejected(
            &format!(r#"{{"versions":[{{"name":"{}"}}]}}"#, "a".repeat(64)),
            "versions[0].name: 64 characters; at most 63 are allowed",
        );
        assert!(parse(&format!(
            r#"{{"versions":[{{"name":"{}"}}]}}"#,
            "a".repeat(63)
        ))
        .is_ok());
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"s","weight":1}]}"#,
            "versions[1].name: `s` is already the name of versions[0]",
        );
        assert_rejected(r#"{"route_header":"x"}"#, "missing field `versions`");
        assert_rejected(
            r#"{"versions":[{"name":"s","colour":"red"}]}"#,
            "versions[0].colour: unknown field `colour`, expected one of `name`, `weight`, `schedule`",
        );
    }

    #[test]
    fn unknown_fields_and_bad_json_are_rejected_with_their_place() {
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"wieght":3}"#,
            "wieght: unknown field `wieght`",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"hash":{"header":"u","bucket":100}}"#,
            "hash.bucket: unknown field `bucket`",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"override":{"headr":"x"}}"#,
            "override.headr: unknown field `headr`",
        );
        assert_rejected(r#"{"versions":[{"name":"s"}"#, "EOF while parsing");
        // A syntax error names no field rather than serde's placeholder "?".
        for truncated in [r#"{"versions":[{"name":"s"}"#, r#"{"versions""#, "{"] {
            for e in errors_of(truncated) {
                assert!(!e.starts_with('?') && !e.starts_with(':'), "{e}");
            }
        }
        assert_rejected("", "the config is empty");
        assert_rejected(" \n", "the config is empty");
        assert_rejected("[]", "the config must be a JSON object");
        assert_rejected("\"x\"", "the config must be a JSON object");
        assert_rejected(
            r#"{"versions":[{"name":"s"}]} trailing"#,
            "trailing characters",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"anonymous":"sometimes"}"#,
            "anonymous: unknown variant `sometimes`",
        );
    }

    #[test]
    fn header_cookie_and_prefix_errors_name_their_field() {
        assert_rejected(
            r#"{"route_header":"x route","versions":[{"name":"s"}]}"#,
            "route_header: `x route` is not an HTTP header name",
        );
        assert_rejected(
            r#"{"route_header":":authority","versions":[{"name":"s"}]}"#,
            "route_header: `:authority` is not an HTTP header name",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"override":{"cookie":"a=b"}}"#,
            "override.cookie: `a=b` is not a cookie name",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"hash":{"header":""}}"#,
            "hash.header: `` is not an HTTP header name",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"hash":{"salt":"x"}}"#,
            "hash: names neither a header nor a cookie",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"metrics_prefix":"9lives"}"#,
            "metrics_prefix: `9lives` is not a metric name",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"metrics_prefix":"a-b"}"#,
            "metrics_prefix: `a-b` is not a metric name",
        );
    }

    #[test]
    fn the_route_header_cannot_double_as_an_input() {
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"override":{"header":"X-Canary-Version"}}"#,
            "override.header: `x-canary-version` is the route_header",
        );
        assert_rejected(
            r#"{"route_header":"x-v","versions":[{"name":"s"}],"hash":{"header":"x-v"}}"#,
            "hash.header: `x-v` is the route_header",
        );
    }

    #[test]
    fn user_list_errors_name_their_field() {
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"hash":{"header":"u"},"users":{"canary":["a"]}}"#,
            "users.canary: no version is named `canary`",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"hash":{"header":"u"},"users":{"c":["a",""]}}"#,
            "users.c[1]: an empty user ID never matches",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"hash":{"header":"u"},"users":{"c":["a"],"s":["b","a"]}}"#,
            "users.s[1]: this user ID is also listed under users.c",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"users":{"c":["a"]}}"#,
            "users: needs hash.header or hash.cookie",
        );
    }

    #[test]
    fn all_semantic_errors_are_reported_at_once() {
        let errors = errors_of(
            r#"{"route_header":"bad header","versions":[{"name":"s"},{"name":"c","weight":120}],"metrics_prefix":"-"}"#,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    const RAMP: &str = r#"{
      "versions": [
        { "name": "stable" },
        { "name": "canary", "schedule": { "start": "2026-12-01T09:00:00Z",
            "steps": [ { "after": "0s", "weight": 1 }, { "after": "10m", "weight": 5 },
                       { "after": "30m", "weight": 25 }, { "after": "1h", "weight": 50 },
                       { "after": "2h", "weight": 100 } ],
            "interpolate": false } }
      ],
      "hash": { "header": "x-user-id" }
    }"#;
    const START: i64 = 1_796_115_600_000;

    #[test]
    fn the_documented_ramp_parses_and_moves_the_split() {
        let c = parse(RAMP).unwrap();
        assert!(c.is_scheduled());
        assert_eq!(c.weights_at(START - 1), vec![10000, 0]);
        assert_eq!(c.weights_at(START), vec![9900, 100]);
        assert_eq!(c.weights_at(START + 45 * 60_000), vec![7500, 2500]);
        assert_eq!(c.weights_at(START + 3 * 3_600_000), vec![0, 10000]);
        assert_eq!(c.split_at(START + 600_000).ranges, vec![(0, 500)]);
    }

    #[test]
    fn scheduled_ranges_are_reserved_so_no_user_moves_between_canaries() {
        // Two ramps: b's range starts after a's largest range, not after a's current one.
        let c = parse(
            r#"{"versions":[{"name":"s"},
                {"name":"a","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":10},{"after":"1h","weight":30}]}},
                {"name":"b","weight":20}],"hash":{"header":"u"}}"#,
        )
        .unwrap();
        assert_eq!(c.split_at(START).ranges, vec![(0, 1000), (3000, 5000)]);
        assert_eq!(
            c.split_at(START + 3_600_000).ranges,
            vec![(0, 3000), (3000, 5000)]
        );
        assert_eq!(c.weights_at(START), vec![7000, 1000, 2000]);
        let split = c.split_at(START);
        assert_eq!(split.version_of_bucket(1000), 1);
        assert_eq!(
            split.version_of_bucket(1001),
            0,
            "reserved for a's ramp, meanwhile baseline"
        );
        assert_eq!(split.version_of_bucket(3001), 2);
    }

    #[test]
    fn every_schedule_error_names_its_field() {
        let v = |schedule: &str| {
            format!(
                r#"{{"versions":[{{"name":"s"}},{{"name":"c","schedule":{schedule}}}],"hash":{{"header":"u","buckets":100}}}}"#
            )
        };
        assert_rejected(
            &v(r#"{"start":"tomorrow","steps":[{"after":"0s","weight":1}]}"#),
            "versions[1].schedule.start: `tomorrow` is not an RFC 3339 time",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[]}"#),
            "versions[1].schedule.steps: needs at least one step",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"10","weight":1}]}"#),
            "versions[1].schedule.steps[0].after: `10` is not a duration",
        );
        assert_rejected(
            &v(
                r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"0s","weight":2}]}"#,
            ),
            "versions[1].schedule.steps[1].after: `0s` is not later than the step before it",
        );
        assert_rejected(
            &v(
                r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":5},{"after":"1m","weight":2}]}"#,
            ),
            "versions[1].schedule.steps[1].weight: 2 is below the step before it (5)",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":0.5}]}"#),
            "versions[1].schedule.steps[0].weight: 0.5 is not a whole number of buckets",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":101}]}"#),
            "versions[1].schedule.steps[0].weight: 101 is above 100",
        );
        assert_rejected(
            &v(
                r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1}],"every":"1m"}"#,
            ),
            "versions[1].schedule.every: unknown field `every`",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":5,"schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1}]}}]}"#,
            "versions[1].schedule: a version has either a weight or a schedule, not both",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1}]}}]}"#,
            "versions[0].schedule: the first version is the baseline",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":60},
                {"name":"c","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"1h","weight":50}]}}]}"#,
            "versions: the weights add up to 110, above 100 (a schedule counts with its last step)",
        );
    }

    const GUARD: &str = r#"{"versions":[{"name":"stable"},{"name":"canary","weight":10}],
        "guard": { "version": "canary", "max_error_rate": 0.05, "min_requests": 50,
                   "window": "30s", "status": ["5xx", "429"], "hold": "10m" }}"#;

    #[test]
    fn the_documented_guard_parses_with_defaults_for_what_is_left_out() {
        let c = parse(GUARD).unwrap();
        let g = c.guard.unwrap();
        assert_eq!(g.version, 1);
        assert_eq!(g.max_error_rate, 0.05);
        assert_eq!(g.min_requests, 50);
        assert_eq!(g.window_ms, 30_000);
        assert_eq!(g.hold_ms, Some(600_000));
        assert!(g.status.is_failure(429, false) && g.status.is_failure(500, false));
        assert_eq!(g.baseline_margin, None);

        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"guard":{"version":"c","max_error_rate":0.1,"hold":"forever","baseline_margin":0.02}}"#,
        )
        .unwrap();
        let g = c.guard.unwrap();
        assert_eq!(
            (g.min_requests, g.window_ms, g.hold_ms, g.baseline_margin),
            (
                DEFAULT_GUARD_MIN_REQUESTS,
                DEFAULT_GUARD_WINDOW_MS,
                None,
                Some(0.02)
            )
        );
        assert!(g.status.is_failure(503, false) && !g.status.is_failure(429, false));
    }

    #[test]
    fn every_guard_error_names_its_field() {
        let g = |guard: &str| {
            format!(
                r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","weight":10}}],"guard":{guard}}}"#
            )
        };
        assert_rejected(
            &g(r#"{"version":"nightly","max_error_rate":0.1}"#),
            "guard.version: no version is named `nightly`",
        );
        assert_rejected(
            &g(r#"{"version":"stable","max_error_rate":0.1}"#),
            "guard.version: `stable` is the baseline",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":1.5}"#),
            "guard.max_error_rate: 1.5 is not a fraction",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":-0.1}"#),
            "guard.max_error_rate: -0.1 is not a fraction",
        );
        assert_rejected(
            &g(r#"{"version":"canary"}"#),
            "guard: missing field `max_error_rate`",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"min_requests":0}"#),
            "guard.min_requests: must be at least 1",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"min_requests":-5}"#),
            "guard.min_requests: invalid value",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"window":"0s"}"#),
            "guard.window: must be longer than 0s",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"window":"30"}"#),
            "guard.window: `30` is not a duration",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"status":[]}"#),
            "guard.status: needs at least one",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"status":["5xx","oops"]}"#),
            "guard.status[1]: `oops` is neither",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"hold":"always"}"#),
            "guard.hold: `always` is not a duration",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"baseline_margin":2}"#),
            "guard.baseline_margin: 2 is not a fraction",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"trip":true}"#),
            "guard.trip: unknown field `trip`",
        );
    }

    #[test]
    fn the_fingerprint_tells_configs_apart() {
        let a = parse(GUARD).unwrap();
        let b = parse(&GUARD.replace("0.05", "0.06")).unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint, parse(GUARD).unwrap().fingerprint);
    }

    #[test]
    fn override_tokens_and_trusted_sources_parse_and_never_show_the_secret() {
        let c = parse(
            r#"{"versions":[{"name":"s"}],"override":{"header":"x-canary",
                "token":{"header":"X-Canary-Token","values":["0123456789abcdef","fedcba9876543210"]},
                "trusted_sources":["10.0.0.0/8","::1"]}}"#,
        )
        .unwrap();
        let token = c.override_.token.clone().unwrap();
        assert_eq!(token.header, "x-canary-token");
        assert_eq!(
            token.values,
            vec![b"0123456789abcdef".to_vec(), b"fedcba9876543210".to_vec()]
        );
        assert_eq!(c.override_.trusted_sources.len(), 2);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("0123456789abcdef") && debug.contains("[2 redacted]"),
            "{debug}"
        );
    }

    #[test]
    fn override_protection_errors_name_their_field_and_never_the_secret() {
        let o = |json: &str| format!(r#"{{"versions":[{{"name":"s"}}],"override":{json}}}"#);
        let errors = errors_of(&o(
            r#"{"header":"x-c","token":{"header":"x-t","values":["short-secret"]}}"#,
        ));
        assert_eq!(
            errors,
            vec!["override.token.values[0]: 12 characters; a token needs at least 16".to_string()]
        );
        assert_rejected(
            &o(r#"{"header":"x-c","token":{"header":"x-t","values":[]}}"#),
            "override.token.values: 0 values; give 1 to 4",
        );
        assert_rejected(
            &o(r#"{"header":"x-c","token":{"header":"x-t","values":["0123456789 abcdef"]}}"#),
            "override.token.values[0]: use visible ASCII characters only",
        );
        assert_rejected(
            &o(r#"{"token":{"header":"x-t","values":["0123456789abcdef"]}}"#),
            "override.token: there is no override.header or override.cookie for it to protect",
        );
        assert_rejected(
            &o(
                r#"{"header":"x-c","token":{"header":"x-canary-version","values":["0123456789abcdef"]}}"#,
            ),
            "override.token.header: `x-canary-version` is the route_header",
        );
        assert_rejected(
            &o(r#"{"header":"x-c","token":{"values":["0123456789abcdef"]}}"#),
            "override.token: missing field `header`",
        );
        assert_rejected(
            &o(r#"{"header":"x-c","trusted_sources":["10.0.0.0/8","10.0.0.0/40"]}"#),
            "override.trusted_sources[1]: `10.0.0.0/40` is not an IP address or CIDR block",
        );
        assert_rejected(
            &o(r#"{"header":"x-c","trusted_sources":[]}"#),
            "override.trusted_sources: is empty, which would trust nobody",
        );
        assert_rejected(
            &o(r#"{"trusted_sources":["10.0.0.0/8"]}"#),
            "override.trusted_sources: there is no override.header or override.cookie",
        );
    }

    #[test]
    fn metrics_can_be_turned_off_one_by_one() {
        let c = parse(r#"{"versions":[{"name":"s"}],"metrics":{"latency":false}}"#).unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                latency: false,
                responses: true
            }
        );
        let c =
            parse(r#"{"versions":[{"name":"s"}],"metrics":{"responses":false,"latency":false}}"#)
                .unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                latency: false,
                responses: false
            }
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"metrics":{"latency":"no"}}"#,
            "metrics.latency: invalid type: string \"no\", expected a boolean",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"}],"metrics":{"requests":false}}"#,
            "metrics.requests: unknown field `requests`",
        );
    }

    #[test]
    fn basis_points_format_as_percentages() {
        assert_eq!(format_basis_points(1000), "10");
        assert_eq!(format_basis_points(1025), "10.25");
        assert_eq!(format_basis_points(1050), "10.5");
        assert_eq!(format_basis_points(5), "0.05");
        assert_eq!(format_basis_points(0), "0");
    }
}

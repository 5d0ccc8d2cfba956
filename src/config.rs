//! The plugin configuration: the JSON users write in Envoy's `configuration` or
//! Istio's `pluginConfig`, its validation, and the precomputed form that the
//! per-request decision reads. Parsing happens once per config; nothing here runs
//! per request. Every error names the field it is about, so that the log line that
//! rejects a config tells the operator exactly what to fix.

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
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Draw each request independently by the weights.
    #[default]
    Random,
    /// Send it to the first (baseline) version.
    Baseline,
}

// ---- The JSON as written (serde types) ------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    route_header: Option<String>,
    versions: Vec<RawVersion>,
    #[serde(rename = "override")]
    override_: Option<RawOverride>,
    // BTreeMap: errors about users come out in a stable order.
    users: Option<BTreeMap<String, Vec<String>>>,
    hash: Option<RawHash>,
    anonymous: Option<Anonymous>,
    metrics_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    name: String,
    weight: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    header: Option<String>,
    cookie: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHash {
    header: Option<String>,
    cookie: Option<String>,
    salt: Option<String>,
    buckets: Option<u32>,
}

// ---- The validated config -------------------------------------------------------

/// A version of the upstream service, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    /// Share in hundredths of a percent; the baseline's is whatever the others leave.
    pub weight_basis_points: u32,
}

/// The bucket ranges of a set of weights. Bucket `b` (1..=`buckets`) belongs to
/// the first non-baseline version `i` with `b <= upper[i - 1]`, else to the baseline.
/// Precomputed once, so a decision is a hash and a short scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub buckets: u32,
    /// Cumulative upper bucket bound of versions 1..n, in list order.
    pub upper: Vec<u32>,
}

impl Split {
    /// The version index (0 = baseline) that owns `bucket` (1..=`buckets`).
    pub fn version_of_bucket(&self, bucket: u32) -> usize {
        match self.upper.iter().position(|&upper| bucket <= upper) {
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
    pub split: Split,
    pub anonymous: Anonymous,
    pub metrics_prefix: String,
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
                let field = if path == "." { String::new() } else { path };
                return Err(vec![ConfigError::new(field, err.inner().to_string())]);
            }
        };
        if let Err(err) = deserializer.end() {
            return Err(vec![ConfigError::new("", err.to_string())]);
        }
        validate(raw)
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
    let split = split_of(&versions, buckets);

    let override_ = match raw.override_ {
        Some(o) => OverrideConfig {
            header: o
                .header
                .map(|h| checked_header_name("override.header", &h, &mut errors)),
            cookie: o
                .cookie
                .map(|c| checked_cookie_name("override.cookie", &c, &mut errors)),
        },
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
    for (field, name) in [
        ("override.header", &override_.header),
        ("hash.header", &hash.header),
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

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        route_header,
        versions,
        override_,
        users,
        hash,
        split,
        anonymous: raw.anonymous.unwrap_or_default(),
        metrics_prefix,
    })
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
        let weight_basis_points = match (i, v.weight) {
            (0, None) => 0,
            (0, Some(_)) => {
                errors.push(ConfigError::new(
                    format!("{field}.weight"),
                    "the first version is the baseline: it takes the share the others leave and has no weight",
                ));
                0
            }
            (_, None) => {
                errors.push(ConfigError::new(
                    format!("{field}.weight"),
                    "missing: every version after the first needs a weight (a percentage from 0 to 100)",
                ));
                0
            }
            (_, Some(w)) => match weight_to_basis_points(w, buckets) {
                Ok(bp) => bp,
                Err(msg) => {
                    errors.push(ConfigError::new(format!("{field}.weight"), msg));
                    0
                }
            },
        };
        total += u64::from(weight_basis_points);
        versions.push(Version {
            name: v.name.clone(),
            weight_basis_points,
        });
    }
    if total > u64::from(FULL_WEIGHT_BASIS_POINTS) {
        errors.push(ConfigError::new(
            "versions",
            format!(
                "the weights add up to {}, above 100",
                format_basis_points(total)
            ),
        ));
    }
    if let Some(first) = versions.first_mut() {
        first.weight_basis_points =
            FULL_WEIGHT_BASIS_POINTS.saturating_sub(u32::try_from(total).unwrap_or(u32::MAX));
    }
    versions
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

/// The bucket ranges for a list of versions whose weights are already valid.
pub fn split_of(versions: &[Version], buckets: u32) -> Split {
    let mut upper = Vec::with_capacity(versions.len().saturating_sub(1));
    let mut cumulative: u64 = 0;
    for v in versions.iter().skip(1) {
        cumulative += u64::from(v.weight_basis_points) * u64::from(buckets)
            / u64::from(FULL_WEIGHT_BASIS_POINTS);
        upper.push(u32::try_from(cumulative).unwrap_or(u32::MAX));
    }
    Split { buckets, upper }
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
        assert_eq!(c.versions[0].weight_basis_points, 9000);
        assert_eq!(c.versions[1].weight_basis_points, 1000);
        assert_eq!(c.override_.header.as_deref(), Some("x-canary"));
        assert_eq!(c.override_.cookie.as_deref(), Some("canary"));
        assert_eq!(c.users.get(b"qa-alice".as_slice()), Some(&1));
        assert_eq!(c.users.get(b"qa-bob".as_slice()), Some(&1));
        assert_eq!(c.hash.header.as_deref(), Some("x-user-id"));
        assert_eq!(c.hash.cookie.as_deref(), Some("uid"));
        assert_eq!(c.hash.key_prefix, b"checkout-v2:");
        assert_eq!(
            c.split,
            Split {
                buckets: 10000,
                upper: vec![1000]
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
        assert_eq!(c.anonymous, Anonymous::Random);
        assert_eq!(c.split.buckets, DEFAULT_BUCKETS);
        assert!(c.split.upper.is_empty());
        assert_eq!(c.override_, OverrideConfig::default());
        assert!(c.hash.header.is_none() && c.hash.cookie.is_none());
        assert!(c.users.is_empty());
        assert_eq!(c.versions[0].weight_basis_points, 10000);
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
        let bps: Vec<u32> = c.versions.iter().map(|v| v.weight_basis_points).collect();
        assert_eq!(bps, vec![10000 - 25 - 3333, 25, 3333, 0]);
        assert_eq!(c.split.upper, vec![25, 3358, 3358]);
    }

    #[test]
    fn split_ranges_follow_list_order_per_bucket_count() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":10},{"name":"b","weight":20}],"hash":{"header":"u","buckets":100}}"#,
        )
        .unwrap();
        assert_eq!(
            c.split,
            Split {
                buckets: 100,
                upper: vec![10, 30]
            }
        );
        assert_eq!(c.split.version_of_bucket(1), 1);
        assert_eq!(c.split.version_of_bucket(10), 1);
        assert_eq!(c.split.version_of_bucket(11), 2);
        assert_eq!(c.split.version_of_bucket(30), 2);
        assert_eq!(c.split.version_of_bucket(31), 0);
        assert_eq!(c.split.version_of_bucket(100), 0);
    }

    #[test]
    fn weights_may_add_up_to_exactly_100() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":60},{"name":"b","weight":40}]}"#,
        )
        .unwrap();
        assert_eq!(c.versions[0].weight_basis_points, 0);
        assert_eq!(c.split.upper, vec![6000, 10000]);
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
            "versions[0].colour: unknown field `colour`, expected `name` or `weight`",
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

    #[test]
    fn basis_points_format_as_percentages() {
        assert_eq!(format_basis_points(1000), "10");
        assert_eq!(format_basis_points(1025), "10.25");
        assert_eq!(format_basis_points(1050), "10.5");
        assert_eq!(format_basis_points(5), "0.05");
        assert_eq!(format_basis_points(0), "0");
    }
}

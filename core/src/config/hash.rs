//! `hash`: where the user ID comes from, the salt, the bucket count that sets
//! the weights' granularity, and pick mode (`pick_header`, `pick_total`), where a
//! rollout controller's route weights decide.

use super::cookie::{validate_cookie_attributes, CookieAttributes, RawCookieAttributes};
use super::error::ConfigError;
use super::json::{self, Json};
#[cfg(feature = "schema")]
use super::names::HEADER_NAME_PATTERN;
use super::names::{checked_cookie_name, checked_header_name};
use super::pick::{PickConfig, DEFAULT_PICK_TOTAL, MAX_PICK_TOTAL};
use serde::Deserialize;

pub const DEFAULT_BUCKETS: u32 = 10_000;
pub const ALLOWED_BUCKETS: [u32; 3] = [100, 1_000, 10_000];

/// Where the user ID comes from and how it is bucketed. Needs header or cookie.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Hash", extend("anyOf" = [
    { "required": ["header"], "properties": { "header": { "type": "string" } } },
    { "required": ["cookie"], "properties": { "cookie": { "type": "string" } } }
], "if" = { "required": ["pick_total"], "properties": { "pick_total": { "type": "integer" } } },
   "then" = { "required": ["pick_header"], "properties": { "pick_header": { "type": "string" } } })))]
#[serde(deny_unknown_fields)]
pub(super) struct RawHash {
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
    /// Pick mode: the request header into which the filter writes each user's pick
    /// value, for a route whose weighted_clusters.header_name reads it; the route's
    /// weights (a rollout controller's) then decide, and versions have no weight.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN)))]
    pick_header: Option<String>,
    /// Pick mode: the sum of the route's weights (100 for Istio, Flagger and Argo
    /// Rollouts). Needs pick_header.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 4294967295u64), extend("default" = DEFAULT_PICK_TOTAL)))]
    pick_total: Option<u64>,
    /// The attributes of the cookie (hash.cookie) in which anonymous: "cookie" issues
    /// a new visitor's ID. Without anonymous: "cookie" it has no effect.
    cookie_attributes: Option<RawCookieAttributes>,
}

impl RawHash {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawHash {
            header: None,
            cookie: None,
            salt: None,
            buckets: None,
            pick_header: None,
            pick_total: None,
            cookie_attributes: None,
        };
        let fields = [
            "header",
            "cookie",
            "salt",
            "buckets",
            "pick_header",
            "pick_total",
            "cookie_attributes",
        ];
        json.object("struct RawHash", &fields, 0, &mut |json, field| {
            match field {
                0 => raw.header = json.option(Json::string)?,
                1 => raw.cookie = json.option(Json::string)?,
                2 => raw.salt = json.option(Json::string)?,
                3 => {
                    raw.buckets = json
                        .option(|json| json.unsigned(u64::from(u32::MAX), "u32"))?
                        .map(|b| b as u32)
                }
                4 => raw.pick_header = json.option(Json::string)?,
                5 => raw.pick_total = json.option(|json| json.unsigned(u64::MAX, "u64"))?,
                _ => raw.cookie_attributes = json.option(RawCookieAttributes::read)?,
            }
            Ok(())
        })?;
        Ok(raw)
    }
}

/// True if the config is in pick mode (`hash.pick_header` set): versions then
/// take no weight.
pub(super) fn pick_mode(raw: Option<&RawHash>) -> bool {
    raw.is_some_and(|h| h.pick_header.is_some())
}

/// Where the user ID comes from and how it is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    pub header: Option<String>,
    pub cookie: Option<String>,
    /// `salt + ":"`, or empty when there is no salt: the bytes hashed before the user ID.
    pub key_prefix: Vec<u8>,
    /// Pick mode (`pick_header`, `pick_total`), if set.
    pub pick: Option<PickConfig>,
    /// `cookie_attributes` as written, defaults filled in; `None` when absent.
    pub cookie_attributes: Option<CookieAttributes>,
    /// What follows `NAME=ID` in the `Set-Cookie` header of an issued visitor ID:
    /// the attributes, or their defaults (`; Max-Age=31536000; Path=/; ...`).
    pub set_cookie_attributes: String,
}

/// `hash.buckets`, or the default; checked first, because weights are checked
/// against it.
#[cold]
#[inline(never)]
pub(super) fn validate_buckets(raw: Option<&RawHash>, errors: &mut Vec<ConfigError>) -> u32 {
    match raw.and_then(|h| h.buckets) {
        Some(b) if ALLOWED_BUCKETS.contains(&b) => b,
        Some(b) => {
            ConfigError::report(
                errors,
                "hash.buckets",
                format!("{b} is not one of 100, 1000, 10000"),
            );
            DEFAULT_BUCKETS
        }
        None => DEFAULT_BUCKETS,
    }
}

#[cold]
#[inline(never)]
pub(super) fn validate_hash(raw: Option<RawHash>, errors: &mut Vec<ConfigError>) -> HashConfig {
    match raw {
        Some(h) => {
            if h.header.is_none() && h.cookie.is_none() {
                ConfigError::report(
                    errors,
                    "hash",
                    "names neither a header nor a cookie to read the user ID from",
                );
            }
            let cookie_attributes = h
                .cookie_attributes
                .map(|raw| validate_cookie_attributes(raw, errors));
            let key_prefix = match h.salt.as_deref() {
                None | Some("") => Vec::new(),
                Some(salt) => format!("{salt}:").into_bytes(),
            };
            HashConfig {
                header: h
                    .header
                    .map(|n| checked_header_name("hash.header", &n, errors)),
                cookie: h
                    .cookie
                    .map(|c| checked_cookie_name("hash.cookie", &c, errors)),
                key_prefix,
                pick: validate_pick(h.pick_header, h.pick_total, errors),
                set_cookie_attributes: cookie_attributes.as_ref().map_or_else(
                    || CookieAttributes::default().header_suffix(),
                    CookieAttributes::header_suffix,
                ),
                cookie_attributes,
            }
        }
        None => HashConfig {
            header: None,
            cookie: None,
            key_prefix: Vec::new(),
            pick: None,
            cookie_attributes: None,
            set_cookie_attributes: CookieAttributes::default().header_suffix(),
        },
    }
}

#[cold]
#[inline(never)]
fn validate_pick(
    header: Option<String>,
    total: Option<u64>,
    errors: &mut Vec<ConfigError>,
) -> Option<PickConfig> {
    let explicit_total = total.is_some();
    let total = match total {
        None => DEFAULT_PICK_TOTAL,
        Some(t) if (1..=MAX_PICK_TOTAL).contains(&t) => t,
        Some(t) => {
            ConfigError::report(
                errors,
                "hash.pick_total",
                format!(
                    "{t} is not a sum of route weights: use 1 to {MAX_PICK_TOTAL} (Istio's is 100)"
                ),
            );
            DEFAULT_PICK_TOTAL
        }
    };
    match header {
        Some(name) => Some(PickConfig {
            header: checked_header_name("hash.pick_header", &name, errors),
            total,
        }),
        None => {
            if explicit_total {
                ConfigError::report(
                    errors,
                    "hash.pick_total",
                    "needs hash.pick_header: without it the filter picks the version itself",
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_rejected, errors_of, parse};
    use crate::pick::PickConfig;
    use crate::units::FULL_WEIGHT_BASIS_POINTS;

    const PICK: &str = r#"{"versions":[{"name":"primary"},{"name":"canary"}],
        "hash":{"header":"x-user-id","buckets":100,"pick_header":"X-Canary-Pick"}}"#;

    #[test]
    fn pick_mode_takes_a_header_and_a_total_and_versions_without_weights() {
        let c = parse(PICK).unwrap();
        let pick = Some(PickConfig {
            header: "x-canary-pick".into(),
            total: 100,
        });
        assert_eq!(c.hash.pick, pick, "lower-cased, default total 100");
        assert_eq!(c.weights_at(0), vec![FULL_WEIGHT_BASIS_POINTS, 0]);
        let c = parse(&PICK.replace(r#""buckets":100"#, r#""pick_total":1000"#)).unwrap();
        assert_eq!(c.hash.pick.map(|p| p.total), Some(1000));
        let c = parse(&PICK.replace(r#""buckets":100"#, r#""pick_total":4294967295"#)).unwrap();
        assert_eq!(c.hash.pick.map(|p| p.total), Some(4_294_967_295));
        let c = parse(r#"{"versions":[{"name":"a"}],"hash":{"header":"u"}}"#).unwrap();
        assert_eq!(c.hash.pick, None);
    }

    #[test]
    fn pick_mode_errors_name_their_field() {
        assert_rejected(
            &PICK.replace(r#""buckets":100"#, r#""pick_total":0"#),
            "hash.pick_total: 0 is not a sum of route weights: use 1 to 4294967295",
        );
        assert_rejected(
            &PICK.replace(r#""buckets":100"#, r#""pick_total":4294967296"#),
            "hash.pick_total: 4294967296 is not a sum",
        );
        assert_rejected(
            r#"{"versions":[{"name":"a"}],"hash":{"header":"u","pick_total":1000}}"#,
            "hash.pick_total: needs hash.pick_header",
        );
        assert_rejected(
            &PICK.replace("X-Canary-Pick", "bad header"),
            "hash.pick_header: `bad header` is not an HTTP header name",
        );
        assert_rejected(
            &PICK.replace(r#"{"name":"canary"}"#, r#"{"name":"canary","weight":10}"#),
            "versions[1].weight: hash.pick_header is set: the route's weights decide",
        );
        assert_rejected(
            &PICK.replace(
                r#"{"name":"canary"}"#,
                r#"{"name":"canary","schedule":{"start":"2026-12-01T00:00:00Z","steps":[{"after":"0s","weight":5}]}}"#,
            ),
            "versions[1].schedule: hash.pick_header is set",
        );
        assert_rejected(
            &PICK.replace(r#""canary""#, r#""weighted""#),
            "versions[1].name: `weighted` is the metric label",
        );
        for (other, field) in [
            (r#""route_header":"x-canary-pick","#, "route_header"),
            (
                r#""override":{"header":"x-canary-pick"},"#,
                "override.header",
            ),
        ] {
            let json = PICK.replacen('{', &format!("{{{other}"), 1);
            let errors = errors_of(&json);
            assert!(
                errors.contains(&format!(
                    "hash.pick_header: `x-canary-pick` is also {field}; the pick value needs a header of its own"
                )),
                "{errors:?}"
            );
        }
        assert_rejected(
            &PICK.replace(r#""x-user-id""#, r#""x-canary-pick""#),
            "hash.pick_header: `x-canary-pick` is also hash.header",
        );
    }

    #[test]
    fn a_salt_becomes_a_key_prefix_and_an_empty_salt_none() {
        let c = parse(r#"{"versions":[{"name":"a"}],"hash":{"header":"u","salt":""}}"#).unwrap();
        assert!(c.hash.key_prefix.is_empty());
        let c = parse(r#"{"versions":[{"name":"a"}],"hash":{"header":"u"}}"#).unwrap();
        assert!(c.hash.key_prefix.is_empty());
    }
}

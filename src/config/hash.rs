//! `hash`: where the user ID comes from, the salt, and the bucket count that sets
//! the weights' granularity.

use super::error::ConfigError;
#[cfg(feature = "schema")]
use super::names::HEADER_NAME_PATTERN;
use super::names::{checked_cookie_name, checked_header_name};
use serde::Deserialize;

pub const DEFAULT_BUCKETS: u32 = 10_000;
pub const ALLOWED_BUCKETS: [u32; 3] = [100, 1_000, 10_000];

/// Where the user ID comes from and how it is bucketed. Needs header or cookie.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Hash", extend("anyOf" = [
    { "required": ["header"], "properties": { "header": { "type": "string" } } },
    { "required": ["cookie"], "properties": { "cookie": { "type": "string" } } }
])))]
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
}

/// Where the user ID comes from and how it is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    pub header: Option<String>,
    pub cookie: Option<String>,
    /// `salt + ":"`, or empty when there is no salt: the bytes hashed before the user ID.
    pub key_prefix: Vec<u8>,
}

/// `hash.buckets`, or the default; checked first, because weights are checked
/// against it.
pub(super) fn validate_buckets(raw: Option<&RawHash>, errors: &mut Vec<ConfigError>) -> u32 {
    match raw.and_then(|h| h.buckets) {
        Some(b) if ALLOWED_BUCKETS.contains(&b) => b,
        Some(b) => {
            errors.push(ConfigError::new(
                "hash.buckets",
                format!("{b} is not one of 100, 1000, 10000"),
            ));
            DEFAULT_BUCKETS
        }
        None => DEFAULT_BUCKETS,
    }
}

pub(super) fn validate_hash(raw: Option<RawHash>, errors: &mut Vec<ConfigError>) -> HashConfig {
    match raw {
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
                    .map(|n| checked_header_name("hash.header", &n, errors)),
                cookie: h
                    .cookie
                    .map(|c| checked_cookie_name("hash.cookie", &c, errors)),
                key_prefix,
            }
        }
        None => HashConfig {
            header: None,
            cookie: None,
            key_prefix: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    #[test]
    fn a_salt_becomes_a_key_prefix_and_an_empty_salt_none() {
        let c = parse(r#"{"versions":[{"name":"a"}],"hash":{"header":"u","salt":""}}"#).unwrap();
        assert!(c.hash.key_prefix.is_empty());
        let c = parse(r#"{"versions":[{"name":"a"}],"hash":{"header":"u"}}"#).unwrap();
        assert!(c.hash.key_prefix.is_empty());
    }
}

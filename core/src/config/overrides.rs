//! `override`: the header and cookie that let a request name its version, and what
//! protects them (a secret token, trusted source addresses).

use super::error::ConfigError;
use super::json::{self, Json};
#[cfg(feature = "schema")]
use super::names::HEADER_NAME_PATTERN;
use super::names::{checked_cookie_name, checked_header_name};
use crate::trust::Cidr;
use serde::Deserialize;
use std::fmt;

/// Overrides: a request names its version.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Override"))]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
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

impl RawOverride {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawOverride {
            header: None,
            cookie: None,
            token: None,
            trusted_sources: None,
        };
        let fields = ["header", "cookie", "token", "trusted_sources"];
        json.object("struct RawOverride", &fields, 0, &mut |json, field| {
            match field {
                0 => raw.header = json.option(Json::string)?,
                1 => raw.cookie = json.option(Json::string)?,
                2 => raw.token = json.option(RawToken::read)?,
                _ => raw.trusted_sources = json.option_strings()?,
            }
            Ok(())
        })?;
        Ok(raw)
    }
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

impl RawToken {
    #[cold]
    #[inline(never)]
    fn read(json: &mut Json) -> json::Result<Self> {
        let (mut header, mut values) = (None, None);
        json.object(
            "struct RawToken",
            &["header", "values"],
            0b11,
            &mut |json, field| {
                match field {
                    0 => header = Some(json.string()?),
                    _ => values = Some(json.array(Json::string)?),
                }
                Ok(())
            },
        )?;
        Ok(RawToken {
            header: header.unwrap_or_default(),
            values: values.unwrap_or_default(),
        })
    }
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

#[cold]
#[inline(never)]
pub(super) fn validate_override(raw: RawOverride, errors: &mut Vec<ConfigError>) -> OverrideConfig {
    let header = raw
        .header
        .map(|h| checked_header_name("override.header", &h, errors));
    let cookie = raw
        .cookie
        .map(|c| checked_cookie_name("override.cookie", &c, errors));
    let unlocks_nothing = header.is_none() && cookie.is_none();
    let token = raw.token.map(|t| {
        if unlocks_nothing {
            ConfigError::report(errors,
                "override.token",
                "there is no override.header or override.cookie for it to protect",
            );
        }
        let header = checked_header_name("override.token.header", &t.header, errors);
        if t.values.is_empty() || t.values.len() > MAX_TOKEN_VALUES {
            ConfigError::report(errors,
                "override.token.values",
                format!("{} values; give 1 to {MAX_TOKEN_VALUES} (the current secret, and the next while rotating)", t.values.len()),
            );
        }
        for (i, value) in t.values.iter().enumerate() {
            // The message never repeats the secret.
            if value.len() < MIN_TOKEN_LEN {
                ConfigError::report(errors,
                    format!("override.token.values[{i}]"),
                    format!("{} characters; a token needs at least {MIN_TOKEN_LEN}", value.len()),
                );
            }
            if value.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                ConfigError::report(errors,
                    format!("override.token.values[{i}]"),
                    "use visible ASCII characters only, so that it survives as a header value",
                );
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
                ConfigError::report(
                    errors,
                    "override.trusted_sources",
                    "there is no override.header or override.cookie for it to protect",
                );
            }
            if sources.is_empty() {
                ConfigError::report(
                    errors,
                    "override.trusted_sources",
                    "is empty, which would trust nobody: leave it out to trust every source",
                );
            }
            sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    Cidr::parse(s)
                        .map_err(|msg| {
                            ConfigError::report(
                                errors,
                                format!("override.trusted_sources[{i}]"),
                                msg,
                            )
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

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_rejected, errors_of, parse};

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
}

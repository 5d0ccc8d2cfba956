//! A rollout's `match`: the hosts, path prefixes and header conditions of the
//! requests it decides. The matching itself is [`crate::router`]'s; this section
//! checks the entries and names each bad one by its place.

use super::error::ConfigError;
use super::json::{self, Json};
use super::names::checked_header_name;
#[cfg(feature = "schema")]
use super::names::HEADER_NAME_PATTERN;
use crate::router::{HeaderCondition, HeaderTest, Match};
use serde::Deserialize;

/// At most this many path prefixes in a match: a request tries each.
pub const MAX_PATH_PREFIXES: usize = 64;
/// At most this many header conditions in a match.
pub const MAX_HEADER_CONDITIONS: usize = 16;

/// Which requests a rollout decides; every part given must hold. Absent or empty:
/// every request.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Match"))]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    /// The hosts, matched against the request's `:authority` as the top-level
    /// `hosts` is: without the port, ignoring case; `*.example.com` matches every
    /// subdomain (not example.com itself). Absent: any host.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = super::hosts::MAX_HOSTS), inner(length(max = 253), regex(pattern = super::hosts::HOST_PATTERN))))]
    hosts: Option<Vec<String>>,
    /// `:path` starts with one of these, as Envoy passes it on: case-sensitive, the
    /// query string included. Each starts with `/`. Absent: any path.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_PATH_PREFIXES), inner(regex(pattern = r"^/[!-~]*$"))))]
    path_prefixes: Option<Vec<String>>,
    /// Conditions on request headers, all of which must hold; each reads the
    /// header's first value and compares it byte for byte. Absent: none.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_HEADER_CONDITIONS)))]
    headers: Option<Vec<RawHeaderMatch>>,
}

impl RawMatch {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawMatch {
            hosts: None,
            path_prefixes: None,
            headers: None,
        };
        let fields = ["hosts", "path_prefixes", "headers"];
        json.object("struct RawMatch", &fields, 0, &mut |json, field| {
            match field {
                0 => raw.hosts = json.option_strings()?,
                1 => raw.path_prefixes = json.option_strings()?,
                _ => raw.headers = json.option(|json| json.array(RawHeaderMatch::read))?,
            }
            Ok(())
        })?;
        Ok(raw)
    }
}

/// A condition on one request header: its name and exactly one of `exact`,
/// `prefix`, `suffix` or `present`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "HeaderMatch", extend("oneOf" = [
    { "required": ["exact"], "properties": { "exact": { "type": "string" } } },
    { "required": ["prefix"], "properties": { "prefix": { "type": "string" } } },
    { "required": ["suffix"], "properties": { "suffix": { "type": "string" } } },
    { "required": ["present"], "properties": { "present": { "type": "boolean" } } }
])))]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderMatch {
    /// The header's name; case-insensitive.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HEADER_NAME_PATTERN)))]
    name: String,
    /// The first value is exactly this (case-sensitive).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = VALUE_PATTERN)))]
    exact: Option<String>,
    /// The first value starts with this (case-sensitive; not empty).
    #[cfg_attr(feature = "schema", schemars(length(min = 1), regex(pattern = VALUE_PATTERN)))]
    prefix: Option<String>,
    /// The first value ends with this (case-sensitive; not empty).
    #[cfg_attr(feature = "schema", schemars(length(min = 1), regex(pattern = VALUE_PATTERN)))]
    suffix: Option<String>,
    /// true: the header is there, whatever its value; false: it is not.
    present: Option<bool>,
}

/// No NUL, CR or LF: a header value never holds them.
#[cfg(feature = "schema")]
const VALUE_PATTERN: &str = r"^[^\u0000\r\n]*$";

impl RawHeaderMatch {
    #[cold]
    #[inline(never)]
    fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawHeaderMatch {
            name: String::new(),
            exact: None,
            prefix: None,
            suffix: None,
            present: None,
        };
        let fields = ["name", "exact", "prefix", "suffix", "present"];
        json.object("struct RawHeaderMatch", &fields, 0b1, &mut |json, field| {
            match field {
                0 => raw.name = json.string()?,
                1 => raw.exact = json.option(Json::string)?,
                2 => raw.prefix = json.option(Json::string)?,
                3 => raw.suffix = json.option(Json::string)?,
                _ => raw.present = json.option(Json::boolean)?,
            }
            Ok(())
        })?;
        Ok(raw)
    }
}

/// The match of a rollout; errors name fields inside `match`.
#[cold]
#[inline(never)]
pub(super) fn validate_match(raw: Option<RawMatch>, errors: &mut Vec<ConfigError>) -> Match {
    let Some(raw) = raw else {
        return Match::default();
    };
    let mut inner = Vec::new();
    let hosts = super::hosts::validate_hosts(raw.hosts, &mut inner);
    errors.extend(inner.into_iter().map(|e| e.within("match")));
    Match {
        hosts,
        path_prefixes: raw
            .path_prefixes
            .map_or_else(Vec::new, |p| validate_path_prefixes(&p, errors)),
        headers: raw
            .headers
            .map_or_else(Vec::new, |h| validate_headers(h, errors)),
    }
}

#[cold]
#[inline(never)]
fn validate_path_prefixes(raw: &[String], errors: &mut Vec<ConfigError>) -> Vec<Box<[u8]>> {
    const FIELD: &str = "match.path_prefixes";
    if raw.is_empty() {
        ConfigError::report(
            errors,
            FIELD,
            "is empty, which would match no request: leave it out to match every path",
        );
    }
    if raw.len() > MAX_PATH_PREFIXES {
        ConfigError::report(
            errors,
            FIELD,
            format!(
                "{} entries; at most {MAX_PATH_PREFIXES} are allowed",
                raw.len()
            ),
        );
    }
    let mut out: Vec<Box<[u8]>> = Vec::with_capacity(raw.len());
    for (i, prefix) in raw.iter().enumerate() {
        let field = format!("{FIELD}[{i}]");
        let shown = crate::units::escape_text(prefix, true);
        if !prefix.starts_with('/') {
            ConfigError::report(
                errors,
                field,
                format!("`{shown}` does not start with `/`, as every path Envoy routes does"),
            );
        } else if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            ConfigError::report(errors,
                field,
                format!("`{shown}` has a character outside visible ASCII: write the path as requests carry it, percent-encoded"),
            );
        } else if let Some(first) = raw[..i].iter().position(|p| p == prefix) {
            ConfigError::report(
                errors,
                field,
                format!("`{shown}` is already listed as path_prefixes[{first}]"),
            );
        }
        out.push(prefix.as_bytes().into());
    }
    out
}

#[cold]
#[inline(never)]
fn validate_headers(
    raw: Vec<RawHeaderMatch>,
    errors: &mut Vec<ConfigError>,
) -> Vec<HeaderCondition> {
    const FIELD: &str = "match.headers";
    if raw.is_empty() {
        ConfigError::report(
            errors,
            FIELD,
            "is empty: leave it out to put no condition on headers",
        );
    }
    if raw.len() > MAX_HEADER_CONDITIONS {
        ConfigError::report(
            errors,
            FIELD,
            format!(
                "{} conditions; at most {MAX_HEADER_CONDITIONS} are allowed",
                raw.len()
            ),
        );
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, condition) in raw.into_iter().enumerate() {
        let field = format!("{FIELD}[{i}]");
        let name = checked_header_name(&format!("{field}.name"), &condition.name, errors);
        let (mut given, mut count) = (String::new(), 0);
        for (what, is_given) in [
            ("exact", condition.exact.is_some()),
            ("prefix", condition.prefix.is_some()),
            ("suffix", condition.suffix.is_some()),
            ("present", condition.present.is_some()),
        ] {
            if is_given {
                if !given.is_empty() {
                    given.push_str(" and ");
                }
                given.push_str(what);
                count += 1;
            }
        }
        if count != 1 {
            let given = if count == 0 {
                "no test".to_string()
            } else {
                given
            };
            ConfigError::report(
                errors,
                field,
                format!("gives {given}: give exactly one of exact, prefix, suffix or present"),
            );
            continue;
        }
        let value = |what: &str, text: String, errors: &mut Vec<ConfigError>| -> Box<[u8]> {
            if what != "exact" && text.is_empty() {
                ConfigError::report(
                    errors,
                    format!("{field}.{what}"),
                    "is empty, which every value meets: use `present: true`",
                );
            }
            if text.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
                ConfigError::report(
                    errors,
                    format!("{field}.{what}"),
                    format!(
                        "`{}` holds a NUL, CR or LF, which no header value does",
                        crate::units::escape_text(&text, true)
                    ),
                );
            }
            text.into_bytes().into_boxed_slice()
        };
        let test = match condition {
            RawHeaderMatch { exact: Some(v), .. } => HeaderTest::Exact(value("exact", v, errors)),
            RawHeaderMatch {
                prefix: Some(v), ..
            } => HeaderTest::Prefix(value("prefix", v, errors)),
            RawHeaderMatch {
                suffix: Some(v), ..
            } => HeaderTest::Suffix(value("suffix", v, errors)),
            RawHeaderMatch { present, .. } => HeaderTest::Present(present.unwrap_or(true)),
        };
        out.push(HeaderCondition { name, test });
    }
    out
}

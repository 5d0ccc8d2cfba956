//! `hash.cookie_attributes`: the attributes of the `Set-Cookie` header in which
//! `anonymous: "cookie"` hands a new visitor its ID. Every value is checked so that
//! nothing written here can end an attribute early or add one (no `;`, no control
//! characters, no spaces): the header is the config's text, verbatim.

use super::error::ConfigError;
use super::json::{self, Json};
#[cfg(feature = "schema")]
use super::schedule::DURATION_PATTERN;
#[cfg(feature = "schema")]
use crate::units::format_duration;
use crate::units::{escape_text, parse_duration};
use serde::Deserialize;

/// One year: the ID's default lifetime. Browsers cap a cookie's lifetime at 400
/// days (RFC 6265bis), so a longer `max_age` is taken but lasts 400 days.
pub const DEFAULT_COOKIE_MAX_AGE_MS: u64 = 365 * 86_400_000;
/// RFC 6265bis: user agents ignore attribute values longer than this.
pub const MAX_COOKIE_ATTRIBUTE_LEN: usize = 1024;

/// Which cross-site requests carry the cookie (the `SameSite` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SameSite {
    /// Sent on same-site requests and on top-level navigations from other sites.
    #[default]
    Lax,
    /// Sent on same-site requests only.
    Strict,
    /// Sent on every request, cross-site too; browsers take it only with `Secure`.
    #[serde(rename = "None")]
    Unrestricted,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::Unrestricted => "None",
        }
    }
}

/// The attributes of the cookie that `anonymous: "cookie"` sets.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "CookieAttributes", extend(
    "if" = { "required": ["same_site"], "properties": { "same_site": { "const": "None" } } },
    "then" = { "properties": { "secure": { "not": { "const": false } } } }
)))]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookieAttributes {
    /// How long the browser keeps the ID (Max-Age): a duration longer than 0s, in
    /// whole days, hours, minutes and seconds (365d, 30d, 12h). Browsers keep a
    /// cookie at most 400 days.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = DURATION_PATTERN), extend("default" = format_duration(DEFAULT_COOKIE_MAX_AGE_MS))))]
    max_age: Option<String>,
    /// The paths whose requests carry the cookie (Path): starts with /, visible ASCII
    /// without ;.
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_COOKIE_ATTRIBUTE_LEN), regex(pattern = PATH_PATTERN), extend("default" = "/")))]
    path: Option<String>,
    /// The domain whose hosts receive the cookie (Domain), e.g. example.com for
    /// every subdomain too. Absent: only the host that set it.
    #[cfg_attr(feature = "schema", schemars(length(max = 253), regex(pattern = DOMAIN_PATTERN)))]
    domain: Option<String>,
    /// SameSite: Lax, Strict or None (None needs secure).
    #[cfg_attr(feature = "schema", schemars(extend("default" = "Lax")))]
    same_site: Option<SameSite>,
    /// Secure: sent over HTTPS only.
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    secure: Option<bool>,
    /// HttpOnly: hidden from the page's scripts.
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    http_only: Option<bool>,
}

// The JSON Schema's patterns, the same rules as the checks below.
#[cfg(feature = "schema")]
const PATH_PATTERN: &str = r"^/[!-:<-~]*$";
#[cfg(feature = "schema")]
const DOMAIN_PATTERN: &str = r"^\.?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";

impl RawCookieAttributes {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawCookieAttributes {
            max_age: None,
            path: None,
            domain: None,
            same_site: None,
            secure: None,
            http_only: None,
        };
        let fields = [
            "max_age",
            "path",
            "domain",
            "same_site",
            "secure",
            "http_only",
        ];
        json.object(
            "struct RawCookieAttributes",
            &fields,
            0,
            &mut |json, field| {
                match field {
                    0 => raw.max_age = json.option(Json::string)?,
                    1 => raw.path = json.option(Json::string)?,
                    2 => raw.domain = json.option(Json::string)?,
                    3 => {
                        raw.same_site = json
                            .option(|json| json.unit_enum(&["Lax", "Strict", "None"]))?
                            .map(|i| match i {
                                0 => SameSite::Lax,
                                1 => SameSite::Strict,
                                _ => SameSite::Unrestricted,
                            })
                    }
                    4 => raw.secure = json.option(Json::boolean)?,
                    _ => raw.http_only = json.option(Json::boolean)?,
                }
                Ok(())
            },
        )?;
        Ok(raw)
    }
}

/// `hash.cookie_attributes`, validated, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttributes {
    pub max_age_ms: u64,
    pub path: String,
    /// `None`: host-only.
    pub domain: Option<String>,
    pub same_site: SameSite,
    pub secure: bool,
    pub http_only: bool,
}

impl Default for CookieAttributes {
    fn default() -> Self {
        CookieAttributes {
            max_age_ms: DEFAULT_COOKIE_MAX_AGE_MS,
            path: "/".to_string(),
            domain: None,
            same_site: SameSite::Lax,
            secure: true,
            http_only: true,
        }
    }
}

impl CookieAttributes {
    /// What follows `NAME=ID` in the `Set-Cookie` header:
    /// `; Max-Age=31536000; Path=/; SameSite=Lax; Secure; HttpOnly`.
    #[cold]
    #[inline(never)]
    pub fn header_suffix(&self) -> String {
        let mut out = format!("; Max-Age={}; Path={}", self.max_age_ms / 1000, self.path);
        if let Some(domain) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        out.push_str("; SameSite=");
        out.push_str(self.same_site.as_str());
        if self.secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        out
    }
}

#[cold]
#[inline(never)]
pub(super) fn validate_cookie_attributes(
    raw: RawCookieAttributes,
    errors: &mut Vec<ConfigError>,
) -> CookieAttributes {
    let defaults = CookieAttributes::default();
    let max_age_ms = match raw.max_age.as_deref() {
        None => defaults.max_age_ms,
        Some(text) => match parse_duration(text) {
            // Max-Age 0 tells the browser to delete the cookie at once.
            Ok(ms) if ms < 1000 => {
                ConfigError::report(
                    errors,
                    "hash.cookie_attributes.max_age",
                    "must be at least 1s: a cookie with Max-Age=0 is deleted at once",
                );
                defaults.max_age_ms
            }
            Ok(ms) => ms,
            Err(message) => {
                ConfigError::report(errors, "hash.cookie_attributes.max_age", message);
                defaults.max_age_ms
            }
        },
    };
    let path = match raw.path {
        None => defaults.path,
        Some(path) => {
            if let Some(problem) = path_problem(&path) {
                ConfigError::report(errors, "hash.cookie_attributes.path", problem);
            }
            path
        }
    };
    let domain = raw.domain.inspect(|domain| {
        if let Some(problem) = domain_problem(domain) {
            ConfigError::report(errors, "hash.cookie_attributes.domain", problem);
        }
    });
    let same_site = raw.same_site.unwrap_or_default();
    let secure = raw.secure.unwrap_or(true);
    if same_site == SameSite::Unrestricted && !secure {
        ConfigError::report(
            errors,
            "hash.cookie_attributes.same_site",
            "\"None\" needs secure: true: browsers drop a SameSite=None cookie that is not Secure",
        );
    }
    CookieAttributes {
        max_age_ms,
        path,
        domain,
        same_site,
        secure,
        http_only: raw.http_only.unwrap_or(true),
    }
}

/// A path attribute: `/` then visible ASCII without `;` (which would end the
/// attribute and start another), at most [`MAX_COOKIE_ATTRIBUTE_LEN`] bytes.
fn path_problem(path: &str) -> Option<String> {
    let ok = path.starts_with('/')
        && path.len() <= MAX_COOKIE_ATTRIBUTE_LEN
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    (!ok).then(|| {
        format!(
            "`{}` is not a cookie path: / then visible ASCII without ; or spaces, at most 1024 characters",
            escape_text(path, true)
        )
    })
}

/// A domain attribute: a DNS name (letters, digits and hyphens in labels of 1 to 63
/// characters that neither start nor end with a hyphen), with an optional leading
/// dot, which browsers ignore.
fn domain_problem(domain: &str) -> Option<String> {
    let name = domain.strip_prefix('.').unwrap_or(domain);
    let label_ok = |label: &[u8]| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
    };
    if domain.len() > 253 || !name.as_bytes().split(|&b| b == b'.').all(label_ok) {
        return Some(format!(
            "`{}` is not a domain name such as example.com (letters, digits, hyphens and dots, at most 253 characters)",
            escape_text(domain, true)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_rejected, errors_of, parse};
    use crate::config::Anonymous;

    fn with(attributes: &str) -> String {
        format!(
            r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":10}}],
                "hash":{{"cookie":"visitor","cookie_attributes":{attributes}}},"anonymous":"cookie"}}"#
        )
    }

    #[test]
    fn the_defaults_make_a_lax_secure_http_only_cookie_for_a_year() {
        let c = parse(
            r#"{"versions":[{"name":"s"}],"hash":{"cookie":"visitor"},"anonymous":"cookie"}"#,
        )
        .unwrap();
        assert_eq!(c.anonymous, Anonymous::Cookie);
        assert_eq!(c.hash.cookie_attributes, None, "not written");
        assert_eq!(
            c.hash.set_cookie_attributes,
            "; Max-Age=31536000; Path=/; SameSite=Lax; Secure; HttpOnly"
        );
        let c = parse(&with("{}")).unwrap();
        assert_eq!(c.hash.cookie_attributes, Some(CookieAttributes::default()));
    }

    #[test]
    fn every_attribute_is_written_as_configured() {
        let c = parse(&with(
            r#"{"max_age":"30d12h","path":"/shop","domain":"example.com","same_site":"Strict","secure":false,"http_only":false}"#,
        ))
        .unwrap();
        assert_eq!(
            c.hash.set_cookie_attributes,
            "; Max-Age=2635200; Path=/shop; Domain=example.com; SameSite=Strict"
        );
        let c = parse(&with(r#"{"same_site":"None","domain":".Example.COM"}"#)).unwrap();
        assert_eq!(
            c.hash.set_cookie_attributes,
            "; Max-Age=31536000; Path=/; Domain=.Example.COM; SameSite=None; Secure; HttpOnly"
        );
    }

    #[test]
    fn nothing_can_be_smuggled_into_the_header() {
        for (attributes, expected) in [
            (
                r#"{"path":"/; Domain=evil.com"}"#,
                "hash.cookie_attributes.path: `/; Domain=evil.com` is not a cookie path: / then visible ASCII without ; or spaces, at most 1024 characters",
            ),
            (
                r#"{"path":"/a\r\nSet-Cookie: x=1"}"#,
                "hash.cookie_attributes.path: `/a\\r\\nSet-Cookie: x=1` is not a cookie path",
            ),
            (r#"{"path":"/a b"}"#, "hash.cookie_attributes.path: `/a b` is not a cookie path"),
            (r#"{"path":"/é"}"#, "hash.cookie_attributes.path: `/é` is not a cookie path"),
            (r#"{"path":"shop"}"#, "hash.cookie_attributes.path: `shop` is not a cookie path"),
            (r#"{"path":""}"#, "hash.cookie_attributes.path: `` is not a cookie path"),
            (
                r#"{"domain":"example.com; Secure"}"#,
                "hash.cookie_attributes.domain: `example.com; Secure` is not a domain name",
            ),
            (r#"{"domain":""}"#, "hash.cookie_attributes.domain: `` is not a domain name"),
            (r#"{"domain":"."}"#, "hash.cookie_attributes.domain: `.` is not a domain name"),
            (r#"{"domain":"a..b"}"#, "hash.cookie_attributes.domain: `a..b` is not"),
            (r#"{"domain":"-a.b"}"#, "hash.cookie_attributes.domain: `-a.b` is not"),
            (r#"{"domain":"a_b.c"}"#, "hash.cookie_attributes.domain: `a_b.c` is not"),
            (r#"{"domain":"a.b\n"}"#, "hash.cookie_attributes.domain: `a.b\\n` is not"),
            (r#"{"max_age":"0s"}"#, "hash.cookie_attributes.max_age: must be at least 1s"),
            (r#"{"max_age":"1y"}"#, "hash.cookie_attributes.max_age: `1y` is not a duration"),
            (
                r#"{"same_site":"lax"}"#,
                "hash.cookie_attributes.same_site: unknown variant `lax`, expected one of `Lax`, `Strict`, `None`",
            ),
            (
                r#"{"same_site":"None","secure":false}"#,
                "hash.cookie_attributes.same_site: \"None\" needs secure: true",
            ),
            (
                r#"{"secure":"yes"}"#,
                "hash.cookie_attributes.secure: invalid type: string \"yes\", expected a boolean",
            ),
            (
                r#"{"expires":"1d"}"#,
                "hash.cookie_attributes.expires: unknown field `expires`",
            ),
        ] {
            assert_rejected(&with(attributes), expected);
        }
        let long = format!(r#"{{"path":"/{}"}}"#, "a".repeat(1024));
        assert_rejected(&with(&long), "is not a cookie path");
        let labels = vec!["a".repeat(63); 4];
        let long = format!(r#"{{"domain":"{}.com"}}"#, labels.join("."));
        assert_rejected(&with(&long), "hash.cookie_attributes.domain:");
        // Every problem at once.
        let errors = errors_of(&with(
            r#"{"max_age":"0s","path":"x","domain":"a b","same_site":"None","secure":false}"#,
        ));
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn the_documented_values_are_accepted() {
        for attributes in [
            r#"{"path":"/"}"#,
            r#"{"path":"/app/v2-beta_x.~!$&'()*+,=:@%20"}"#,
            r#"{"domain":"shop.example.co.uk"}"#,
            r#"{"domain":"localhost"}"#,
            r#"{"max_age":"1s"}"#,
            r#"{"max_age":"400d"}"#,
            r#"{"same_site":"None","secure":true}"#,
            r#"{"same_site":"None"}"#,
            r#"{"same_site":"Strict","secure":false}"#,
        ] {
            parse(&with(attributes)).unwrap_or_else(|e| panic!("{attributes}: {e:?}"));
        }
    }
}

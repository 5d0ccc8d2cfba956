//! The names a config gives: HTTP header and cookie names, version names and the
//! metrics prefix. Each check pushes an error naming the field and returns the name
//! in the form the filter compares it in.

use super::error::ConfigError;

/// The route header when the config names none.
pub const DEFAULT_ROUTE_HEADER: &str = "x-canary-version";

/// Longest version name: a DNS label's limit, so names fit Kubernetes labels too.
pub const MAX_VERSION_NAME_LEN: usize = 63;

// Patterns of the JSON Schema, the same rules as the checks below.
#[cfg(feature = "schema")]
pub(super) const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
#[cfg(feature = "schema")]
pub(super) const VERSION_NAME_PATTERN: &str = r"^[A-Za-z0-9._-]+$";

pub(super) fn version_name_problem(name: &str) -> Option<String> {
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
            crate::units::escape_text(name, true)
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
pub(super) fn checked_header_name(
    field: &str,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> String {
    if !is_token(name) {
        ConfigError::report(errors,
            field,
            format!(
                "`{}` is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~; no pseudo-headers)",
                crate::units::escape_text(name, true)
            ),
        );
    }
    name.to_ascii_lowercase()
}

pub(super) fn checked_cookie_name(
    field: &str,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> String {
    if !is_token(name) {
        ConfigError::report(
            errors,
            field,
            format!(
                "`{}` is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                crate::units::escape_text(name, true)
            ),
        );
    }
    name.to_string()
}

pub(super) fn is_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_rejected, parse};

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
}

//! Tests of the parser as a whole: the documented example, defaults, JSON errors,
//! and the checks that span sections. Each section's own tests sit beside it; the
//! helpers here serve them all.

use super::*;

pub(super) fn parse(json: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_json(json.as_bytes())
}

pub(super) fn errors_of(json: &str) -> Vec<String> {
    match parse(json) {
        Ok(_) => panic!("config was accepted: {json}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

pub(super) fn assert_rejected(json: &str, expected: &str) {
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
            latency: false,
            responses: false
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
fn all_semantic_errors_are_reported_at_once() {
    let errors = errors_of(
        r#"{"route_header":"bad header","versions":[{"name":"s"},{"name":"c","weight":120}],"metrics_prefix":"-"}"#,
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn anonymous_cookie_needs_the_cookie_it_issues_the_id_in() {
    let c = parse(r#"{"versions":[{"name":"s"}],"hash":{"cookie":"vid"},"anonymous":"cookie"}"#)
        .unwrap();
    assert_eq!(c.anonymous, Anonymous::Cookie);
    assert!(c.warnings().is_empty());
    for json in [
        r#"{"versions":[{"name":"s"}],"anonymous":"cookie"}"#,
        r#"{"versions":[{"name":"s"}],"hash":{"header":"x-user-id"},"anonymous":"cookie"}"#,
    ] {
        let errors = errors_of(json);
        assert_eq!(
            errors,
            ["anonymous: \"cookie\" needs hash.cookie: the cookie in which a new visitor gets its ID and sends it back"],
            "{json}"
        );
    }
    assert_rejected(
        r#"{"versions":[{"name":"s"}],"anonymous":"Cookie"}"#,
        "anonymous: unknown variant `Cookie`, expected one of `random`, `baseline`, `cookie`",
    );
}

#[test]
fn cookie_attributes_without_anonymous_cookie_are_taken_with_a_warning() {
    for anonymous in ["", r#","anonymous":"random""#, r#","anonymous":"baseline""#] {
        let c = parse(&format!(
            r#"{{"versions":[{{"name":"s"}}],"hash":{{"cookie":"vid","cookie_attributes":{{"path":"/a"}}}}{anonymous}}}"#
        ))
        .unwrap();
        let warnings: Vec<String> = c.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            ["hash.cookie_attributes: has no effect: only anonymous: \"cookie\" sets a cookie"]
        );
    }
    let c = parse(r#"{"versions":[{"name":"s"}],"hash":{"cookie":"vid"}}"#).unwrap();
    assert!(c.warnings().is_empty());
}

//! `guard`: the rollback guard as written, validated into a
//! [`crate::guard::GuardConfig`].

use super::error::ConfigError;
use super::json::{self, Json};
#[cfg(feature = "schema")]
use super::names::{MAX_VERSION_NAME_LEN, VERSION_NAME_PATTERN};
#[cfg(feature = "schema")]
use super::schedule::DURATION_PATTERN;
use super::versions::Version;
use crate::grpc::GrpcCodeSet;
use crate::guard::{GuardConfig, StatusMatcher};
use crate::units::format_number;
use crate::units::parse_duration;
use serde::Deserialize;

pub const DEFAULT_GUARD_MIN_REQUESTS: u64 = 50;
pub const DEFAULT_GUARD_WINDOW_MS: u64 = 30_000;
pub const DEFAULT_GUARD_HOLD_MS: u64 = 600_000;

/// The rollback guard.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Guard"))]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
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
    #[cfg_attr(feature = "schema", schemars(regex(pattern = DURATION_PATTERN), extend("default" = crate::units::format_duration(DEFAULT_GUARD_WINDOW_MS))))]
    window: Option<String>,
    /// Responses that count as failures: status classes ("5xx") and codes ("503").
    #[cfg_attr(feature = "schema", schemars(length(min = 1), inner(regex(pattern = r"^(?:[1-5][xX][xX]|[1-5][0-9][0-9])$")), extend("default" = ["5xx"])))]
    status: Option<Vec<String>>,
    /// gRPC calls that count as failures, by their grpc-status code's canonical name
    /// ("UNAVAILABLE"). For a gRPC call only this list decides, not `status`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1), inner(regex(pattern = GRPC_CODE_PATTERN)), extend("default" = crate::grpc::DEFAULT_FAILURE_CODES)))]
    grpc_status: Option<Vec<String>>,
    /// How long a tripped guard keeps the version's traffic on the baseline before it
    /// re-arms: a duration, or "forever" (until a new config is loaded).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = HOLD_PATTERN), extend("default" = crate::units::format_duration(DEFAULT_GUARD_HOLD_MS))))]
    hold: Option<String>,
}

impl RawGuard {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let mut raw = RawGuard {
            version: String::new(),
            max_error_rate: 0.0,
            baseline_margin: None,
            min_requests: None,
            window: None,
            status: None,
            grpc_status: None,
            hold: None,
        };
        let fields = [
            "version",
            "max_error_rate",
            "baseline_margin",
            "min_requests",
            "window",
            "status",
            "grpc_status",
            "hold",
        ];
        json.object("struct RawGuard", &fields, 0b11, &mut |json, field| {
            match field {
                0 => raw.version = json.string()?,
                1 => raw.max_error_rate = json.f64()?,
                2 => raw.baseline_margin = json.option(Json::f64)?,
                3 => raw.min_requests = json.option(|json| json.unsigned(u64::MAX, "u64"))?,
                4 => raw.window = json.option(Json::string)?,
                5 => raw.status = json.option_strings()?,
                6 => raw.grpc_status = json.option_strings()?,
                _ => raw.hold = json.option(Json::string)?,
            }
            Ok(())
        })?;
        Ok(raw)
    }
}

// The JSON Schema's pattern of a `grpc_status` entry: one of the 17 code names.
#[cfg(feature = "schema")]
const GRPC_CODE_PATTERN: &str = "^(?:OK|CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|PERMISSION_DENIED|RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS|UNAUTHENTICATED)$";

// The JSON Schema's pattern of `hold`: a duration or "forever".
#[cfg(feature = "schema")]
const HOLD_PATTERN: &str = r"^(?:forever|[0-9]+d(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?|[0-9]+h(?:[0-9]+m)?(?:[0-9]+s)?|[0-9]+m(?:[0-9]+s)?|[0-9]+s)$";

#[cold]
#[inline(never)]
pub(super) fn validate_guard(
    raw: RawGuard,
    versions: &[Version],
    errors: &mut Vec<ConfigError>,
) -> Option<GuardConfig> {
    let before = errors.len();
    let version = match versions.iter().position(|v| v.name == raw.version) {
        Some(0) => {
            ConfigError::report(errors,
                "guard.version",
                format!("`{}` is the baseline, where a tripped guard sends traffic; guard another version", raw.version),
            );
            0
        }
        Some(i) => i,
        None => {
            ConfigError::report(
                errors,
                "guard.version",
                format!("no version is named `{}`", raw.version),
            );
            0
        }
    };
    let rate_ok = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
    if !rate_ok(raw.max_error_rate) || raw.max_error_rate >= 1.0 {
        ConfigError::report(
            errors,
            "guard.max_error_rate",
            format!(
                "{} is not a fraction from 0 up to (not including) 1, such as 0.05 for 5%",
                format_number(raw.max_error_rate)
            ),
        );
    }
    if let Some(margin) = raw.baseline_margin {
        if !rate_ok(margin) {
            ConfigError::report(
                errors,
                "guard.baseline_margin",
                format!(
                    "{} is not a fraction from 0 to 1, such as 0.02 for 2 points",
                    format_number(margin)
                ),
            );
        }
    }
    let min_requests = raw.min_requests.unwrap_or(DEFAULT_GUARD_MIN_REQUESTS);
    if min_requests == 0 {
        ConfigError::report(
            errors,
            "guard.min_requests",
            "must be at least 1: a guard needs evidence before it trips",
        );
    }
    let window_ms = match raw.window.as_deref() {
        None => DEFAULT_GUARD_WINDOW_MS,
        Some(text) => match parse_duration(text) {
            Ok(0) => {
                ConfigError::report(errors, "guard.window", "must be longer than 0s");
                1000
            }
            Ok(ms) => ms,
            Err(msg) => {
                ConfigError::report(errors, "guard.window", msg);
                1000
            }
        },
    };
    let status = match raw.status {
        None => StatusMatcher::parse(&["5xx".to_string()]).ok(),
        Some(entries) if entries.is_empty() => {
            ConfigError::report(
                errors,
                "guard.status",
                "needs at least one status class or code, such as \"5xx\"",
            );
            None
        }
        Some(entries) => StatusMatcher::parse(&entries)
            .map_err(|(i, msg)| ConfigError::report(errors, format!("guard.status[{i}]"), msg))
            .ok(),
    };
    let grpc_status = match raw.grpc_status {
        None => Some(GrpcCodeSet::default()),
        Some(entries) if entries.is_empty() => {
            ConfigError::report(
                errors,
                "guard.grpc_status",
                "needs at least one gRPC status code name, such as \"UNAVAILABLE\"",
            );
            None
        }
        Some(entries) => GrpcCodeSet::parse(&entries)
            .map_err(|(i, msg)| ConfigError::report(errors, format!("guard.grpc_status[{i}]"), msg))
            .ok(),
    };
    let hold_ms = match raw.hold.as_deref() {
        None => Some(DEFAULT_GUARD_HOLD_MS),
        Some("forever") => None,
        Some(text) => match parse_duration(text) {
            Ok(ms) => Some(ms),
            Err(msg) => {
                ConfigError::report(errors, "guard.hold", format!("{msg}, or \"forever\""));
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
        grpc_status: grpc_status?,
        hold_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_rejected, parse};

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
        assert_eq!(g.grpc_status, GrpcCodeSet::default());

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
            &g(r#"{"version":"canary","max_error_rate":0.1,"grpc_status":[]}"#),
            "guard.grpc_status: needs at least one gRPC status code name",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"grpc_status":["NOT_FOUND","Unavailable"]}"#),
            "guard.grpc_status[1]: `Unavailable` is not a gRPC status code name (OK, CANCELLED, ... UNAUTHENTICATED) (did you mean `UNAVAILABLE`?)",
        );
        assert_rejected(
            &g(r#"{"version":"canary","max_error_rate":0.1,"grpc_status":[14]}"#),
            "guard.grpc_status[0]: invalid type",
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
}

#[cfg(test)]
mod grpc_tests {
    use crate::config::tests::parse;
    use crate::grpc::GrpcCode;

    #[test]
    fn grpc_status_lists_the_codes_that_fail_and_only_those() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":1}],"guard":{"version":"c","max_error_rate":0.1,"status":["500"],"grpc_status":["NOT_FOUND","RESOURCE_EXHAUSTED"]}}"#,
        )
        .unwrap();
        let g = c.guard.unwrap();
        assert_eq!(g.grpc_status.names(), ["NOT_FOUND", "RESOURCE_EXHAUSTED"]);
        assert!(!g.grpc_status.contains(GrpcCode::UNAVAILABLE));
        // The HTTP list is its own: a gRPC list changes nothing for HTTP responses.
        assert!(g.status.is_failure(500, false) && !g.status.is_failure(503, false));
    }
}

//! `metrics_prefix` and `metrics`: the names of the per-version metrics and which
//! of them the filter records.

use super::error::ConfigError;
use super::json::{self, Json};
use super::names::is_metric_name;
use serde::Deserialize;

pub const DEFAULT_METRICS_PREFIX: &str = "canary";

/// Which per-version metrics the filter records.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Metrics"))]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// Record P_request_duration_milliseconds (two clock reads and a histogram record
    /// per request). Off by default: Envoy's upstream_rq_time and Istio's
    /// istio_request_duration_milliseconds{destination_version} measure the same.
    #[cfg_attr(feature = "schema", schemars(extend("default" = false)))]
    latency: Option<bool>,
    /// Count P_responses_total by status class (a `:status` read per response, which a
    /// guard makes anyway for the versions it compares). Off by default: Envoy's
    /// upstream_rq_2xx..5xx and Istio's istio_requests_total{destination_version,
    /// response_code} count the same.
    #[cfg_attr(feature = "schema", schemars(extend("default" = false)))]
    responses: Option<bool>,
}

impl RawMetrics {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let (mut latency, mut responses) = (None, None);
        let fields = ["latency", "responses"];
        json.object("struct RawMetrics", &fields, 0, &mut |json, field| {
            match field {
                0 => latency = json.option(Json::boolean)?,
                _ => responses = json.option(Json::boolean)?,
            }
            Ok(())
        })?;
        Ok(RawMetrics { latency, responses })
    }
}

/// Which per-version metrics to record beyond the decision counters. Each costs host
/// calls on every request, and Envoy and Istio already measure both natively, so
/// both are opt-in (issue 14: the filter should not pay twice for what the proxy
/// measures).
/// Both off by default (`Default`): opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// `P_request_duration_milliseconds`: two clock reads and a histogram record.
    pub latency: bool,
    /// `P_responses_total`: a `:status` read (still made when a guard needs it).
    pub responses: bool,
}

#[cold]
#[inline(never)]
pub(super) fn validate_metrics_prefix(
    raw: Option<String>,
    errors: &mut Vec<ConfigError>,
) -> String {
    match raw {
        Some(p) => {
            if !is_metric_name(&p) {
                ConfigError::report(errors,
                    "metrics_prefix",
                    format!("`{p}` is not a metric name: use 1 to 64 of [A-Za-z0-9_], not starting with a digit"),
                );
            }
            p
        }
        None => DEFAULT_METRICS_PREFIX.to_string(),
    }
}

#[cold]
#[inline(never)]
pub(super) fn validate_metrics(raw: Option<RawMetrics>) -> MetricsConfig {
    raw.map_or_else(MetricsConfig::default, |m| MetricsConfig {
        latency: m.latency.unwrap_or(false),
        responses: m.responses.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_rejected, parse};

    #[test]
    fn metrics_are_opt_in_one_by_one() {
        let c = parse(r#"{"versions":[{"name":"s"}]}"#).unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                latency: false,
                responses: false
            }
        );
        let c = parse(r#"{"versions":[{"name":"s"}],"metrics":{"responses":true}}"#).unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                latency: false,
                responses: true
            }
        );
        let c = parse(r#"{"versions":[{"name":"s"}],"metrics":{"latency":true}}"#).unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                latency: true,
                responses: false
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
}

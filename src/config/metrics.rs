//! `metrics_prefix` and `metrics`: the names of the per-version metrics and which
//! of them the filter records.

use super::error::ConfigError;
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
    /// per request).
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    latency: Option<bool>,
    /// Count P_responses_total by status class (a `:status` read per response, which a
    /// guard makes anyway).
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    responses: Option<bool>,
}

/// Which per-version metrics to record. Each costs host calls on every request, so
/// users who read latency from Envoy's own per-cluster histograms can turn it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `P_request_duration_milliseconds`: two clock reads and a histogram record.
    pub latency: bool,
    /// `P_responses_total`: a `:status` read (still made when a guard needs it).
    pub responses: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            latency: true,
            responses: true,
        }
    }
}

pub(super) fn validate_metrics_prefix(
    raw: Option<String>,
    errors: &mut Vec<ConfigError>,
) -> String {
    match raw {
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
    }
}

pub(super) fn validate_metrics(raw: Option<RawMetrics>) -> MetricsConfig {
    raw.map_or_else(MetricsConfig::default, |m| MetricsConfig {
        latency: m.latency.unwrap_or(true),
        responses: m.responses.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_rejected, parse};

    #[test]
    fn metrics_can_be_turned_off_one_by_one() {
        let c = parse(r#"{"versions":[{"name":"s"}],"metrics":{"latency":false}}"#).unwrap();
        assert_eq!(
            c.metrics,
            MetricsConfig {
                latency: false,
                responses: true
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

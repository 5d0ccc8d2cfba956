//! `versions`: the versions of the service, their weights (fixed or scheduled),
//! and the bucket ranges ([`Split`]) the weights become.

use super::error::ConfigError;
use super::json::{self, Json};
use super::names::version_name_problem;
#[cfg(feature = "schema")]
use super::names::{MAX_VERSION_NAME_LEN, VERSION_NAME_PATTERN};
use super::schedule::{validate_schedule, RawSchedule};
use crate::schedule::Schedule;
use crate::units::{format_basis_points, weight_to_basis_points, FULL_WEIGHT_BASIS_POINTS};
use serde::Deserialize;

/// At most this many versions: they end up in metric labels, and a bounded set
/// keeps the metric table (versions x reasons x status classes) small.
pub const MAX_VERSIONS: usize = 16;

/// A version of the service.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Version"))]
#[serde(deny_unknown_fields)]
pub(super) struct RawVersion {
    /// The version's name: the value of the route header and of the `version` metric
    /// label.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_VERSION_NAME_LEN), regex(pattern = VERSION_NAME_PATTERN)))]
    pub(super) name: String,
    /// Percentage from 0 to 100 with at most two decimals, and a whole number of
    /// buckets (steps of 1 with hash.buckets 100, 0.1 with 1000, 0.01 with 10000).
    /// Not for the first version.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    weight: Option<f64>,
    /// Instead of weight: a ramp that raises the weight over time.
    schedule: Option<RawSchedule>,
}

impl RawVersion {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let (mut name, mut weight, mut schedule) = (None, None, None);
        let fields = ["name", "weight", "schedule"];
        json.object("struct RawVersion", &fields, 0b1, &mut |json, field| {
            match field {
                0 => name = Some(json.string()?),
                1 => weight = json.option(Json::f64)?,
                _ => schedule = json.option(RawSchedule::read)?,
            }
            Ok(())
        })?;
        Ok(RawVersion {
            name: name.unwrap_or_default(),
            weight,
            schedule,
        })
    }
}

/// A version of the upstream service, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    pub weight: Weight,
}

/// How a version's share is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weight {
    /// The baseline (first version): whatever the others leave.
    Remainder,
    /// A fixed share, in basis points (hundredths of a percent).
    Fixed(u32),
    /// A share that follows a time-based ramp.
    Scheduled(Schedule),
}

impl Weight {
    /// The share at `now_ms` (unix ms), in basis points; 0 for the baseline.
    #[inline]
    pub fn at(&self, now_ms: i64, buckets: u32) -> u32 {
        match self {
            Weight::Remainder => 0,
            Weight::Fixed(bp) => *bp,
            Weight::Scheduled(schedule) => schedule.weight_at(now_ms, buckets),
        }
    }

    /// The largest share it ever takes: the size of its reserved bucket range.
    #[inline]
    pub fn max(&self) -> u32 {
        match self {
            Weight::Remainder => 0,
            Weight::Fixed(bp) => *bp,
            Weight::Scheduled(schedule) => schedule.max_weight(),
        }
    }
}

/// The bucket ranges of the versions at one moment. Version `i + 1` owns the
/// buckets `b` with `ranges[i].0 < b <= ranges[i].1`; the baseline owns the rest.
/// Each non-baseline version's range starts where the previous version's largest
/// range ends, so a version's range only grows as its weight ramps up: with fixed
/// weights the ranges are contiguous from bucket 1 (the documented layout), and no
/// ramp ever moves a user from one version to another except out of the baseline.
/// Precomputed, so a decision is a hash and a short scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub buckets: u32,
    pub ranges: Vec<(u32, u32)>,
}

impl Split {
    /// The version index (0 = baseline) that owns `bucket` (1..=`buckets`).
    #[inline]
    pub fn version_of_bucket(&self, bucket: u32) -> usize {
        match self
            .ranges
            .iter()
            .position(|&(start, end)| start < bucket && bucket <= end)
        {
            Some(i) => i + 1,
            None => 0,
        }
    }
}

/// `pick_mode`: `hash.pick_header` is set, so the route's weights decide: the
/// versions after the baseline take no weight or schedule (they count as 0).
#[cold]
#[inline(never)]
pub(super) fn validate_versions(
    raw: &[RawVersion],
    buckets: u32,
    pick_mode: bool,
    errors: &mut Vec<ConfigError>,
) -> Vec<Version> {
    if raw.is_empty() {
        ConfigError::report(errors, "versions", "needs at least one version");
    }
    if raw.len() > MAX_VERSIONS {
        ConfigError::report(
            errors,
            "versions",
            format!("{} versions; at most {MAX_VERSIONS} are allowed", raw.len()),
        );
    }
    let mut versions = Vec::with_capacity(raw.len());
    let mut total: u64 = 0;
    for (i, v) in raw.iter().enumerate() {
        let field = format!("versions[{i}]");
        if let Some(problem) = version_name_problem(&v.name) {
            ConfigError::report(errors, format!("{field}.name"), problem);
        }
        if let Some(first) = raw[..i].iter().position(|o| o.name == v.name) {
            ConfigError::report(
                errors,
                format!("{field}.name"),
                format!("`{}` is already the name of versions[{first}]", v.name),
            );
        }
        if pick_mode && i > 0 && (v.weight.is_some() || v.schedule.is_some()) {
            let what = if v.weight.is_some() {
                "weight"
            } else {
                "schedule"
            };
            ConfigError::report(errors,
                format!("{field}.{what}"),
                format!("hash.pick_header is set: the route's weights decide, so a version has no {what}"),
            );
        }
        if pick_mode && v.name == super::pick::WEIGHTED_VERSION {
            ConfigError::report(errors,
                format!("{field}.name"),
                format!("`{}` is the metric label of the decisions the route's weights make in pick mode: choose another name", v.name),
            );
        }
        let weight = match (i, v.weight, &v.schedule) {
            _ if pick_mode && i > 0 => Weight::Fixed(0),
            (0, None, None) => Weight::Remainder,
            (0, _, _) => {
                let what = if v.weight.is_some() {
                    "weight"
                } else {
                    "schedule"
                };
                ConfigError::report(errors,
                    format!("{field}.{what}"),
                    format!("the first version is the baseline: it takes the share the others leave and has no {what}"),
                );
                Weight::Remainder
            }
            (_, Some(_), Some(_)) => {
                ConfigError::report(
                    errors,
                    format!("{field}.schedule"),
                    "a version has either a weight or a schedule, not both",
                );
                Weight::Fixed(0)
            }
            (_, None, None) => {
                ConfigError::report(errors,
                    format!("{field}.weight"),
                    "missing: every version after the first needs a weight (a percentage from 0 to 100) or a schedule",
                );
                Weight::Fixed(0)
            }
            (_, Some(w), None) => match weight_to_basis_points(w, buckets) {
                Ok(bp) => Weight::Fixed(bp),
                Err(msg) => {
                    ConfigError::report(errors, format!("{field}.weight"), msg);
                    Weight::Fixed(0)
                }
            },
            (_, None, Some(schedule)) => {
                match validate_schedule(&format!("{field}.schedule"), schedule, buckets, errors) {
                    Some(schedule) => Weight::Scheduled(schedule),
                    None => Weight::Fixed(0),
                }
            }
        };
        total += u64::from(weight.max());
        versions.push(Version {
            name: v.name.clone(),
            weight,
        });
    }
    if total > u64::from(FULL_WEIGHT_BASIS_POINTS) {
        ConfigError::report(
            errors,
            "versions",
            format!(
                "the weights add up to {}, above 100 (a schedule counts with its last step)",
                format_basis_points(total)
            ),
        );
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{assert_rejected, errors_of, parse};

    #[test]
    fn weights_with_two_decimals_map_to_basis_points() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":0.25},{"name":"b","weight":33.33},{"name":"c","weight":0}]}"#,
        )
        .unwrap();
        let bps = c.weights_at(0);
        assert_eq!(bps, vec![10000 - 25 - 3333, 25, 3333, 0]);
        assert_eq!(
            c.split_at(0).ranges,
            vec![(0, 25), (25, 3358), (3358, 3358)]
        );
    }

    #[test]
    fn split_ranges_follow_list_order_per_bucket_count() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":10},{"name":"b","weight":20}],"hash":{"header":"u","buckets":100}}"#,
        )
        .unwrap();
        assert_eq!(
            c.split_at(0),
            Split {
                buckets: 100,
                ranges: vec![(0, 10), (10, 30)]
            }
        );
        assert_eq!(c.split_at(0).version_of_bucket(1), 1);
        assert_eq!(c.split_at(0).version_of_bucket(10), 1);
        assert_eq!(c.split_at(0).version_of_bucket(11), 2);
        assert_eq!(c.split_at(0).version_of_bucket(30), 2);
        assert_eq!(c.split_at(0).version_of_bucket(31), 0);
        assert_eq!(c.split_at(0).version_of_bucket(100), 0);
    }

    #[test]
    fn weights_may_add_up_to_exactly_100() {
        let c = parse(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":60},{"name":"b","weight":40}]}"#,
        )
        .unwrap();
        assert_eq!(c.weights_at(0)[0], 0);
        assert_eq!(c.split_at(0).ranges, vec![(0, 6000), (6000, 10000)]);
    }

    #[test]
    fn the_issue_example_error_reads_as_documented() {
        assert_eq!(
            errors_of(r#"{"versions":[{"name":"stable"},{"name":"canary","weight":120}]}"#),
            vec!["versions[1].weight: 120 is above 100".to_string()]
        );
    }

    #[test]
    fn every_weight_error_names_its_field() {
        let v = |w: &str| format!(r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":{w}}}]}}"#);
        assert_rejected(&v("-1"), "versions[1].weight: -1 is below 0");
        assert_rejected(&v("100.5"), "versions[1].weight: 100.5 is above 100");
        assert_rejected(
            &v("0.125"),
            "versions[1].weight: 0.125 has more than two decimals",
        );
        assert_rejected(
            &v("\"10\""),
            "versions[1].weight: invalid type: string \"10\"",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c"}]}"#,
            "versions[1].weight: missing",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s","weight":5}]}"#,
            "versions[0].weight: the first version is the baseline",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":60},{"name":"b","weight":40.5}]}"#,
            "versions: the weights add up to 100.5, above 100",
        );
    }

    #[test]
    fn weights_must_be_whole_buckets() {
        let cfg = |w: &str, b: u32| {
            format!(
                r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":{w}}}],"hash":{{"header":"u","buckets":{b}}}}}"#
            )
        };
        assert_rejected(
            &cfg("0.5", 100),
            "versions[1].weight: 0.5 is not a whole number of buckets: with hash.buckets = 100 weights go in steps of 1",
        );
        assert_rejected(
            &cfg("0.25", 1000),
            "versions[1].weight: 0.25 is not a whole number of buckets: with hash.buckets = 1000 weights go in steps of 0.1",
        );
        assert!(parse(&cfg("0.2", 1000)).is_ok());
        assert!(parse(&cfg("7", 100)).is_ok());
        assert!(parse(&cfg("0.01", 10000)).is_ok());
        assert_rejected(
            &cfg("5", 500),
            "hash.buckets: 500 is not one of 100, 1000, 10000",
        );
    }

    #[test]
    fn every_version_list_error_names_its_field() {
        assert_rejected(r#"{"versions":[]}"#, "versions: needs at least one version");
        let many: Vec<String> = (0..17)
            .map(|i| {
                if i == 0 {
                    r#"{"name":"v0"}"#.to_string()
                } else {
                    format!(r#"{{"name":"v{i}","weight":1}}"#)
                }
            })
            .collect();
        assert_rejected(
            &format!(r#"{{"versions":[{}]}}"#, many.join(",")),
            "versions: 17 versions; at most 16 are allowed",
        );
        assert_rejected(
            r#"{"versions":[{"name":""}]}"#,
            "versions[0].name: must not be empty",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"can ary","weight":1}]}"#,
            "versions[1].name: `can ary` has characters outside [A-Za-z0-9._-]",
        );
        assert_rejected(
            &format!(r#"{{"versions":[{{"name":"{}"}}]}}"#, "a".repeat(64)),
            "versions[0].name: 64 characters; at most 63 are allowed",
        );
        assert!(parse(&format!(
            r#"{{"versions":[{{"name":"{}"}}]}}"#,
            "a".repeat(63)
        ))
        .is_ok());
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"s","weight":1}]}"#,
            "versions[1].name: `s` is already the name of versions[0]",
        );
        assert_rejected(r#"{"route_header":"x"}"#, "missing field `versions`");
        assert_rejected(
            r#"{"versions":[{"name":"s","colour":"red"}]}"#,
            "versions[0].colour: unknown field `colour`, expected one of `name`, `weight`, `schedule`",
        );
    }
}

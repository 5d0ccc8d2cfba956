//! `versions[i].schedule`: a ramp as written, validated into a
//! [`crate::schedule::Schedule`].

use super::error::ConfigError;
use super::json::{self, Json};
use crate::schedule::{Schedule, Step};
use crate::units::{
    format_basis_points, format_number, parse_duration, parse_rfc3339, weight_to_basis_points,
};
use serde::Deserialize;

/// A ramp: from start + after, the weight is that step's weight.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Schedule"))]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    /// When the ramp starts, an RFC 3339 time such as 2026-12-01T09:00:00Z. Before it
    /// the weight is 0.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    start: String,
    /// The steps, `after` strictly increasing, `weight` never decreasing.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    steps: Vec<RawStep>,
    /// True: between two steps the weight rises linearly (rounded down to whole
    /// buckets).
    #[cfg_attr(feature = "schema", schemars(extend("default" = false)))]
    interpolate: Option<bool>,
}

impl RawSchedule {
    #[cold]
    #[inline(never)]
    pub(super) fn read(json: &mut Json) -> json::Result<Self> {
        let (mut start, mut steps, mut interpolate) = (None, None, None);
        let fields = ["start", "steps", "interpolate"];
        json.object("struct RawSchedule", &fields, 0b11, &mut |json, field| {
            match field {
                0 => start = Some(json.string()?),
                1 => steps = Some(json.array(RawStep::read)?),
                _ => interpolate = json.option(Json::boolean)?,
            }
            Ok(())
        })?;
        Ok(RawSchedule {
            start: start.unwrap_or_default(),
            steps: steps.unwrap_or_default(),
            interpolate,
        })
    }
}

/// One step of a ramp.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "Step"))]
#[serde(deny_unknown_fields)]
struct RawStep {
    /// Time after the start, in whole days, hours, minutes and seconds: 0s, 90s, 10m,
    /// 1h30m, 2d.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = DURATION_PATTERN)))]
    after: String,
    /// The weight from then on, a percentage as for a version's weight.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    weight: f64,
}

impl RawStep {
    #[cold]
    #[inline(never)]
    fn read(json: &mut Json) -> json::Result<Self> {
        let (mut after, mut weight) = (None, None);
        json.object(
            "struct RawStep",
            &["after", "weight"],
            0b11,
            &mut |json, field| {
                match field {
                    0 => after = Some(json.string()?),
                    _ => weight = Some(json.f64()?),
                }
                Ok(())
            },
        )?;
        Ok(RawStep {
            after: after.unwrap_or_default(),
            weight: weight.unwrap_or_default(),
        })
    }
}

// The JSON Schema's pattern of a duration, the same rule as `parse_duration`.
#[cfg(feature = "schema")]
pub(super) const DURATION_PATTERN: &str = r"^(?:[0-9]+d(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?|[0-9]+h(?:[0-9]+m)?(?:[0-9]+s)?|[0-9]+m(?:[0-9]+s)?|[0-9]+s)$";

#[cold]
#[inline(never)]
pub(super) fn validate_schedule(
    field: &str,
    raw: &RawSchedule,
    buckets: u32,
    errors: &mut Vec<ConfigError>,
) -> Option<Schedule> {
    let before = errors.len();
    let start_ms = parse_rfc3339(&raw.start)
        .map_err(|msg| ConfigError::report(errors, format!("{field}.start"), msg))
        .unwrap_or(0);
    if raw.steps.is_empty() {
        ConfigError::report(errors, format!("{field}.steps"), "needs at least one step");
    }
    let mut steps: Vec<Step> = Vec::with_capacity(raw.steps.len());
    for (j, step) in raw.steps.iter().enumerate() {
        let step_field = format!("{field}.steps[{j}]");
        let after_ms = parse_duration(&step.after)
            .map_err(|msg| ConfigError::report(errors, format!("{step_field}.after"), msg));
        let weight = weight_to_basis_points(step.weight, buckets)
            .map_err(|msg| ConfigError::report(errors, format!("{step_field}.weight"), msg));
        let (Ok(after_ms), Ok(weight_basis_points)) = (after_ms, weight) else {
            continue;
        };
        if let Some(previous) = steps.last() {
            if after_ms <= previous.after_ms {
                ConfigError::report(
                    errors,
                    format!("{step_field}.after"),
                    format!(
                        "`{}` is not later than the step before it: steps go in increasing time",
                        step.after
                    ),
                );
            }
            if weight_basis_points < previous.weight_basis_points {
                ConfigError::report(errors,
                    format!("{step_field}.weight"),
                    format!(
                        "{} is below the step before it ({}): a ramp never goes down (roll back by changing the config)",
                        format_number(step.weight),
                        format_basis_points(previous.weight_basis_points.into())
                    ),
                );
            }
        }
        steps.push(Step {
            after_ms,
            weight_basis_points,
        });
    }
    (errors.len() == before).then_some(Schedule {
        start_ms,
        steps,
        interpolate: raw.interpolate.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_rejected, parse};

    const RAMP: &str = r#"{
      "versions": [
        { "name": "stable" },
        { "name": "canary", "schedule": { "start": "2026-12-01T09:00:00Z",
            "steps": [ { "after": "0s", "weight": 1 }, { "after": "10m", "weight": 5 },
                       { "after": "30m", "weight": 25 }, { "after": "1h", "weight": 50 },
                       { "after": "2h", "weight": 100 } ],
            "interpolate": false } }
      ],
      "hash": { "header": "x-user-id" }
    }"#;
    const START: i64 = 1_796_115_600_000;

    #[test]
    fn the_documented_ramp_parses_and_moves_the_split() {
        let c = parse(RAMP).unwrap();
        assert!(c.is_scheduled());
        assert_eq!(c.weights_at(START - 1), vec![10000, 0]);
        assert_eq!(c.weights_at(START), vec![9900, 100]);
        assert_eq!(c.weights_at(START + 45 * 60_000), vec![7500, 2500]);
        assert_eq!(c.weights_at(START + 3 * 3_600_000), vec![0, 10000]);
        assert_eq!(c.split_at(START + 600_000).ranges, vec![(0, 500)]);
    }

    #[test]
    fn scheduled_ranges_are_reserved_so_no_user_moves_between_canaries() {
        // Two ramps: b's range starts after a's largest range, not after a's current one.
        let c = parse(
            r#"{"versions":[{"name":"s"},
                {"name":"a","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":10},{"after":"1h","weight":30}]}},
                {"name":"b","weight":20}],"hash":{"header":"u"}}"#,
        )
        .unwrap();
        assert_eq!(c.split_at(START).ranges, vec![(0, 1000), (3000, 5000)]);
        assert_eq!(
            c.split_at(START + 3_600_000).ranges,
            vec![(0, 3000), (3000, 5000)]
        );
        assert_eq!(c.weights_at(START), vec![7000, 1000, 2000]);
        let split = c.split_at(START);
        assert_eq!(split.version_of_bucket(1000), 1);
        assert_eq!(
            split.version_of_bucket(1001),
            0,
            "reserved for a's ramp, meanwhile baseline"
        );
        assert_eq!(split.version_of_bucket(3001), 2);
    }

    #[test]
    fn every_schedule_error_names_its_field() {
        let v = |schedule: &str| {
            format!(
                r#"{{"versions":[{{"name":"s"}},{{"name":"c","schedule":{schedule}}}],"hash":{{"header":"u","buckets":100}}}}"#
            )
        };
        assert_rejected(
            &v(r#"{"start":"tomorrow","steps":[{"after":"0s","weight":1}]}"#),
            "versions[1].schedule.start: `tomorrow` is not an RFC 3339 time",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[]}"#),
            "versions[1].schedule.steps: needs at least one step",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"10","weight":1}]}"#),
            "versions[1].schedule.steps[0].after: `10` is not a duration",
        );
        assert_rejected(
            &v(
                r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"0s","weight":2}]}"#,
            ),
            "versions[1].schedule.steps[1].after: `0s` is not later than the step before it",
        );
        assert_rejected(
            &v(
                r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":5},{"after":"1m","weight":2}]}"#,
            ),
            "versions[1].schedule.steps[1].weight: 2 is below the step before it (5)",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":0.5}]}"#),
            "versions[1].schedule.steps[0].weight: 0.5 is not a whole number of buckets",
        );
        assert_rejected(
            &v(r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":101}]}"#),
            "versions[1].schedule.steps[0].weight: 101 is above 100",
        );
        assert_rejected(
            &v(
                r#"{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1}],"every":"1m"}"#,
            ),
            "versions[1].schedule.every: unknown field `every`",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":5,"schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1}]}}]}"#,
            "versions[1].schedule: a version has either a weight or a schedule, not both",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1}]}}]}"#,
            "versions[0].schedule: the first version is the baseline",
        );
        assert_rejected(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":60},
                {"name":"c","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"1h","weight":50}]}}]}"#,
            "versions: the weights add up to 110, above 100 (a schedule counts with its last step)",
        );
    }
}

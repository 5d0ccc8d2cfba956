//! Pick mode (`hash.pick_header`): a rollout controller (Flagger, Argo Rollouts)
//! owns the route's weights; the filter keeps each user sticky by writing a per-user
//! value into the header Envoy's `route.weighted_clusters.header_name` reads.
//!
//! Envoy parses that header as one decimal u64 and takes the destination whose
//! cumulative range holds `value % T`, T the sum of the route's weights (in list
//! order: destination i owns `[w0 + .. + w(i-1), w0 + .. + wi)`). The filter writes
//!
//! ```text
//! pick = T - 1 - floor((bucket - 1) * T / buckets)
//! ```
//!
//! with `bucket` the user's bucket (1..=buckets, see [`crate::bucket`]) and T =
//! `hash.pick_total`. The value falls in `0..T`, so `% T` leaves it unchanged, and it
//! never increases as the bucket grows. Hence, for a destination list and weights
//! summing to T:
//! - the LAST destination with weight W gets exactly the buckets
//!   `b <= ceil(W * buckets / T)` (the canary of Flagger's `[primary, canary]`):
//!   with `buckets = T = 100` that is `b <= W`, Unleash's gradual rollout at W%;
//! - the FIRST destination with weight W gets the top buckets, exactly those with
//!   `(b - 1) * T >= (T - W) * buckets` (a canary listed first);
//! - every destination owns one contiguous bucket range, and the ranges move only at
//!   their boundaries when weights change, so a destination at either end whose
//!   weight rises only gains users.
//!
//! Shares are exact (W / T of the buckets) when T divides `W * buckets`, which holds
//! for every W when T divides `buckets` (T = 100, Istio's and the controllers' sum,
//! with any allowed bucket count); otherwise a destination is off by less than one
//! bucket.

// The config side of pick mode (`hash.pick_header`, `hash.pick_total`) is in
// config/pick.rs, which the config's sections import without importing this module;
// re-exported here, where it was first defined.
pub use crate::config::{PickConfig, DEFAULT_PICK_TOTAL, MAX_PICK_TOTAL, WEIGHTED_VERSION};

use crate::config::Config;
use crate::decide::{decide, Assignment, Reason, Rng, Routing};
use crate::request::RequestFacts;

/// The value written for requests the baseline must serve (a tripped guard,
/// `anonymous: "baseline"`): it falls in the FIRST destination's range whenever that
/// destination has a weight, which is the baseline in Flagger's `[primary, canary]`
/// order and in Argo Rollouts' `[stable, canary]` examples.
pub const BASELINE_PICK: u64 = 0;

/// The pick value of a bucket (1..=`buckets`), in `0..total`. Never panics: a bucket
/// outside the range is clamped, a zero `buckets` or `total` gives 0.
#[inline]
pub fn pick_value(bucket: u32, buckets: u32, total: u64) -> u64 {
    if buckets == 0 || total == 0 {
        return 0;
    }
    let below = u64::from(bucket.clamp(1, buckets) - 1);
    // (buckets - 1) * total < 2^14 * 2^32: no overflow.
    total - 1 - below * total / u64::from(buckets)
}

/// The destination Envoy takes for a pick value: the index whose cumulative range
/// holds `value % sum(weights)`. `None` when the weights sum to 0.
#[inline]
pub fn destination_of(value: u64, weights: &[u64]) -> Option<usize> {
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return None;
    }
    let point = value % total;
    let mut upper = 0u64;
    for (i, w) in weights.iter().enumerate() {
        upper += w;
        if point < upper {
            return Some(i);
        }
    }
    None
}

/// What the filter writes for a request in pick mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteWrite {
    /// Set `route_header` to this version's name, for a header route placed before
    /// the weighted route; and the pick header to `pick` if the version has a place
    /// in the documented order (see [`named_pick`]), so that the weighted route sends
    /// it there too where no header route exists; else remove the pick header.
    Version { version: usize, pick: Option<u64> },
    /// Set the pick header to this value; remove any client-sent route header.
    Pick(u64),
    /// Remove both headers: Envoy draws at random at the route's weights.
    Draw,
}

/// The decision in pick mode. Overrides and listed users name their version as
/// usual. Hashed users get their pick value and anonymous requests no value (the
/// route's weights decide; the assignment's `version` is then meaningless and its
/// reason is counted under [`WEIGHTED_VERSION`]). While the guard has tripped, every
/// request the weights would split, and every listed user of the guarded version,
/// gets [`BASELINE_PICK`] with reason `guard`: the filter cannot tell which of them
/// the weights would have sent to the guarded version, so all go to the baseline.
#[inline]
pub fn decide_pick(
    config: &Config,
    pick: &PickConfig,
    routing: &Routing,
    request: &impl RequestFacts,
    rng: &mut Rng,
) -> (Assignment, RouteWrite) {
    let assignment = decide(config, routing, request, rng);
    let to_baseline = |bucket| {
        (
            Assignment {
                version: 0,
                reason: Reason::Guard,
                bucket,
            },
            RouteWrite::Pick(BASELINE_PICK),
        )
    };
    match assignment.reason {
        Reason::Override | Reason::UserList => (
            assignment,
            RouteWrite::Version {
                version: assignment.version,
                pick: named_pick(assignment.version, config.versions.len(), pick.total),
            },
        ),
        Reason::Guard => to_baseline(assignment.bucket),
        Reason::Hash | Reason::Random if routing.guard_tripped && config.guard.is_some() => {
            to_baseline(assignment.bucket)
        }
        Reason::Hash => {
            let bucket = assignment.bucket.unwrap_or(1);
            (
                assignment,
                RouteWrite::Pick(pick_value(bucket, routing.split.buckets, pick.total)),
            )
        }
        Reason::Random => (assignment, RouteWrite::Draw),
        Reason::Baseline => (assignment, RouteWrite::Pick(BASELINE_PICK)),
    }
}

/// The pick value of a version named by an override or a user list, for the
/// documented destination order (the baseline first, the last version last, as in
/// Flagger's `[primary, canary]`): [`BASELINE_PICK`] for the baseline, `total - 1`
/// for the last version; `None` for versions in between, which need a header route.
/// Either lands in its destination's range whenever that destination has a weight.
#[inline]
pub fn named_pick(version: usize, versions: usize, total: u64) -> Option<u64> {
    match version {
        0 => Some(BASELINE_PICK),
        v if versions > 1 && v == versions - 1 => Some(total.saturating_sub(1)),
        _ => None,
    }
}

/// The version an upstream cluster serves, from its name, for per-version response
/// metrics and the guard in pick mode. A version `NAME` matches a cluster named
/// `NAME`; an Istio cluster `outbound|PORT|SUBSET|HOST` whose SUBSET is `NAME`
/// (DestinationRule subsets, Argo Rollouts' subset-level routing); or a cluster whose
/// host's first DNS label is `NAME` or ends in `-NAME` (Flagger's `podinfo-primary` /
/// `podinfo-canary`, Argo Rollouts' `myapp-stable` / `myapp-canary` services). The
/// longest matching name wins; `None` if no version matches.
#[inline]
pub fn version_of_cluster<'a>(
    cluster: &[u8],
    names: impl IntoIterator<Item = &'a str>,
) -> Option<usize> {
    let mut fields = cluster.split(|&b| b == b'|');
    let (subset, host) = match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(_), Some(_), Some(subset), Some(host)) if fields.next().is_none() => (subset, host),
        _ => (&b""[..], cluster),
    };
    let label = host.split(|&b| b == b'.').next().unwrap_or_default();
    let mut best: Option<(usize, usize)> = None;
    for (i, name) in names.into_iter().enumerate() {
        let name = name.as_bytes();
        let matches = cluster == name
            || (!subset.is_empty() && subset == name)
            || label == name
            || (label.len() > name.len()
                && label.ends_with(name)
                && label[label.len() - name.len() - 1] == b'-');
        if matches && best.is_none_or(|(_, len)| name.len() > len) {
            best = Some((i, name.len()));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::bucket_of;

    /// The bucket count a destination gets, the documented way.
    fn ceil_div(a: u64, b: u64) -> u64 {
        a.div_ceil(b)
    }

    #[test]
    fn values_stay_below_the_total_and_never_rise_with_the_bucket() {
        for (buckets, total) in [(100, 100), (10_000, 100), (100, 1000), (1000, 7), (100, 1)] {
            let mut last = u64::MAX;
            for b in 1..=buckets {
                let v = pick_value(b, buckets, total);
                assert!(v < total, "b {b} of {buckets}, T {total}: {v}");
                assert!(v <= last);
                last = v;
            }
            assert_eq!(pick_value(1, buckets, total), total - 1);
        }
        assert_eq!(pick_value(5, 0, 100), 0);
        assert_eq!(pick_value(5, 100, 0), 0);
        assert_eq!(pick_value(0, 100, 100), 99, "clamped to bucket 1");
        assert_eq!(pick_value(500, 100, 100), 0, "clamped to the last bucket");
        assert_eq!(pick_value(10_000, 10_000, MAX_PICK_TOTAL), 429_496);
    }

    #[test]
    fn the_last_destination_gets_the_low_buckets_and_the_first_the_high_ones() {
        // Every (buckets, T, W): last destination = b <= ceil(W*B/T); first = b-1 >= (T-W)*B/T.
        for (buckets, total) in [
            (100u32, 100u64),
            (1000, 100),
            (10_000, 100),
            (100, 1000),
            (1000, 1000),
            (100, 7),
            (10_000, 3),
            (100, 250),
        ] {
            for w in 0..=total {
                let last = [total - w, w];
                let first = [w, total - w];
                let b64 = u64::from(buckets);
                for b in 1..=buckets {
                    let v = pick_value(b, buckets, total);
                    let in_last = destination_of(v, &last) == Some(1);
                    assert_eq!(
                        in_last,
                        u64::from(b) <= ceil_div(w * b64, total),
                        "last: B {buckets} T {total} W {w} b {b}"
                    );
                    let in_first = destination_of(v, &first) == Some(0);
                    assert_eq!(
                        in_first,
                        (u64::from(b) - 1) * total >= (total - w) * b64,
                        "first: B {buckets} T {total} W {w} b {b}"
                    );
                }
                // Exact share when T divides W * B, else off by less than one bucket.
                let count_last = (1..=buckets)
                    .filter(|&b| destination_of(pick_value(b, buckets, total), &last) == Some(1))
                    .count() as u64;
                let exact = w * b64;
                if exact % total == 0 {
                    assert_eq!(count_last * total, exact, "B {buckets} T {total} W {w}");
                } else {
                    assert!(count_last * total > exact && (count_last - 1) * total < exact);
                }
            }
        }
    }

    #[test]
    fn raising_a_weight_at_either_end_only_adds_users() {
        for (buckets, total) in [(100u32, 100u64), (10_000, 100), (1000, 7)] {
            for canary_first in [false, true] {
                let mut before: Vec<bool> = vec![false; buckets as usize];
                for w in 0..=total {
                    let weights = if canary_first {
                        [w, total - w]
                    } else {
                        [total - w, w]
                    };
                    let canary = if canary_first { 0 } else { 1 };
                    let now: Vec<bool> = (1..=buckets)
                        .map(|b| {
                            destination_of(pick_value(b, buckets, total), &weights) == Some(canary)
                        })
                        .collect();
                    for (i, (was, is)) in before.iter().zip(&now).enumerate() {
                        assert!(!was || *is, "bucket {} left at W {w}", i + 1);
                    }
                    before = now;
                }
                assert!(before.iter().all(|&c| c));
            }
        }
    }

    #[test]
    fn flaggers_canary_cohort_equals_unleash_gradual_rollout_at_every_percentage() {
        let users: Vec<String> = (0..3000).map(|i| format!("user-{i}")).collect();
        for p in 0..=100u64 {
            for user in &users {
                let normalized = bucket_of(b"gr1:", user.as_bytes(), 100);
                let v = pick_value(normalized, 100, 100);
                let in_canary = destination_of(v, &[100 - p, p]) == Some(1);
                assert_eq!(in_canary, u64::from(normalized) <= p, "{user} at {p}%");
            }
        }
        // Unleash's published pair: user 123 of group gr1 is at 73.
        let v = pick_value(bucket_of(b"gr1:", b"123", 100), 100, 100);
        assert_eq!(destination_of(v, &[27, 73]), Some(1));
        assert_eq!(destination_of(v, &[28, 72]), Some(0));
    }

    #[test]
    fn three_destinations_get_contiguous_ranges() {
        let weights = [50u64, 30, 20];
        let mut seen = Vec::new();
        for b in 1..=100u32 {
            let d = destination_of(pick_value(b, 100, 100), &weights).unwrap();
            if seen.last() != Some(&d) {
                seen.push(d);
            }
        }
        assert_eq!(seen, vec![2, 1, 0]);
    }

    fn decide_with(
        config: &Config,
        tripped: bool,
        pairs: &[(&str, &str)],
    ) -> (Assignment, RouteWrite) {
        use crate::request::{serialize_headers, SerializedHeaders};
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let bytes = serialize_headers(&pairs);
        let routing = Routing {
            guard_tripped: tripped,
            ..Routing::at(config, 0)
        };
        let pick = config.hash.pick.clone().unwrap();
        decide_pick(
            config,
            &pick,
            &routing,
            &SerializedHeaders::new(&bytes),
            &mut Rng::new(5),
        )
    }

    #[test]
    fn every_decision_writes_what_the_documented_table_says() {
        let json = r#"{"versions":[{"name":"primary"},{"name":"canary"}],
            "override":{"header":"x-canary"},"users":{"canary":["qa-alice"],"primary":["vip"]},
            "hash":{"header":"x-user-id","salt":"gr1","buckets":100,"pick_header":"x-pick"},
            "guard":{"version":"canary","max_error_rate":0.1}}"#;
        let c = Config::from_json(json.as_bytes()).unwrap();
        for tripped in [false, true] {
            let (a, w) = decide_with(&c, tripped, &[("x-canary", "canary")]);
            assert_eq!(
                (a.reason, w),
                (
                    Reason::Override,
                    RouteWrite::Version {
                        version: 1,
                        pick: Some(99)
                    }
                )
            );
            let (a, w) = decide_with(&c, tripped, &[("x-user-id", "vip")]);
            assert_eq!(
                (a.reason, w),
                (
                    Reason::UserList,
                    RouteWrite::Version {
                        version: 0,
                        pick: Some(0)
                    }
                )
            );
        }
        let (a, w) = decide_with(&c, false, &[("x-user-id", "qa-alice")]);
        assert_eq!(
            (a.reason, w),
            (
                Reason::UserList,
                RouteWrite::Version {
                    version: 1,
                    pick: Some(99)
                }
            )
        );
        let (a, w) = decide_with(&c, true, &[("x-user-id", "qa-alice")]);
        assert_eq!(
            (a.version, a.reason, w),
            (0, Reason::Guard, RouteWrite::Pick(0))
        );
        let (a, w) = decide_with(&c, false, &[("x-user-id", "123")]);
        assert_eq!((a.reason, a.bucket), (Reason::Hash, Some(73)));
        assert_eq!(w, RouteWrite::Pick(pick_value(73, 100, 100)));
        assert_eq!(w, RouteWrite::Pick(27));
        let (a, w) = decide_with(&c, true, &[("x-user-id", "123")]);
        assert_eq!(
            (a.version, a.reason, w),
            (0, Reason::Guard, RouteWrite::Pick(0))
        );
        let (a, w) = decide_with(&c, false, &[]);
        assert_eq!((a.reason, w), (Reason::Random, RouteWrite::Draw));
        let (a, w) = decide_with(&c, true, &[]);
        assert_eq!((a.reason, w), (Reason::Guard, RouteWrite::Pick(0)));
        let c = Config::from_json(
            json.replace("\"override\"", "\"anonymous\":\"baseline\",\"override\"")
                .as_bytes(),
        )
        .unwrap();
        let (a, w) = decide_with(&c, false, &[]);
        assert_eq!(
            (a.version, a.reason, w),
            (0, Reason::Baseline, RouteWrite::Pick(0))
        );
    }

    #[test]
    fn named_versions_take_the_ends_of_the_documented_order() {
        assert_eq!(named_pick(0, 2, 100), Some(0));
        assert_eq!(named_pick(1, 2, 100), Some(99));
        assert_eq!(destination_of(99, &[99, 1]), Some(1));
        assert_eq!(destination_of(0, &[1, 99]), Some(0));
        assert_eq!(named_pick(1, 3, 100), None, "in between: a header route");
        assert_eq!(named_pick(2, 3, 1000), Some(999));
        assert_eq!(named_pick(0, 1, 100), Some(0));
    }

    #[test]
    fn destination_of_follows_envoys_cumulative_ranges() {
        assert_eq!(destination_of(0, &[90, 10]), Some(0));
        assert_eq!(destination_of(89, &[90, 10]), Some(0));
        assert_eq!(destination_of(90, &[90, 10]), Some(1));
        assert_eq!(destination_of(190, &[90, 10]), Some(1), "value % total");
        assert_eq!(
            destination_of(0, &[0, 10]),
            Some(1),
            "a zero weight owns nothing"
        );
        assert_eq!(destination_of(5, &[0, 0]), None);
        assert_eq!(destination_of(BASELINE_PICK, &[1, 99]), Some(0));
    }

    #[test]
    fn clusters_map_to_versions_by_name_subset_or_service() {
        let v = ["primary", "canary"];
        let of = |c: &str| version_of_cluster(c.as_bytes(), v);
        assert_eq!(of("primary"), Some(0));
        assert_eq!(of("canary"), Some(1));
        assert_eq!(
            of("outbound|80||podinfo-primary.test.svc.cluster.local"),
            Some(0)
        );
        assert_eq!(
            of("outbound|80||podinfo-canary.test.svc.cluster.local"),
            Some(1)
        );
        assert_eq!(
            of("outbound|9080|canary|reviews.default.svc.cluster.local"),
            Some(1)
        );
        assert_eq!(
            of("outbound|9080|primary|reviews.default.svc.cluster.local"),
            Some(0)
        );
        assert_eq!(of("outbound|80||podinfo.test.svc.cluster.local"), None);
        assert_eq!(of("outbound|80||notcanary.test.svc.cluster.local"), None);
        assert_eq!(of("outbound|80||canary.test.svc.cluster.local"), Some(1));
        assert_eq!(of(""), None);
        assert_eq!(of("a|b|c|d|e"), None);
        // The longest name wins over a suffix of it.
        let v = ["stable", "canary", "big-canary"];
        assert_eq!(
            version_of_cluster(b"outbound|80||shop-big-canary.ns.svc.cluster.local", v),
            Some(2)
        );
        assert_eq!(
            version_of_cluster(b"outbound|80||shop-canary.ns.svc.cluster.local", v),
            Some(1)
        );
        assert_eq!(version_of_cluster(&[0xff, b'|', 0xfe], v), None);
    }
}

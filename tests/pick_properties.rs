//! Properties of pick mode over generated input (fixed seed, like tests/properties.rs):
//! the pick value is always in `0..pick_total`; every destination's share of the
//! buckets is within one bucket of its weight for any route (any order, any number
//! of destinations, any sum); raising the last or the first destination's weight
//! never moves a bucket out of it; the cluster-name mapping and the pick decision
//! never panic on any bytes.

use canary_router::config::Config;
use canary_router::decide::{Rng, Routing};
use canary_router::pick::{
    decide_pick, destination_of, pick_value, version_of_cluster, RouteWrite,
};
use canary_router::request::{serialize_headers, SerializedHeaders};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        RunnerConfig {
            cases,
            failure_persistence: None,
            ..RunnerConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

fn buckets() -> impl Strategy<Value = u32> {
    prop_oneof![Just(100u32), Just(1000), Just(10_000)]
}

#[test]
fn the_pick_value_is_always_below_the_total() {
    runner(20_000)
        .run(
            &(buckets(), any::<u32>(), 1..=u64::from(u32::MAX)),
            |(b, bucket, total)| {
                let v = pick_value(bucket, b, total);
                prop_assert!(v < total);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn every_destination_gets_its_weight_within_one_bucket_and_ranges_are_contiguous() {
    let routes = prop::collection::vec(0u64..=1000, 1..=6)
        .prop_filter("a weight above 0", |w| w.iter().sum::<u64>() > 0);
    runner(600)
        .run(&(buckets(), routes), |(b, weights)| {
            let total: u64 = weights.iter().sum();
            let mut counts = vec![0u64; weights.len()];
            let mut order = Vec::new();
            for bucket in 1..=b {
                let d = destination_of(pick_value(bucket, b, total), &weights).unwrap();
                counts[d] += 1;
                if order.last() != Some(&d) {
                    prop_assert!(!order.contains(&d), "destination {d} owns two ranges");
                    order.push(d);
                }
            }
            for (d, &w) in weights.iter().enumerate() {
                // |count - w * b / total| < 1, in integers.
                let exact = w * u64::from(b);
                prop_assert!(
                    counts[d] * total + total > exact && exact + total > counts[d] * total,
                    "destination {d}: {} buckets for weight {w} of {total}",
                    counts[d]
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn raising_the_first_or_last_weight_never_moves_a_bucket_out() {
    let steps = prop::collection::vec(0u64..=100, 2..=8).prop_map(|mut v| {
        v.sort_unstable();
        v
    });
    runner(300)
        .run(&(buckets(), steps, any::<bool>()), |(b, steps, first)| {
            let mut before = vec![false; b as usize];
            for w in steps {
                let weights = if first { [w, 100 - w] } else { [100 - w, w] };
                let canary = usize::from(!first);
                for bucket in 1..=b {
                    let now = destination_of(pick_value(bucket, b, 100), &weights) == Some(canary);
                    prop_assert!(!before[bucket as usize - 1] || now);
                    before[bucket as usize - 1] = now;
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn cluster_names_and_pick_decisions_never_panic() {
    let config = Config::from_json(
        br#"{"versions":[{"name":"stable"},{"name":"canary"}],"override":{"header":"x-canary"},
             "users":{"canary":["qa"]},
             "hash":{"header":"x-user-id","cookie":"uid","buckets":1000,"pick_header":"x-pick","pick_total":7},
             "guard":{"version":"canary","max_error_rate":0.1}}"#,
    )
    .unwrap();
    let pick = config.hash.pick.clone().unwrap();
    let bytes = prop::collection::vec(any::<u8>(), 0..64);
    runner(5000)
        .run(
            &(bytes.clone(), bytes.clone(), bytes, any::<bool>()),
            |(cluster, name, value, tripped)| {
                let _ = version_of_cluster(&cluster, ["stable", "canary"]);
                let headers = serialize_headers(&[
                    (&name[..], &value[..]),
                    (b"x-user-id", &value[..]),
                    (b"cookie", &cluster[..]),
                ]);
                let routing = Routing {
                    guard_tripped: tripped,
                    ..Routing::at(&config, 0)
                };
                let (a, write) = decide_pick(
                    &config,
                    &pick,
                    &routing,
                    &SerializedHeaders::new(&headers),
                    &mut Rng::new(1),
                );
                prop_assert!(a.version < 2);
                match write {
                    RouteWrite::Pick(v) => prop_assert!(v < 7),
                    RouteWrite::Version { pick: Some(v), .. } => prop_assert!(v < 7),
                    _ => {}
                }
                Ok(())
            },
        )
        .unwrap();
}

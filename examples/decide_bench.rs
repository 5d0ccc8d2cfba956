//! Micro-benchmark of the decision, natively, with the config already parsed:
//! nanoseconds per decision (header-map lookups + decide) for hashed users with
//! 36-byte IDs, overrides, anonymous requests, and a config with 100k listed users;
//! allocations per decision; and how long the large config takes to parse.
//!
//! Run by `make bench` (`cargo run --release --example decide_bench`); writes
//! target/bench/decide.json. A benchmark, not a test: it asserts nothing about time.

use canary_router::bucket::bucket_of;
use canary_router::config::Config;
use canary_router::decide::{decide, Reason, Rng, Routing};
use canary_router::request::{serialize_headers, SerializedHeaders};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts allocations, to show the per-request path makes none.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TYPICAL: &str = r#"{
  "route_header": "x-canary-version",
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 10 } ],
  "override": { "header": "x-canary", "cookie": "canary" },
  "users": { "canary": ["qa-alice", "qa-bob"] },
  "hash": { "header": "x-user-id", "cookie": "uid", "salt": "bench", "buckets": 10000 },
  "anonymous": "random",
  "metrics_prefix": "canary"
}"#;

/// 16 versions and 100k listed users (36 bytes each), as in `make bench` (e).
fn large_config_json() -> String {
    let mut names = vec!["stable".to_string(), "canary".to_string()];
    names.extend((2..16).map(|i| format!("v{i}")));
    let versions: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| match i {
            0 => format!(r#"{{"name":"{n}"}}"#),
            1 => format!(r#"{{"name":"{n}","weight":10}}"#),
            _ => format!(r#"{{"name":"{n}","weight":5}}"#),
        })
        .collect();
    let mut users: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for i in 0..100_000 {
        users[i % names.len()].push(format!("\"{}\"", listed_user(i)));
    }
    let users: Vec<String> = names
        .iter()
        .zip(&users)
        .map(|(n, ids)| format!("\"{n}\":[{}]", ids.join(",")))
        .collect();
    format!(
        r#"{{"versions":[{}],"override":{{"header":"x-canary","cookie":"canary"}},"users":{{{}}},
            "hash":{{"header":"x-user-id","cookie":"uid","salt":"bench","buckets":10000}},"anonymous":"random"}}"#,
        versions.join(","),
        users.join(",")
    )
}

fn listed_user(i: usize) -> String {
    format!("listed-{i:08}-0000-4000-a000-000000")
}

/// A 36-byte, UUID-shaped user ID.
fn user_id(i: usize) -> String {
    let a = (i as u64).wrapping_mul(2_654_435_761) % (1 << 32);
    format!(
        "{a:08x}-{:04x}-4{:03x}-a{:03x}-{i:012}",
        (i * 40_503) % 65_536,
        i % 4096,
        (a >> 16) % 4096
    )
}

/// A header map like the one Envoy hands the filter, plus `extra`.
fn request(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut pairs: Vec<(&[u8], &[u8])> = vec![
        (b":authority", b"shop.example.com"),
        (b":path", b"/api/v1/cart?currency=EUR"),
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (
            b"user-agent",
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"x-forwarded-proto", b"http"),
        (b"x-request-id", b"0f5a3c8e-7d2b-4e41-9a6f-3b8d2c1e5f70"),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    serialize_headers(&pairs)
}

struct Case {
    name: &'static str,
    config: &'static Config,
    requests: Vec<Vec<u8>>,
    expect: Option<Reason>,
}

struct Measured {
    name: &'static str,
    ns_min: f64,
    ns_median: f64,
    allocations_per_decision: f64,
}

const ITERATIONS: usize = 1 << 21;
const REPEATS: usize = 7;

fn measure(case: &Case) -> Measured {
    let maps: Vec<SerializedHeaders<'_>> = case
        .requests
        .iter()
        .map(|r| SerializedHeaders::new(r))
        .collect();
    let mask = maps.len() - 1;
    assert!(maps.len().is_power_of_two());
    // The split of the moment, as the filter keeps it between ticks.
    let routing = Routing::at(case.config, 0);
    if let Some(reason) = case.expect {
        let a = decide(case.config, &routing, &maps[0], &mut Rng::new(1));
        assert_eq!(
            a.reason, reason,
            "{}: the case does not test what it says",
            case.name
        );
    }
    let mut rng = Rng::new(0x5eed);
    let mut samples = Vec::with_capacity(REPEATS);
    let mut allocations = 0;
    for _ in 0..REPEATS {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut sink = 0usize;
        for i in 0..ITERATIONS {
            let a = decide(
                black_box(case.config),
                black_box(&routing),
                black_box(&maps[i & mask]),
                &mut rng,
            );
            sink = sink.wrapping_add(a.version);
        }
        let elapsed = start.elapsed();
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
        black_box(sink);
        samples.push(elapsed.as_nanos() as f64 / ITERATIONS as f64);
    }
    samples.sort_by(f64::total_cmp);
    Measured {
        name: case.name,
        ns_min: samples[0],
        ns_median: samples[REPEATS / 2],
        allocations_per_decision: allocations as f64 / (REPEATS * ITERATIONS) as f64,
    }
}

fn measure_hash_only() -> Measured {
    let ids: Vec<String> = (0..1024).map(user_id).collect();
    let mut samples = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let start = Instant::now();
        let mut sink = 0u32;
        for i in 0..ITERATIONS {
            sink ^= bucket_of(
                black_box(b"bench:"),
                black_box(ids[i & 1023].as_bytes()),
                10_000,
            );
        }
        black_box(sink);
        samples.push(start.elapsed().as_nanos() as f64 / ITERATIONS as f64);
    }
    samples.sort_by(f64::total_cmp);
    Measured {
        name: "murmur3 bucket alone (\"bench:\" + 36-byte ID)",
        ns_min: samples[0],
        ns_median: samples[REPEATS / 2],
        allocations_per_decision: 0.0,
    }
}

fn time_parse(json: &str) -> (Duration, Config) {
    let mut best = Duration::MAX;
    let mut config = None;
    for _ in 0..3 {
        let start = Instant::now();
        let parsed = Config::from_json(json.as_bytes());
        best = best.min(start.elapsed());
        config = Some(parsed);
    }
    match config {
        Some(Ok(config)) => (best, config),
        Some(Err(errors)) => panic!("bench config rejected: {errors:?}"),
        None => unreachable!(),
    }
}

fn main() {
    let (typical_parse, typical) = time_parse(TYPICAL);
    let large_json = large_config_json();
    let (large_parse, large) = time_parse(&large_json);
    let typical: &'static Config = Box::leak(Box::new(typical));
    let large: &'static Config = Box::leak(Box::new(large));

    let hashed: Vec<Vec<u8>> = (0..1024)
        .map(|i| request(&[("x-user-id", &user_id(i))]))
        .collect();
    let cases = [
        Case {
            name: "hashed user, 36-byte ID in x-user-id (typical config)",
            config: typical,
            requests: hashed.clone(),
            expect: Some(Reason::Hash),
        },
        Case {
            name: "hashed user, ID in the uid cookie among others (typical)",
            config: typical,
            requests: (0..1024)
                .map(|i| {
                    let cookie = format!("theme=dark; uid={}; _ga=GA1.2.3.4", user_id(i));
                    request(&[("cookie", &cookie)])
                })
                .collect(),
            expect: Some(Reason::Hash),
        },
        Case {
            name: "override header x-canary: canary (typical)",
            config: typical,
            requests: vec![request(&[("x-canary", "canary")])],
            expect: Some(Reason::Override),
        },
        Case {
            name: "anonymous, weighted random (typical)",
            config: typical,
            requests: vec![request(&[])],
            expect: Some(Reason::Random),
        },
        Case {
            name: "listed user, 100k users / 16 versions (large)",
            config: large,
            requests: (0..1024)
                .map(|i| request(&[("x-user-id", &listed_user(i * 97))]))
                .collect(),
            expect: Some(Reason::UserList),
        },
        Case {
            name: "hashed user, not listed, 100k users / 16 versions (large)",
            config: large,
            requests: hashed,
            expect: Some(Reason::Hash),
        },
    ];

    let mut results: Vec<Measured> = cases.iter().map(measure).collect();
    results.push(measure_hash_only());

    println!("decision, natively, config already parsed ({ITERATIONS} decisions x {REPEATS}):");
    println!(
        "  {:<60} {:>10} {:>10} {:>8}",
        "case", "ns median", "ns min", "allocs"
    );
    for m in &results {
        println!(
            "  {:<60} {:>10.1} {:>10.1} {:>8.3}",
            m.name, m.ns_median, m.ns_min, m.allocations_per_decision
        );
    }
    println!(
        "config parse + validate, natively: typical {:.1} µs, large (16 versions, 100k users, {} KiB of JSON) {:.1} ms",
        typical_parse.as_secs_f64() * 1e6,
        large_json.len() / 1024,
        large_parse.as_secs_f64() * 1e3
    );

    let cases_json: Vec<String> = results
        .iter()
        .map(|m| {
            format!(
                r#"{{"name":"{}","ns_per_decision":{:.2},"ns_min":{:.2},"allocations_per_decision":{}}}"#,
                m.name.replace('"', "\\\""),
                m.ns_median,
                m.ns_min,
                m.allocations_per_decision
            )
        })
        .collect();
    let json = format!(
        r#"{{"iterations":{ITERATIONS},"repeats":{REPEATS},"cases":[{}],"parse_typical_us":{:.2},"parse_large_ms":{:.2},"large_config_json_bytes":{}}}"#,
        cases_json.join(","),
        typical_parse.as_secs_f64() * 1e6,
        large_parse.as_secs_f64() * 1e3,
        large_json.len()
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("decide.json"), json + "\n"))
    {
        eprintln!("cannot write target/bench/decide.json: {e}");
    }
}

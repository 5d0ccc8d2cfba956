//! End-to-end with real browsers: Debian's Chromium, headless, driven by Playwright
//! for Python (`tests/browser/visitors.py`), through a real Envoy with the built
//! filter. Each version's site serves a page that loads a script only that version
//! has, so a page whose HTML and script come from different versions breaks.
//!
//! 200 fresh browser profiles load the page 3 times each at a canary weight of 10;
//! then the weight ramps to 25 (a config pushed by ECDS, as Istio delivers it) and
//! each loads it once more. With `anonymous: "cookie"`: no broken page, the canary's
//! share of visitors within 4 sigma of its weight before and after, and no visitor
//! leaves the canary on the ramp. The same with `anonymous: "random"`: the broken
//! page loads are counted and printed.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) and Playwright in the
//! virtualenv (`make browser-tools`, which `make test` runs): a missing one is a
//! failure, never a skip.

mod harness;

use harness::{free_port, Envoy, EnvoyOptions};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const VISITORS: usize = 200;
const LOADS: usize = 3;
const WEIGHT_BEFORE: f64 = 0.10;
const WEIGHT_AFTER: f64 = 0.25;

fn config(anonymous: &str, weight: u32) -> String {
    format!(
        r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","weight":{weight}}}],
            "hash":{{"cookie":"visitor","salt":"browser"}},"anonymous":"{anonymous}"}}"#
    )
}

/// The Python with Playwright: `$BROWSER_PYTHON`, else `.tools/venv/bin/python`.
fn python() -> PathBuf {
    let path = std::env::var_os("BROWSER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| harness::repo_root().join(".tools/venv/bin/python"));
    let ok = Command::new(&path)
        .args(["-c", "import playwright.async_api"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import playwright: run `make browser-tools` (or set BROWSER_PYTHON). \
         End-to-end tests never skip.",
        path.display()
    );
    path
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "no Chromium at {}: run `make browser-tools` (Debian's chromium) or set CHROMIUM. \
         End-to-end tests never skip.",
        path.display()
    );
    path
}

/// Kills the driver (and so its browser) on every path.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One visitor: the versions of each page load's HTML and script (None: the
/// script did not load), and its cookies.
#[derive(Debug)]
struct Visitor {
    loads: Vec<(String, Option<String>)>,
    cookies: Vec<Value>,
}

fn visitors(phase: &Value) -> Vec<Visitor> {
    phase["visitors"]
        .as_array()
        .expect("visitors")
        .iter()
        .map(|v| Visitor {
            loads: v["loads"]
                .as_array()
                .expect("loads")
                .iter()
                .map(|l| {
                    (
                        l[0].as_str().unwrap_or("none").to_string(),
                        l[1].as_str().map(str::to_string),
                    )
                })
                .collect(),
            cookies: v["cookies"].as_array().cloned().unwrap_or_default(),
        })
        .collect()
}

/// A page is broken when its script did not load or came from another version.
fn broken(load: &(String, Option<String>)) -> bool {
    load.1.as_deref() != Some(load.0.as_str())
}

/// The two phases of one run: 200 fresh profiles at weight 10, then again at 25.
fn run(anonymous: &str) -> (Vec<Visitor>, Vec<Visitor>) {
    let (python, chromium) = (python(), chromium());
    let (stable_port, canary_port) = (free_port(), free_port());
    let envoy = Envoy::start(EnvoyOptions {
        filter_from_ecds: true,
        upstream_ports: vec![
            ("stable".into(), stable_port),
            ("canary".into(), canary_port),
        ],
        ..EnvoyOptions::with_config(config(anonymous, 10))
    });
    let started = Instant::now();
    // `localhost`: a browser keeps a Secure cookie from plain HTTP only there.
    let url = format!("http://localhost:{}/", envoy.listener.port());
    let mut child = Command::new(python)
        .arg(harness::repo_root().join("tests/browser/visitors.py"))
        .args(["--url", &url])
        .args(["--stable-port", &stable_port.to_string()])
        .args(["--canary-port", &canary_port.to_string()])
        .args(["--visitors", &VISITORS.to_string()])
        .args(["--loads", &LOADS.to_string()])
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tests/browser/visitors.py");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let _driver = Driver(child);
    let mut read_phase = |n: u64| -> Value {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the driver");
        assert!(
            !line.is_empty(),
            "the browser driver exited before phase {n}"
        );
        let phase: Value = serde_json::from_str(&line).expect("the driver's JSON");
        assert_eq!(phase["phase"], n);
        phase
    };
    let before = visitors(&read_phase(1));
    let phase_1 = started.elapsed();
    // The ramp step: a new config, as istiod pushes it.
    envoy
        .push_ecds(&config(anonymous, 25))
        .expect("the ramp step is taken");
    writeln!(stdin, "ramped").expect("tell the driver");
    stdin.flush().expect("flush");
    let after = visitors(&read_phase(2));
    println!(
        "anonymous: {anonymous}: {} page loads in {:.1} s (phase 1 {:.1} s)",
        VISITORS * (LOADS + 1),
        started.elapsed().as_secs_f64(),
        phase_1.as_secs_f64()
    );
    envoy.assert_vm_healthy();
    (before, after)
}

/// Binomial bound: `hits` of `n` within 4 sigma of `p`; also returns the bound.
fn within_4_sigma(hits: usize, n: usize, p: f64) -> (bool, f64) {
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (
        (hits as f64 - n as f64 * p).abs() <= 4.0 * sigma,
        4.0 * sigma,
    )
}

#[test]
fn browsers_with_the_visitor_cookie_never_mix_versions_and_stay_on_the_ramp() {
    let (before, after) = run("cookie");
    assert_eq!((before.len(), after.len()), (VISITORS, VISITORS));
    let broken_loads: usize = before
        .iter()
        .chain(&after)
        .map(|v| v.loads.iter().filter(|l| broken(l)).count())
        .sum();
    let mut canary_before = 0;
    let mut canary_after = 0;
    let mut left_canary = 0;
    let mut moved_in = 0;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b.loads.len(), LOADS);
        // One version for every load of phase 1: the first page too.
        let first = &b.loads[0].0;
        assert!(
            b.loads.iter().all(|l| &l.0 == first),
            "visitor {i} moved between loads: {:?}",
            b.loads
        );
        // Its ID, in a cookie with the default attributes.
        let ids: Vec<&Value> = a
            .cookies
            .iter()
            .filter(|c| c["name"] == "visitor")
            .collect();
        assert_eq!(ids.len(), 1, "visitor {i}: {:?}", a.cookies);
        assert_eq!(ids[0]["value"].as_str().map(str::len), Some(22));
        assert_eq!(
            (
                &ids[0]["httpOnly"],
                &ids[0]["secure"],
                &ids[0]["sameSite"],
                &ids[0]["path"]
            ),
            (
                &Value::from(true),
                &Value::from(true),
                &Value::from("Lax"),
                &Value::from("/")
            ),
            "visitor {i}"
        );
        let was_canary = first == "canary";
        let is_canary = a.loads[0].0 == "canary";
        canary_before += usize::from(was_canary);
        canary_after += usize::from(is_canary);
        left_canary += usize::from(was_canary && !is_canary);
        moved_in += usize::from(!was_canary && is_canary);
    }
    let (ok_before, bound_before) = within_4_sigma(canary_before, VISITORS, WEIGHT_BEFORE);
    let (ok_after, bound_after) = within_4_sigma(canary_after, VISITORS, WEIGHT_AFTER);
    println!(
        "anonymous: cookie: {broken_loads} broken page loads of {}; canary visitors {canary_before}/{VISITORS} at 10% (4 sigma: {:.0} +- {bound_before:.1}), {canary_after}/{VISITORS} at 25% (4 sigma: {:.0} +- {bound_after:.1}); {moved_in} moved into the canary on the ramp, {left_canary} left it",
        VISITORS * (LOADS + 1),
        VISITORS as f64 * WEIGHT_BEFORE,
        VISITORS as f64 * WEIGHT_AFTER,
    );
    assert_eq!(broken_loads, 0, "pages with a missing or mixed script");
    assert!(
        ok_before,
        "{canary_before} of {VISITORS} in the canary at 10%"
    );
    assert!(
        ok_after,
        "{canary_after} of {VISITORS} in the canary at 25%"
    );
    assert_eq!(left_canary, 0, "visitors left the canary on the ramp");
}

#[test]
fn browsers_without_the_visitor_cookie_break_pages_at_random() {
    let (before, after) = run("random");
    let count = |visitors: &[Visitor]| -> usize {
        visitors
            .iter()
            .map(|v| v.loads.iter().filter(|l| broken(l)).count())
            .sum()
    };
    let (broken_before, broken_after) = (count(&before), count(&after));
    let switched = before
        .iter()
        .filter(|v| v.loads.iter().any(|l| l.0 != v.loads[0].0))
        .count();
    assert!(
        before
            .iter()
            .chain(&after)
            .all(|v| v.cookies.iter().all(|c| c["name"] != "visitor")),
        "anonymous: random sets no cookie"
    );
    println!(
        "anonymous: random: {} broken page loads of {} ({broken_before} of {} at 10%, {broken_after} of {VISITORS} at 25%); {switched} of {VISITORS} visitors saw both versions' pages in phase 1",
        broken_before + broken_after,
        VISITORS * (LOADS + 1),
        VISITORS * LOADS
    );
    // Each load draws the page and the script apart: it breaks with probability
    // 2 w (1 - w). Asserted only where 0 broken loads is impossible in practice.
    let p_none = (1.0 - 2.0 * WEIGHT_BEFORE * (1.0 - WEIGHT_BEFORE))
        .powi((VISITORS * LOADS) as i32)
        * (1.0 - 2.0 * WEIGHT_AFTER * (1.0 - WEIGHT_AFTER)).powi(VISITORS as i32);
    if p_none < 1e-12 {
        assert!(
            broken_before + broken_after > 0,
            "no page broke, at a chance of {p_none:e}"
        );
    }
}

//! A real Prometheus (Debian's, from `make promtool`) scrapes a real Envoy running the
//! filter (envoy/envoy.yaml on free ports) and evaluates the shipped plain-Envoy rules
//! as `make monitoring` renders them for that Envoy, with only the `for:` durations
//! shortened (and 1 s scrape and evaluation intervals).
//!
//! - A canary answering a large share with 503 beside a baseline that never answers a
//!   5xx (so Envoy has no 5xx series for the baseline at all: issue 19's case):
//!   CanaryErrorRateAboveStable goes pending, then firing, for the canary only.
//! - A healthy pair: after the ratios exist (0 for both) and the canary has passed the
//!   traffic floor, the rules keep being evaluated for a bounded time and no alert
//!   goes even pending.
//!
//! Requests go over loopback at a bounded rate, enough for `rate(...[5m])` over a few
//! seconds of samples (which Prometheus divides by the whole window) to pass the
//! 0.5 requests/s floor. Envoy, Prometheus and the traffic thread are stopped on
//! every path (their handles' Drop). A missing Prometheus binary fails the test.

mod harness;
mod istio_support;

use harness::{free_port, http_get, Client, Envoy, EnvoyOptions, Metrics};
use istio_support::monitoring::{envoy_yaml_clusters, render_envoy_rules, Target, ENVOY_RULES};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `for:` of the alerts in the test, instead of 5m / 10m.
const FOR_ERRORS: &str = "5s";
const FOR_LATENCY: &str = "10s";
/// How long the healthy pair is watched once everything the alert reads exists.
const QUIET_WATCH: Duration = Duration::from_secs(8);
/// Requests per version at most, per scenario.
const MAX_REQUESTS_PER_VERSION: usize = 6_000;

/// Prometheus: `$PROMETHEUS`, else the one `make promtool` installs.
fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| harness::repo_root().join(".tools/bin/prometheus"));
    assert!(
        path.exists(),
        "prometheus not found at {}: run `make promtool` (or set PROMETHEUS). This test never skips.",
        path.display()
    );
    path
}

/// The shipped plain-Envoy rules, rendered for envoy/envoy.yaml's clusters, with
/// the `for:` durations shortened.
fn rules_for_the_test() -> String {
    let root = istio_support::repo_root();
    let target = Target {
        envoy_clusters: envoy_yaml_clusters(&root).expect("envoy.yaml clusters"),
        ..Target::default()
    };
    let shipped = fs::read_to_string(root.join(ENVOY_RULES)).expect("rules");
    let rules = render_envoy_rules(&shipped, &target).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        rules.matches("    for: 5m\n").count(),
        2,
        "the error alerts' for:"
    );
    assert_eq!(
        rules.matches("    for: 10m\n").count(),
        1,
        "the latency alert's for:"
    );
    rules
        .replace("    for: 5m\n", &format!("    for: {FOR_ERRORS}\n"))
        .replace("    for: 10m\n", &format!("    for: {FOR_LATENCY}\n"))
}

/// A running Prometheus. Killed on drop.
struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    started: Instant,
}

impl Prometheus {
    fn start(name: &str, rules: &str, envoy_admin: SocketAddr) -> Prometheus {
        let binary = prometheus_binary();
        for _attempt in 0..3 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "canary-router-prometheus-{name}-{}-{port}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the Prometheus dir");
            fs::write(dir.join("rules.yaml"), rules).expect("write the rules");
            fs::write(
                dir.join("prometheus.yml"),
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n- rules.yaml\nscrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: ['{envoy_admin}']\n"
                ),
            )
            .expect("write prometheus.yml");
            let log = fs::File::create(dir.join("prometheus.log")).expect("log");
            let child = Command::new(&binary)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .current_dir(&dir)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut prometheus = Prometheus {
                child: Some(child),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
                started: Instant::now(),
            };
            match prometheus.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return prometheus,
                // Another process took the port between free_port() and the bind.
                Err(log) if log.contains("address already in use") => continue,
                Err(log) => panic!("Prometheus did not start:\n{log}"),
            }
        }
        panic!("Prometheus found no free port in 3 attempts");
    }

    fn wait_ready(&mut self, deadline: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("exited with {status}\n{}", self.log()));
                }
            }
            if http_get(self.addr, "/-/ready").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if start.elapsed() > deadline {
                self.kill();
                return Err(format!("not ready after {deadline:?}\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// GET an API path; its `data`.
    fn api(&self, path: &str) -> Value {
        let response = http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status, 200, "GET {path}: {}", response.body_text());
        let body: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", response.body_text()));
        assert_eq!(body["status"], "success", "GET {path}: {body}");
        body["data"].clone()
    }

    /// An instant query: each series' labels and value.
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)));
        data["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("value");
                (labels, value)
            })
            .collect()
    }

    /// `record` by version.
    fn by_version(&self, record: &str) -> BTreeMap<String, f64> {
        self.query(record)
            .into_iter()
            .map(|(labels, v)| (labels.get("version").cloned().unwrap_or_default(), v))
            .collect()
    }

    /// The active alerts: (alertname, version, state).
    fn alerts(&self) -> Vec<(String, String, String)> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
                (
                    label("alertname"),
                    label("version"),
                    a["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Every rule of the loaded rules evaluated without error; (rules, groups).
    fn assert_rules_healthy(&self) -> (usize, usize) {
        let groups = self.api("/api/v1/rules")["groups"]
            .as_array()
            .expect("groups")
            .clone();
        let mut rules = 0;
        for group in &groups {
            for rule in group["rules"].as_array().expect("rules") {
                rules += 1;
                assert_eq!(rule["health"], "ok", "rule evaluation failed: {rule}");
            }
        }
        (rules, groups.len())
    }

    /// How many times Prometheus has evaluated the alerts group (its own metric).
    fn alert_group_iterations(&self) -> f64 {
        let text = http_get(self.addr, "/metrics")
            .expect("Prometheus /metrics")
            .body_text();
        Metrics::parse(&text)
            .samples
            .iter()
            .filter(|(name, labels, _)| {
                name == "prometheus_rule_group_iterations_total"
                    && labels
                        .get("rule_group")
                        .is_some_and(|g| g.ends_with(";canary-router.alerts"))
            })
            .map(|(_, _, v)| *v)
            .sum()
    }

    fn since_start(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("Prometheus log ({}):\n{}", self.dir.display(), self.log());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Requests to both versions (the override header picks each), paced, until
/// stopped or the bound is reached. Stopped and joined on drop.
struct Traffic {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<BTreeMap<(String, u16), usize>>>,
}

impl Traffic {
    fn start(listener: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut client = Client::new(listener);
            let mut answers: BTreeMap<(String, u16), usize> = BTreeMap::new();
            for _ in 0..MAX_REQUESTS_PER_VERSION {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                for version in ["stable", "canary"] {
                    let response = client.get_with(&[("x-canary", version)]);
                    *answers
                        .entry((response.served_by(), response.status))
                        .or_default() += 1;
                }
                // About 200 requests a second per version: the 0.5/s floor over a
                // 5-minute window needs 150 in the few seconds Prometheus has seen.
                std::thread::sleep(Duration::from_millis(5));
            }
            answers
        });
        Traffic {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the requests; what each version answered: (served by, status) -> count.
    fn finish(mut self) -> BTreeMap<(String, u16), usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("the traffic thread")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Polls `check` every 100 ms until it returns Some or `deadline` passes.
fn poll<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ERROR_ALERT: &str = "CanaryErrorRateAboveStable";

#[test]
fn a_failing_canary_beside_a_baseline_that_never_failed_fires_the_alert() {
    let begin = Instant::now();
    let envoy = Envoy::start(EnvoyOptions::default());
    // 60% of the canary's answers are 503s (envoy/envoy.yaml's demo switch).
    envoy.set_runtime("demo.canary_failure_percent", "60");
    let prometheus = Prometheus::start("failing", &rules_for_the_test(), envoy.admin);
    let traffic = Traffic::start(envoy.listener);

    let pending_at = poll(Duration::from_secs(60), "the alert pending", || {
        let alerts = prometheus.alerts();
        alerts
            .iter()
            .any(|(name, _, _)| name == ERROR_ALERT)
            .then(|| {
                // Pending first: `for:` holds it back.
                assert!(
                    alerts
                        .iter()
                        .all(|(n, v, s)| n != ERROR_ALERT || (v == "canary" && s == "pending")),
                    "{alerts:?}"
                );
                prometheus.since_start()
            })
    });
    let ratios_pending = prometheus.by_version("canary:error_ratio:rate5m");
    let firing_at = poll(Duration::from_secs(30), "the alert firing", || {
        let alerts = prometheus.alerts();
        alerts
            .iter()
            .any(|(n, v, s)| n == ERROR_ALERT && v == "canary" && s == "firing")
            .then(|| {
                // Only the canary's, and nothing else (no latency, gRPC, guard alert).
                assert_eq!(alerts.len(), 1, "{alerts:?}");
                prometheus.since_start()
            })
    });
    let ratios = prometheus.by_version("canary:error_ratio:rate5m");
    let responses = prometheus.by_version("canary:responses:rate5m");
    let (rules, groups) = prometheus.assert_rules_healthy();
    let answers = traffic.finish();

    // The case of issue 19: the baseline never answered a 5xx, so Envoy has no 5xx
    // series for its cluster at all; its ratio reads 0 and the comparison holds.
    let stats = envoy.prometheus();
    assert_eq!(
        stats.sum(
            "envoy_cluster_upstream_rq_xx",
            &[
                ("envoy_cluster_name", "stable"),
                ("envoy_response_code_class", "5")
            ]
        ),
        0.0
    );
    assert!(!stats
        .samples
        .iter()
        .any(|(name, labels, _)| name == "envoy_cluster_upstream_rq_xx"
            && labels.get("envoy_cluster_name").map(String::as_str) == Some("stable")
            && labels.get("envoy_response_code_class").map(String::as_str) == Some("5")));
    assert!(
        stats.value(
            "envoy_cluster_upstream_rq_xx",
            &[
                ("envoy_cluster_name", "canary"),
                ("envoy_response_code_class", "5")
            ]
        ) > 0.0
    );
    assert_eq!(ratios.get("stable"), Some(&0.0), "{ratios:?}");
    let canary_ratio = ratios["canary"];
    assert!((0.45..0.75).contains(&canary_ratio), "{ratios:?}");
    assert!(responses["canary"] > 0.5, "{responses:?}");
    assert!(firing_at > pending_at);
    assert!(
        firing_at - pending_at > 3.5,
        "for: {FOR_ERRORS}: pending at {pending_at:.1} s, firing at {firing_at:.1} s"
    );
    assert_eq!(
        answers.get(&("stable".to_string(), 503)),
        None,
        "{answers:?}"
    );
    eprintln!(
        "failing canary: {rules} rules in {groups} groups evaluated every 1 s, no errors; \
         alert pending {pending_at:.1} s after Prometheus started, firing at {firing_at:.1} s \
         (for: {FOR_ERRORS}); error ratio at pending {ratios_pending:?}, at firing {ratios:?}; \
         responses/s (5m rate over the seconds seen) {responses:?}; answers {answers:?}; \
         {:.1} s in all",
        begin.elapsed().as_secs_f64()
    );
}

#[test]
fn a_healthy_pair_stays_silent_while_the_rules_are_evaluated() {
    let begin = Instant::now();
    let envoy = Envoy::start(EnvoyOptions::default());
    let prometheus = Prometheus::start("healthy", &rules_for_the_test(), envoy.admin);
    let traffic = Traffic::start(envoy.listener);

    // Everything the error alert reads exists: both ratios (0: neither version has a
    // 5xx series) and the canary past the traffic floor.
    let ready_at = poll(Duration::from_secs(60), "ratios and the floor", || {
        let ratios = prometheus.by_version("canary:error_ratio:rate5m");
        let responses = prometheus.by_version("canary:responses:rate5m");
        (ratios.get("stable") == Some(&0.0)
            && ratios.get("canary") == Some(&0.0)
            && responses.get("canary").is_some_and(|r| *r > 0.5))
        .then(|| prometheus.since_start())
    });
    let iterations_before = prometheus.alert_group_iterations();
    let watch = Instant::now();
    let mut polls = 0;
    while watch.elapsed() < QUIET_WATCH {
        let alerts = prometheus.alerts();
        assert!(alerts.is_empty(), "a healthy pair raised {alerts:?}");
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let iterations = prometheus.alert_group_iterations() - iterations_before;
    let ratios = prometheus.by_version("canary:error_ratio:rate5m");
    let responses = prometheus.by_version("canary:responses:rate5m");
    let (rules, groups) = prometheus.assert_rules_healthy();
    let answers = traffic.finish();

    // The alerts were evaluated all along (1 s interval), longer than `for:`.
    assert!(
        iterations >= (QUIET_WATCH.as_secs() - 2) as f64,
        "{iterations} evaluations in {QUIET_WATCH:?}"
    );
    assert_eq!(ratios.get("stable"), Some(&0.0), "{ratios:?}");
    assert_eq!(ratios.get("canary"), Some(&0.0), "{ratios:?}");
    assert!(responses["canary"] > 0.5, "{responses:?}");
    assert!(
        answers.keys().all(|(_, status)| *status == 200),
        "{answers:?}"
    );
    eprintln!(
        "healthy pair: ratios {ratios:?} (no 5xx series for either), responses/s {responses:?}; \
         ready {ready_at:.1} s after Prometheus started, then {iterations} evaluations of the \
         alerts over {:.1} s ({polls} polls of /api/v1/alerts): none pending or firing; \
         {rules} rules in {groups} groups healthy; answers {answers:?}; {:.1} s in all",
        QUIET_WATCH.as_secs_f64(),
        begin.elapsed().as_secs_f64()
    );
}

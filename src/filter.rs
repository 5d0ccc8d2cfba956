//! The thin host layer: proxy-wasm root and HTTP contexts. It reads what the
//! decision needs from Envoy, writes back what the decision returns and counts it.
//! No routing logic lives here.
//!
//! Host calls per request, by default: one read of the whole request header map,
//! one header write and one counter increment, all on the way in. Opt-in metrics
//! add their own: `metrics.latency` two clock reads and a histogram record,
//! `metrics.responses` a `:status` read and a counter increment per response. A
//! guard reads `:status` only for the versions it compares (the guarded version,
//! and the baseline when `baseline_margin` is set). Envoy clears the route cache
//! itself after a filter of this ABI (0.2.1) changes request headers, so no
//! explicit `clear_route_cache` call is made.
//!
//! Pick mode (`hash.pick_header`) writes the pick header or the route header (and
//! removes the other only if the client sent it), and reads the attribute
//! `xds.cluster_name` once per response to learn the version that served it.
//!
//! gRPC calls (request `content-type: application/grpc`, found in the header map
//! already read) whose outcome is counted (`metrics.responses`, or a guard that
//! compares their version) pay `:status` and one more read, `grpc-status` from the
//! trailers, or from the response headers when the answer is trailers-only (or not
//! a 200), plus one counter increment (`P_grpc_responses_total`, when opted in).
//! Other requests pay nothing for gRPC.
//!
//! Ramps and the guard add no host call per request: a timer (`on_tick`) moves the
//! split and merges this worker's guard counts into the proxy-wide guard state in
//! shared data (compare-and-swap). A failed response of the guarded version merges
//! at once, so the guard trips as soon as the proxy has seen enough failures.

use crate::config::{format_basis_points, Config, ConfigError};
use crate::decide::{decide, Reason, Rng, Routing};
use crate::fallback::{Fallback, LoadHistory, OnBadConfig, SafeMode, ON_BAD_CONFIG_ENV};
use crate::grpc::{
    is_grpc_content_type, outcome_from_headers, outcome_from_trailers, status_may_be_in_headers,
    GrpcCode,
};
use crate::guard::{describe, GuardConfig, GuardEvent, GuardState, Pending};
use crate::metrics::{
    code_class_index, MetricKind, MetricSink, MetricTable, CONFIG_REJECTED_TOTAL, CONFIG_SAFE_MODE,
    CONFIG_STALE,
};
use crate::pick::{decide_pick, version_of_cluster, RouteWrite};
use crate::request::{RequestFacts, SerializedHeaders};
use crate::trust::parse_socket_ip;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::ptr::null_mut;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// How often ramps and the guard are brought up to date, when configured.
const TICK: Duration = Duration::from_millis(100);
/// Workers that load the same config within this long share one guard state; a
/// config loaded again later (a new config, or the same one restored) starts afresh.
const SAME_LOAD_MS: u64 = 10_000;
/// Compare-and-swap retries before a merge is left to the next tick.
const CAS_ATTEMPTS: usize = 16;

/// A config that passed validation, with its metrics defined in this VM.
struct Active {
    /// The config as Envoy handed it over: what other VMs parse again if they
    /// must fall back to it.
    text: Vec<u8>,
    config: Config,
    metrics: MetricTable,
    /// Shared-data key of the proxy-wide guard state of this config.
    guard_key: String,
}

/// What changes while a config is loaded, per worker.
struct Live {
    routing: Routing,
    /// The weights last published to the gauges.
    weights: Vec<u32>,
    /// Guard counts not yet merged into the shared state.
    pending: Pending,
}

/// One per plugin and worker thread: owns the parsed config.
pub struct CanaryRoot {
    active: Option<Rc<Active>>,
    live: Rc<RefCell<Live>>,
    rng: Rc<Cell<Rng>>,
    /// The plugin's key in [`HISTORY`], once this root context is counted there.
    plugin: Option<String>,
    /// Set when the config was refused and the plugin has no good config to keep.
    safe_mode: Option<Rc<SafeMode>>,
}

thread_local! {
    /// Every plugin's config loads in this VM (one VM per worker; a root context
    /// lives as long as its filter config, this as long as the VM): a root context
    /// whose config is refused serves its plugin's last good config from here.
    static HISTORY: RefCell<LoadHistory<Rc<Active>>> = RefCell::new(LoadHistory::default());
    /// The config health metrics of this VM, defined at the first configure.
    static HEALTH: Cell<Option<HealthIds>> = const { Cell::new(None) };
}

#[derive(Clone, Copy)]
struct HealthIds {
    rejected: u32,
    stale: u32,
    safe_mode: u32,
}

fn health_ids() -> Option<HealthIds> {
    HEALTH.with(|health| {
        if let Some(ids) = health.get() {
            return Some(ids);
        }
        let ids = HealthIds {
            rejected: hostcalls::define_metric(MetricType::Counter, CONFIG_REJECTED_TOTAL).ok()?,
            stale: hostcalls::define_metric(MetricType::Gauge, CONFIG_STALE).ok()?,
            safe_mode: hostcalls::define_metric(MetricType::Gauge, CONFIG_SAFE_MODE).ok()?,
        };
        health.set(Some(ids));
        Some(ids)
    })
}

/// Sets the gauges from this VM's history (every VM holds the same history, so
/// whichever writes last writes the same values).
fn publish_health() {
    let Some(ids) = health_ids() else {
        return;
    };
    let counts = HISTORY.with(|history| {
        history
            .try_borrow()
            .map(|h| (h.stale(), h.in_safe_mode()))
            .ok()
    });
    if let Some((stale, safe_mode)) = counts {
        let _ = hostcalls::record_metric(ids.stale, stale as u64);
        let _ = hostcalls::record_metric(ids.safe_mode, safe_mode as u64);
    }
}

/// Names the plugin across its root contexts: Envoy's plugin name (Istio sets it to
/// the WasmPlugin's `<namespace>.<name>`) and root id.
fn plugin_key() -> String {
    let read = |property: &str| {
        hostcalls::get_property(vec![property])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    format!("{}/{}", read("plugin_name"), read("plugin_root_id"))
}

fn on_bad_config() -> OnBadConfig {
    OnBadConfig::from_env_value(std::env::var(ON_BAD_CONFIG_ENV).ok().as_deref())
}

impl CanaryRoot {
    pub fn new() -> Self {
        // RandomState draws its keys from the host's random source (WASI
        // random_get) once; the per-request draw then needs no host call.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(now_ms().unsigned_abs());
        CanaryRoot {
            active: None,
            live: Rc::new(RefCell::new(Live {
                routing: Routing {
                    split: crate::config::Split {
                        buckets: crate::config::DEFAULT_BUCKETS,
                        ranges: Vec::new(),
                    },
                    guard_tripped: false,
                },
                weights: Vec::new(),
                pending: Pending::default(),
            })),
            rng: Rc::new(Cell::new(Rng::new(hasher.finish()))),
            plugin: None,
            safe_mode: None,
        }
    }
}

impl Default for CanaryRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// The host clock in unix milliseconds (0 if the host cannot say).
fn now_ms() -> i64 {
    hostcalls::get_current_time().ok().map_or(0, unix_ms)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct HostMetrics;

impl MetricSink for HostMetrics {
    type Error = (String, Status);
    fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, Self::Error> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).map_err(|status| (name.to_string(), status))
    }
}

fn log_rejection(errors: &[ConfigError]) {
    let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
    error!(
        "config rejected ({} problem{}): {}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        details.join("; ")
    );
}

fn publish_weights(active: &Active, live: &mut Live, weights: Vec<u32>) {
    // Pick mode: the weights are the route's, unknown here; the gauges stay at 0.
    if live.weights == weights || active.config.hash.pick.is_some() {
        return;
    }
    for (id, weight) in active.metrics.weights().iter().zip(&weights) {
        let _ = hostcalls::record_metric(*id, u64::from(*weight));
    }
    live.weights = weights;
}

fn set_guard_gauge(active: &Active, tripped: bool) {
    if let Some(id) = active.metrics.guard_tripped() {
        let _ = hostcalls::record_metric(id, u64::from(tripped));
    }
}

/// Merges this worker's pending guard counts into the proxy-wide state, applies
/// the trip/re-arm rule, and adopts the resulting state locally. The worker whose
/// write makes a transition logs it, so each transition is logged once.
fn sync_guard(active: &Active, guard: &GuardConfig, live: &mut Live, now: u64) {
    for _ in 0..CAS_ATTEMPTS {
        let Ok((bytes, cas)) = hostcalls::get_shared_data(&active.guard_key) else {
            return;
        };
        let existing = bytes.as_deref().and_then(|b| GuardState::decode(b, guard));
        let found = existing.is_some();
        let mut state = existing.unwrap_or_else(|| GuardState::new(now, guard));
        if !live.pending.is_empty() {
            state.add(now, guard, &live.pending);
        }
        let event = state.evaluate(now, guard);
        if found && live.pending.is_empty() && event.is_none() {
            adopt(active, live, state.is_tripped());
            return;
        }
        match hostcalls::set_shared_data(&active.guard_key, Some(&state.encode()), cas) {
            Ok(()) => {
                live.pending = Pending::default();
                adopt(active, live, state.is_tripped());
                if let Some(event) = event {
                    let versions = &active.config.versions;
                    let line = describe(
                        &event,
                        guard,
                        versions.get(guard.version).map_or("?", |v| v.name.as_str()),
                        versions.first().map_or("?", |v| v.name.as_str()),
                    );
                    match event {
                        GuardEvent::Tripped { .. } => warn!("{line}"),
                        GuardEvent::Rearmed => info!("{line}"),
                    }
                }
                return;
            }
            Err(Status::CasMismatch) => continue,
            Err(_) => return,
        }
    }
}

fn adopt(active: &Active, live: &mut Live, tripped: bool) {
    live.routing.guard_tripped = tripped;
    set_guard_gauge(active, tripped);
}

/// At load: the guard state of this config starts afresh unless another worker
/// of the same load has just created it.
fn reset_guard_state(active: &Active, guard: &GuardConfig, now: u64) {
    for _ in 0..CAS_ATTEMPTS {
        let Ok((bytes, cas)) = hostcalls::get_shared_data(&active.guard_key) else {
            return;
        };
        let current = bytes.as_deref().and_then(|b| GuardState::decode(b, guard));
        if current.is_some_and(|s| now.saturating_sub(s.created_ms) < SAME_LOAD_MS) {
            return;
        }
        let fresh = GuardState::new(now, guard).encode();
        match hostcalls::set_shared_data(&active.guard_key, Some(&fresh), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

/// Reads, parses and validates the plugin configuration and defines its metrics.
/// A config that cannot be used is logged (naming the field) and returned as text.
fn load() -> Result<Active, Vec<u8>> {
    let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(Some(bytes)) if !bytes.is_empty() => bytes,
        Ok(_) => {
            log_rejection(&[ConfigError {
                field: String::new(),
                message: "the plugin configuration is empty: it must be a JSON object with at least `versions`".into(),
            }]);
            return Err(Vec::new());
        }
        Err(status) => {
            error!("config rejected: cannot read the plugin configuration: {status:?}");
            return Err(Vec::new());
        }
    };
    let config = match Config::from_json(&bytes) {
        Ok(config) => config,
        Err(errors) => {
            log_rejection(&errors);
            return Err(bytes);
        }
    };
    let metrics = match MetricTable::define(&config, &mut HostMetrics) {
        Ok(metrics) => metrics,
        Err((name, status)) => {
            error!("config rejected: cannot define metric `{name}`: {status:?}");
            return Err(bytes);
        }
    };
    Ok(Active {
        guard_key: format!("canary-router/guard/{:08x}", config.fingerprint),
        text: bytes,
        config,
        metrics,
    })
}

/// The shared-data key (proxy-wide, across VMs) of a plugin's last good config.
fn last_good_key(plugin: &str) -> String {
    format!("canary-router/last-good/{plugin}")
}

fn remember_last_good(plugin: &str, text: &[u8]) {
    let key = last_good_key(plugin);
    if let Ok((Some(current), _)) = hostcalls::get_shared_data(&key) {
        if current == text {
            return;
        }
    }
    // Unconditionally (no CAS): every VM writes the same newest config.
    let _ = hostcalls::set_shared_data(&key, Some(text), None);
}

/// The plugin's last good config as another VM of this proxy loaded it, parsed and
/// with its metrics defined here; `None` if there is none (or it no longer parses).
fn last_good_of_proxy(plugin: &str) -> Option<Active> {
    let (text, _) = hostcalls::get_shared_data(&last_good_key(plugin)).ok()?;
    let text = text?;
    let config = Config::from_json(&text).ok()?;
    let metrics = MetricTable::define(&config, &mut HostMetrics).ok()?;
    Some(Active {
        guard_key: format!("canary-router/guard/{:08x}", config.fingerprint),
        text,
        config,
        metrics,
    })
}

/// How a loaded config reads in the log.
fn summary(active: &Active) -> String {
    let weights = active.config.weights_at(now_ms());
    let split: Vec<String> = active
        .config
        .versions
        .iter()
        .zip(&weights)
        .map(|(v, w)| format!("{}={}%", v.name, format_basis_points((*w).into())))
        .collect();
    let split = match &active.config.hash.pick {
        // The route's weights decide; the config has none to show.
        Some(pick) => vec![format!(
            "{} (pick mode: {} for routes whose weights sum to {})",
            active
                .config
                .versions
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            pick.header,
            pick.total
        )],
        None => split,
    };
    format!(
        "route_header={} versions {}{}{}",
        active.config.route_header,
        split.join(" "),
        if active.config.is_scheduled() {
            " (ramping)"
        } else {
            ""
        },
        active
            .config
            .guard
            .as_ref()
            .map_or(String::new(), |g| format!(
                "; guard on {} at {:.1}% errors over {} requests",
                active
                    .config
                    .versions
                    .get(g.version)
                    .map_or("?", |v| v.name.as_str()),
                100.0 * g.max_error_rate,
                g.min_requests
            )),
    )
}

impl CanaryRoot {
    /// Makes `active` the config this root context serves. `fresh`: a config just
    /// loaded (its guard starts afresh); otherwise a last good config kept, whose
    /// guard state goes on where the root context that loaded it left it.
    fn install(&mut self, active: Rc<Active>, fresh: bool) -> bool {
        let now = now_ms();
        let Ok(mut live) = self.live.try_borrow_mut() else {
            return false;
        };
        live.routing = Routing::at(&active.config, now);
        live.pending = Pending::default();
        live.weights.clear();
        publish_weights(&active, &mut live, active.config.weights_at(now));
        if let Some(guard) = &active.config.guard {
            let now = now.unsigned_abs();
            if fresh {
                reset_guard_state(&active, guard, now);
            }
            sync_guard(&active, guard, &mut live, now);
        }
        let needs_tick = active.config.is_scheduled() || active.config.guard.is_some();
        let _ = hostcalls::set_tick_period(if needs_tick { TICK } else { Duration::ZERO });
        drop(live);
        self.active = Some(active);
        self.safe_mode = None;
        true
    }

    /// This root context no longer counts for its plugin in [`HISTORY`].
    fn release(&mut self) {
        if let Some(key) = self.plugin.take() {
            HISTORY.with(|h| {
                if let Ok(mut h) = h.try_borrow_mut() {
                    h.released(&key);
                }
            });
        }
    }
}

impl Context for CanaryRoot {}

/// The plugin's filter config is gone (replaced, or its listener drained): the
/// host calls `proxy_on_done` (not exported: the host takes it as done) and then
/// `proxy_on_delete`, where the SDK drops this root context. Done here rather than
/// in `on_done`, so that the module need not export `proxy_on_done`, which the
/// host would otherwise also call on every request's context
/// (tools/wasm_drop_exports.py).
impl Drop for CanaryRoot {
    fn drop(&mut self) {
        self.release();
        // A VM left without root contexts (one that only checked a config, or one
        // shutting down) would report an empty history: leave the gauges to the
        // VMs that serve.
        let serving = HISTORY.with(|h| h.try_borrow().map(|h| h.has_roots()).unwrap_or(false));
        if serving {
            publish_health();
        }
    }
}

impl RootContext for CanaryRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Envoy configures a root context once; should it come again, the old
        // registration goes first.
        self.release();
        match load() {
            Ok(active) => {
                info!("config loaded: {}", summary(&active));
                let active = Rc::new(active);
                let key = plugin_key();
                remember_last_good(&key, &active.text);
                HISTORY.with(|h| {
                    if let Ok(mut h) = h.try_borrow_mut() {
                        h.loaded(&key, Rc::clone(&active));
                    }
                });
                self.plugin = Some(key);
                let installed = self.install(active, true);
                publish_health();
                installed
            }
            Err(refused) => {
                if let Some(ids) = health_ids() {
                    let _ = hostcalls::increment_metric(ids.rejected, 1);
                }
                if on_bad_config() == OnBadConfig::Refuse {
                    error!("refusing the config ({ON_BAD_CONFIG_ENV}=refuse): Envoy does not start with it, and NACKs it as an update");
                    return false;
                }
                let key = plugin_key();
                let mut fallback = HISTORY.with(|h| {
                    h.try_borrow_mut()
                        .map(|mut h| h.refused(&key))
                        .unwrap_or(Fallback::SafeMode)
                });
                if matches!(fallback, Fallback::SafeMode) {
                    if let Some(active) = last_good_of_proxy(&key) {
                        let active = Rc::new(active);
                        HISTORY.with(|h| {
                            if let Ok(mut h) = h.try_borrow_mut() {
                                h.adopted(&key, Rc::clone(&active));
                            }
                        });
                        fallback = Fallback::LastGood(active);
                    }
                }
                self.plugin = Some(key);
                let installed = match fallback {
                    Fallback::LastGood(active) => {
                        warn!(
                            "config not taken: plugin {} keeps its last good config: {}",
                            self.plugin.as_deref().unwrap_or_default(),
                            summary(&active)
                        );
                        self.install(active, false)
                    }
                    Fallback::SafeMode => {
                        let safe = SafeMode::from_refused(&refused);
                        warn!(
                            "config not taken: plugin {} has no good config yet, so it runs in safe mode: no decision and no metrics; {} removed from every request, so the route table's default route serves it",
                            self.plugin.as_deref().unwrap_or_default(),
                            safe.remove.join(", ")
                        );
                        self.safe_mode = Some(Rc::new(safe));
                        let _ = hostcalls::set_tick_period(Duration::ZERO);
                        true
                    }
                };
                publish_health();
                installed
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(active) = self.active.as_deref() else {
            return;
        };
        let Ok(mut live) = self.live.try_borrow_mut() else {
            return;
        };
        let now = now_ms();
        if active.config.is_scheduled() {
            live.routing.split = active.config.split_at(now);
            publish_weights(active, &mut live, active.config.weights_at(now));
        }
        if let Some(guard) = &active.config.guard {
            sync_guard(active, guard, &mut live, now.unsigned_abs());
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryRequest {
            active: self.active.clone(),
            safe_mode: self.safe_mode.clone(),
            live: Rc::clone(&self.live),
            rng: Rc::clone(&self.rng),
            decided: None,
            learn_cluster: false,
            grpc: false,
            grpc_pending: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One per HTTP request.
struct CanaryRequest {
    active: Option<Rc<Active>>,
    safe_mode: Option<Rc<SafeMode>>,
    live: Rc<RefCell<Live>>,
    rng: Rc<Cell<Rng>>,
    /// The version this request went to and when the decision was made.
    decided: Option<(usize, Option<SystemTime>)>,
    /// Pick mode: the route's weights chose the cluster, so the response side learns
    /// the version from the cluster's name.
    learn_cluster: bool,
    /// A gRPC call whose outcome is counted (its metric or a guard needs it).
    grpc: bool,
    /// A gRPC call whose status is still to come, in the trailers: its version.
    grpc_pending: Option<usize>,
}

impl Context for CanaryRequest {}

impl HttpContext for CanaryRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.active.as_deref() else {
            if let Some(safe_mode) = &self.safe_mode {
                for name in &safe_mode.remove {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
                }
            }
            return Action::Continue;
        };
        let Ok(live) = self.live.try_borrow() else {
            return Action::Continue;
        };
        let headers = request_header_map();
        let request = HostRequest(SerializedHeaders::new(&headers));
        // Not for this plugin: passed on untouched, not counted, not guarded.
        if let Some(hosts) = &active.config.hosts {
            if !hosts.admits(request.header(":authority")) {
                return Action::Continue;
            }
        }
        let mut rng = self.rng.get();
        let (assignment, pick_write) = match &active.config.hash.pick {
            Some(pick) => {
                let (assignment, write) =
                    decide_pick(&active.config, pick, &live.routing, &request, &mut rng);
                (assignment, Some((pick, write)))
            }
            None => (
                decide(&active.config, &live.routing, &request, &mut rng),
                None,
            ),
        };
        self.rng.set(rng);

        drop(live);
        // The override secret stops here: upstreams and their logs never see it.
        if let Some(token) = &active.config.override_.token {
            if request.header(&token.header).is_some() {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &token.header, None);
            }
        }

        // gRPC is told by the content-type in the map already read: no host call.
        // Its outcome is read only if counted, or if the guard compares this version
        // (in pick mode the version is known only from the cluster, at the response).
        let guard_watches = active
            .config
            .guard
            .as_ref()
            .is_some_and(|g| pick_write.is_some() || g.watches(assignment.version));
        self.grpc = (active.metrics.counts_grpc() || guard_watches)
            && request
                .header("content-type")
                .is_some_and(is_grpc_content_type);
        if let Some((pick, write)) = pick_write {
            write_pick(&active.config, &pick.header, write, &request);
            let id = match (write, assignment.reason) {
                (RouteWrite::Pick(_) | RouteWrite::Draw, Reason::Hash | Reason::Random) => {
                    active.metrics.weighted_request(assignment.reason)
                }
                _ => active
                    .metrics
                    .request(assignment.version, assignment.reason),
            };
            if let Some(id) = id {
                let _ = hostcalls::increment_metric(id, 1);
            }
            let started = if active.metrics.records_latency() {
                hostcalls::get_current_time().ok()
            } else {
                None
            };
            self.decided = Some((assignment.version, started));
            // The served version, from the cluster (a host call per response), only
            // if something counts per version.
            self.learn_cluster = active.metrics.counts_responses()
                || active.metrics.records_latency()
                || active.config.guard.is_some()
                || self.grpc;
            return Action::Continue;
        }
        let Some(version) = active.config.versions.get(assignment.version) else {
            return Action::Continue;
        };
        // Replaces every value the client may have sent under this name.
        if let Err(status) = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            &active.config.route_header,
            Some(&version.name),
        ) {
            warn!("cannot set {}: {status:?}", active.config.route_header);
        }
        if let Some(id) = active
            .metrics
            .request(assignment.version, assignment.reason)
        {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let started = if active.metrics.records_latency() {
            hostcalls::get_current_time().ok()
        } else {
            None
        };
        self.decided = Some((assignment.version, started));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (Some(active), Some((decided, started))) =
            (self.active.as_deref(), self.decided.take())
        else {
            return Action::Continue;
        };
        let version = if self.learn_cluster {
            // The upstream cluster the router picked. Envoy 1.40 answers the
            // attribute `xds.cluster_name`; the older top-level `cluster_name` is empty.
            match hostcalls::get_property(vec!["xds", "cluster_name"]) {
                Ok(Some(cluster)) => version_of_cluster(
                    &cluster,
                    active.config.versions.iter().map(|v| v.name.as_str()),
                ),
                _ => None,
            }
        } else {
            Some(decided)
        };
        // Pick mode, a cluster that is no version's: nothing per version to count.
        let Some(version) = version else {
            return Action::Continue;
        };
        // No response-side host call that the config does not use: the guard needs
        // `:status` only from the versions it compares; a counted gRPC call needs it
        // to know where its grpc-status is.
        let guard_watches = active
            .config
            .guard
            .as_ref()
            .is_some_and(|g| g.watches(version));
        let status = if active.metrics.counts_responses() || guard_watches || self.grpc {
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten()
        } else {
            None
        };
        let code_class = status.as_deref().and_then(code_class_index);
        if let Some(id) = code_class.and_then(|c| active.metrics.response(version, c)) {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let mut now = None;
        if let (Some(started), Some(id)) = (started, active.metrics.duration(version)) {
            now = hostcalls::get_current_time().ok();
            if let Some(elapsed) = now.and_then(|now| now.duration_since(started).ok()) {
                let _ = hostcalls::record_metric(id, elapsed.as_millis() as u64);
            }
        }
        if self.grpc {
            // Trailers-only answers (and Envoy's own replies) carry grpc-status here;
            // a 200 with a body to come carries it in the trailers: not asked here.
            let grpc_status = if status_may_be_in_headers(status.as_deref(), end_of_stream) {
                hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, "grpc-status")
                    .ok()
                    .flatten()
            } else {
                None
            };
            match outcome_from_headers(grpc_status.as_deref(), status.as_deref(), end_of_stream) {
                Some(code) => self.count_grpc(active, version, code, now),
                None => self.grpc_pending = Some(version),
            }
        } else if let Some(guard) = active.config.guard.as_ref().filter(|_| guard_watches) {
            let code = status
                .as_deref()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            self.count_for_guard(active, guard, version, code, now);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let (Some(version), Some(active)) = (self.grpc_pending.take(), self.active.as_deref()) {
            let grpc_status =
                hostcalls::get_map_value_bytes(MapType::HttpResponseTrailers, "grpc-status")
                    .ok()
                    .flatten();
            self.count_grpc(
                active,
                version,
                outcome_from_trailers(grpc_status.as_deref()),
                None,
            );
        }
        Action::Continue
    }
}

/// The SDK drops a request's context at `proxy_on_delete`, the host's last call
/// for the request, right after the stream ended. A gRPC call still waiting for
/// its status then ended without trailers (reset, or a body that just stopped): a
/// gRPC client sees no status, which is UNKNOWN. Counted here rather than in
/// `on_log`, so that the module need not export `proxy_on_log`: the host then skips
/// one call into the VM on every request (tools/wasm_drop_exports.py).
impl Drop for CanaryRequest {
    fn drop(&mut self) {
        if let Some(version) = self.grpc_pending.take() {
            if let Some(active) = self.active.clone() {
                self.count_grpc(&active, version, GrpcCode::UNKNOWN, None);
            }
        }
    }
}

impl CanaryRequest {
    /// Counts a gRPC call's outcome; for the guard only its code decides.
    fn count_grpc(&self, active: &Active, version: usize, code: GrpcCode, now: Option<SystemTime>) {
        if let Some(id) = active.metrics.grpc_response(version, code) {
            let _ = hostcalls::increment_metric(id, 1);
        }
        if let Some(guard) = &active.config.guard {
            let failed = guard.grpc_status.contains(code);
            self.tally_for_guard(active, guard, version, failed, now);
        }
    }

    fn count_for_guard(
        &self,
        active: &Active,
        guard: &GuardConfig,
        version: usize,
        code: u16,
        now: Option<SystemTime>,
    ) {
        let mut failed = guard.status.is_failure(code, false);
        if !failed && (500..600).contains(&code) && !guard.status.covers_all_5xx() {
            // A 5xx the config does not list still counts if Envoy made it because
            // the upstream failed (reset, timeout, no healthy host).
            failed = guard.status.is_failure(code, generated_locally());
        }
        self.tally_for_guard(active, guard, version, failed, now);
    }

    fn tally_for_guard(
        &self,
        active: &Active,
        guard: &GuardConfig,
        version: usize,
        failed: bool,
        now: Option<SystemTime>,
    ) {
        if !guard.watches(version) {
            return;
        }
        let Ok(mut live) = self.live.try_borrow_mut() else {
            return;
        };
        let tally = if version == guard.version {
            &mut live.pending.guarded
        } else {
            &mut live.pending.baseline
        };
        tally.total = tally.total.saturating_add(1);
        tally.failed = tally.failed.saturating_add(u32::from(failed));
        if failed && version == guard.version {
            let now = now.map_or_else(now_ms, unix_ms).unsigned_abs();
            sync_guard(active, guard, &mut live, now);
        }
    }
}

/// Pick mode: sets the route header or the pick header as the decision says and
/// removes the other, so that neither a client-sent route header nor a client-sent
/// pick value ever decides. A header the client did not send is not removed (a
/// host call saved).
fn write_pick(config: &Config, pick_header: &str, write: RouteWrite, request: &HostRequest) {
    let (route_value, pick_value) = match write {
        RouteWrite::Version { version, pick } => (
            config.versions.get(version).map(|v| v.name.clone()),
            pick.map(|p| p.to_string()),
        ),
        RouteWrite::Pick(value) => (None, Some(value.to_string())),
        RouteWrite::Draw => (None, None),
    };
    for (name, value) in [
        (config.route_header.as_str(), route_value),
        (pick_header, pick_value),
    ] {
        if value.is_none() && request.header(name).is_none() {
            continue;
        }
        if let Err(status) =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value.as_deref())
        {
            warn!("cannot set {name}: {status:?}");
        }
    }
}

/// The request as the decision sees it: headers from the one map read, and the
/// client address from a property read made only if an override needs it.
struct HostRequest<'a>(SerializedHeaders<'a>);

impl RequestFacts for HostRequest<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.header(name)
    }

    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.0.cookie(name)
    }

    fn source_address(&self) -> Option<std::net::IpAddr> {
        match hostcalls::get_property(vec!["source", "address"]) {
            Ok(Some(address)) => parse_socket_ip(&address),
            _ => None,
        }
    }
}

/// True if Envoy produced the response itself rather than relaying the upstream's.
fn generated_locally() -> bool {
    match hostcalls::get_property(vec!["response", "code_details"]) {
        Ok(Some(details)) => details.as_slice() != b"via_upstream",
        _ => false,
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The whole request header map, serialized, in one host call. Parsed by
/// [`SerializedHeaders`], which tolerates any bytes: unlike the SDK's typed
/// getters, nothing here assumes header names or values are UTF-8.
fn request_header_map() -> Vec<u8> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated through this
    // module's exported allocator (a leaked Vec<u8> of that capacity), so taking
    // ownership back as a Vec<u8> of that length and capacity is sound.
    unsafe {
        match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    }
}

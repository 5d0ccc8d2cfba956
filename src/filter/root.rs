//! The root context: loads and installs the config, keeps the last good one when a
//! new one is refused, and moves ramps and the guard on each tick.

use super::guard_sync::{publish_weights, reset_guard_state, sync_guard};
use super::host::{log_rejection, now_ms, random_seed};
use super::last_good::{
    health_ids, last_good_of_proxy, on_bad_config, plugin_key, publish_health, remember_last_good,
    HISTORY,
};
use super::request::CanaryRequest;
use super::state::{Active, Live, Service};
use crate::config::{format_basis_points, ConfigError, PluginConfig};
use crate::decide::Rng;
use crate::fallback::{Fallback, OnBadConfig, SafeMode, ON_BAD_CONFIG_ENV};
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// How often ramps and the guard are brought up to date, when configured.
const TICK: Duration = Duration::from_millis(100);

/// One per plugin and worker thread: owns the parsed config.
pub struct CanaryRoot {
    active: Option<Rc<Active>>,
    /// Per rollout, as in `active.services`.
    live: Rc<RefCell<Vec<Live>>>,
    rng: Rc<Cell<Rng>>,
    /// The plugin's key in [`HISTORY`], once this root context is counted there.
    plugin: Option<String>,
    /// Set when the config was refused and the plugin has no good config to keep.
    safe_mode: Option<Rc<SafeMode>>,
}

impl CanaryRoot {
    pub fn new() -> Self {
        CanaryRoot {
            active: None,
            live: Rc::new(RefCell::new(Vec::new())),
            rng: Rc::new(Cell::new(Rng::new(random_seed()))),
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

/// Reads, parses and validates the plugin configuration and defines its metrics.
/// A config that cannot be used is logged (naming the field) and returned as text.
#[cold]
#[inline(never)]
fn load() -> Result<Active, Vec<u8>> {
    let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(Some(bytes)) if !bytes.is_empty() => bytes,
        Ok(_) => {
            log_rejection(&[ConfigError {
                field: String::new(),
                message: "the plugin configuration is empty: it must be a JSON object with at least `versions` (or `rollouts`)".into(),
            }]);
            return Err(Vec::new());
        }
        Err(status) => {
            error!("config rejected: cannot read the plugin configuration: {status:?}");
            return Err(Vec::new());
        }
    };
    let config = match PluginConfig::from_json(&bytes) {
        Ok(config) => config,
        Err(errors) => {
            log_rejection(&errors);
            return Err(bytes);
        }
    };
    Active::new(bytes.clone(), config).map_err(|(name, status)| {
        error!("config rejected: cannot define metric `{name}`: {status:?}");
        bytes
    })
}

/// How a loaded config reads in the log: one service as it always read; rollouts
/// one after another, each with its name.
#[cold]
#[inline(never)]
fn summary(active: &Active) -> String {
    match active.services.as_slice() {
        [only] if only.name.is_none() => service_summary(only),
        services => format!(
            "{} rollouts: {}",
            services.len(),
            services
                .iter()
                .map(|s| format!(
                    "{}: {}",
                    s.name.as_deref().unwrap_or("?"),
                    service_summary(s)
                ))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
    }
}

#[cold]
#[inline(never)]
fn service_summary(service: &Service) -> String {
    let config = &service.config;
    let weights = config.weights_at(now_ms());
    let split: Vec<String> = config
        .versions
        .iter()
        .zip(&weights)
        .map(|(v, w)| format!("{}={}%", v.name, format_basis_points((*w).into())))
        .collect();
    let split = match &config.hash.pick {
        // The route's weights decide; the config has none to show.
        Some(pick) => vec![format!(
            "{} (pick mode: {} for routes whose weights sum to {})",
            config
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
        config.route_header,
        split.join(" "),
        if config.is_scheduled() {
            " (ramping)"
        } else {
            ""
        },
        config.guard.as_ref().map_or(String::new(), |g| format!(
            "; guard on {} at {}% errors over {} requests",
            config
                .versions
                .get(g.version)
                .map_or("?", |v| v.name.as_str()),
            crate::units::format_fixed(100.0 * g.max_error_rate, 1),
            g.min_requests
        )),
    )
}

impl CanaryRoot {
    /// Makes `active` the config this root context serves. `fresh`: a config just
    /// loaded (its guard starts afresh); otherwise a last good config kept, whose
    /// guard state goes on where the root context that loaded it left it.
    #[cold]
    #[inline(never)]
    fn install(&mut self, active: Rc<Active>, fresh: bool) -> bool {
        let now = now_ms();
        let Ok(mut lives) = self.live.try_borrow_mut() else {
            return false;
        };
        lives.clear();
        for service in &active.services {
            let mut live = Live::at(&service.config, now);
            publish_weights(service, &mut live, service.config.weights_at(now));
            if let Some(guard) = &service.config.guard {
                let now = now.unsigned_abs();
                if fresh {
                    reset_guard_state(service, guard, now);
                }
                sync_guard(service, guard, &mut live, now);
            }
            lives.push(live);
        }
        let tick = if active.needs_tick() {
            TICK
        } else {
            Duration::ZERO
        };
        let _ = hostcalls::set_tick_period(tick);
        drop(lives);
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
    #[cold]
    #[inline(never)]
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
        let Ok(mut lives) = self.live.try_borrow_mut() else {
            return;
        };
        let now = now_ms();
        // Every rollout that moves with time or has a guard, each on its own state.
        for (service, live) in active.services.iter().zip(lives.iter_mut()) {
            if service.config.is_scheduled() {
                live.routing.split = service.config.split_at(now);
                publish_weights(service, live, service.config.weights_at(now));
            }
            if let Some(guard) = &service.config.guard {
                sync_guard(service, guard, live, now.unsigned_abs());
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryRequest {
            active: self.active.clone(),
            safe_mode: self.safe_mode.clone(),
            live: Rc::clone(&self.live),
            rng: Rc::clone(&self.rng),
            rollout: 0,
            decided: None,
            learn_cluster: false,
            grpc: false,
            grpc_pending: None,
            issued: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

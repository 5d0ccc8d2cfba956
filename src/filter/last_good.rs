//! Config health and the last good config: the health gauges, the plugin's key,
//! `ON_BAD_CONFIG`, and the last good config in this VM's history and in the
//! proxy's shared data.

use super::state::Active;
use crate::config::PluginConfig;
use crate::fallback::{LoadHistory, OnBadConfig, ON_BAD_CONFIG_ENV};
use crate::metrics::{CONFIG_REJECTED_TOTAL, CONFIG_SAFE_MODE, CONFIG_STALE};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

thread_local! {
    /// Every plugin's config loads in this VM (one VM per worker; a root context
    /// lives as long as its filter config, this as long as the VM): a root context
    /// whose config is refused serves its plugin's last good config from here.
    pub(super) static HISTORY: RefCell<LoadHistory<Rc<Active>>> = RefCell::new(LoadHistory::default());
    /// The config health metrics of this VM, defined at the first configure.
    static HEALTH: Cell<Option<HealthIds>> = const { Cell::new(None) };
}

#[derive(Clone, Copy)]
pub(super) struct HealthIds {
    pub(super) rejected: u32,
    stale: u32,
    safe_mode: u32,
}

pub(super) fn health_ids() -> Option<HealthIds> {
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
pub(super) fn publish_health() {
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
pub(super) fn plugin_key() -> String {
    let read = |property: &str| {
        hostcalls::get_property(vec![property])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    format!("{}/{}", read("plugin_name"), read("plugin_root_id"))
}

pub(super) fn on_bad_config() -> OnBadConfig {
    OnBadConfig::from_env_value(std::env::var(ON_BAD_CONFIG_ENV).ok().as_deref())
}

/// The shared-data key (proxy-wide, across VMs) of a plugin's last good config.
fn last_good_key(plugin: &str) -> String {
    format!("canary-router/last-good/{plugin}")
}

pub(super) fn remember_last_good(plugin: &str, text: &[u8]) {
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
pub(super) fn last_good_of_proxy(plugin: &str) -> Option<Active> {
    let (text, _) = hostcalls::get_shared_data(&last_good_key(plugin)).ok()?;
    let text = text?;
    let config = PluginConfig::from_json(&text).ok()?;
    Active::new(text, config).ok()
}

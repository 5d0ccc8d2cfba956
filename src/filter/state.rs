//! The state the filter's modules share: the loaded config ([`Active`], with one
//! [`Service`] per rollout) and what changes while it is loaded ([`Live`], one per
//! rollout). The root context owns them; the request context, the guard's sync and
//! the last good config read them. A module of its own so that none of those
//! imports another's context to reach them.
//!
//! A config without `rollouts` is one service: its state is what it always was.

use super::host::HostMetrics;
use crate::config::{Config, PluginConfig};
use crate::decide::Routing;
use crate::guard::Pending;
use crate::metrics::MetricTable;
use crate::router::Router;
use proxy_wasm::types::Status;

/// A config that passed validation, with its metrics defined in this VM.
pub(super) struct Active {
    /// The config as Envoy handed it over: what other VMs parse again if they
    /// must fall back to it.
    pub(super) text: Vec<u8>,
    /// Finds a request's rollout: an index into `services`.
    pub(super) router: Router,
    /// One per rollout, in config order.
    pub(super) services: Vec<Service>,
}

/// One rollout of the loaded config: its settings, metrics and guard state's key.
pub(super) struct Service {
    /// `None` for a config without `rollouts`.
    pub(super) name: Option<String>,
    pub(super) config: Config,
    pub(super) metrics: MetricTable,
    /// Shared-data key of this rollout's proxy-wide guard state.
    pub(super) guard_key: String,
}

impl Active {
    /// Defines every rollout's metrics in this VM; the metric that could not be
    /// defined, if one could not.
    #[cold]
    #[inline(never)]
    pub(super) fn new(text: Vec<u8>, plugin: PluginConfig) -> Result<Active, (String, Status)> {
        let guard_keys: Vec<String> = (0..plugin.rollouts.len())
            .map(|i| plugin.guard_key(i))
            .collect();
        let mut services = Vec::with_capacity(plugin.rollouts.len());
        for (rollout, guard_key) in plugin.rollouts.into_iter().zip(guard_keys) {
            let metrics = MetricTable::define_for(
                &rollout.config,
                rollout.name.as_deref(),
                &mut HostMetrics,
            )?;
            services.push(Service {
                name: rollout.name,
                config: rollout.config,
                metrics,
                guard_key,
            });
        }
        Ok(Active {
            text,
            router: plugin.router,
            services,
        })
    }

    /// True if some rollout's weights follow a schedule or some rollout has a
    /// guard: the root context needs a timer.
    pub(super) fn needs_tick(&self) -> bool {
        self.services
            .iter()
            .any(|s| s.config.is_scheduled() || s.config.guard.is_some())
    }
}

impl Service {
    /// `rollout checkout: ` in log lines about one rollout; nothing for a config
    /// without rollouts.
    pub(super) fn log_prefix(&self) -> String {
        self.name
            .as_deref()
            .map_or(String::new(), |name| format!("rollout {name}: "))
    }
}

/// What changes while a config is loaded, per worker and rollout.
pub(super) struct Live {
    pub(super) routing: Routing,
    /// The weights last published to the gauges.
    pub(super) weights: Vec<u32>,
    /// Guard counts not yet merged into the shared state.
    pub(super) pending: Pending,
}

impl Live {
    /// A rollout's routing at `now_ms`, armed, nothing published or pending yet.
    pub(super) fn at(config: &Config, now_ms: i64) -> Live {
        Live {
            routing: Routing::at(config, now_ms),
            weights: Vec::new(),
            pending: Pending::default(),
        }
    }
}

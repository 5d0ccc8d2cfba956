//! The state the filter's modules share: the loaded config ([`Active`]) and what
//! changes while it is loaded ([`Live`]). The root context owns them; the request
//! context, the guard's sync and the last good config read them. A module of its
//! own so that none of those imports another's context to reach them.

use crate::config::Config;
use crate::decide::Routing;
use crate::guard::Pending;
use crate::metrics::MetricTable;

/// A config that passed validation, with its metrics defined in this VM.
pub(super) struct Active {
    /// The config as Envoy handed it over: what other VMs parse again if they
    /// must fall back to it.
    pub(super) text: Vec<u8>,
    pub(super) config: Config,
    pub(super) metrics: MetricTable,
    /// Shared-data key of the proxy-wide guard state of this config.
    pub(super) guard_key: String,
}

/// What changes while a config is loaded, per worker.
pub(super) struct Live {
    pub(super) routing: Routing,
    /// The weights last published to the gauges.
    pub(super) weights: Vec<u32>,
    /// Guard counts not yet merged into the shared state.
    pub(super) pending: Pending,
}

//! The proxy-wide guard state in shared data, and the weight and guard gauges.

use super::state::{Live, Service};
use crate::guard::{describe, GuardConfig, GuardEvent, GuardState, Pending};
use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Workers that load the same config within this long share one guard state; a
/// config loaded again later (a new config, or the same one restored) starts afresh.
const SAME_LOAD_MS: u64 = 10_000;
/// Compare-and-swap retries before a merge is left to the next tick.
const CAS_ATTEMPTS: usize = 16;

pub(super) fn publish_weights(service: &Service, live: &mut Live, weights: Vec<u32>) {
    // Pick mode: the weights are the route's, unknown here; the gauges stay at 0.
    if live.weights == weights || service.config.hash.pick.is_some() {
        return;
    }
    for (id, weight) in service.metrics.weights().iter().zip(&weights) {
        let _ = hostcalls::record_metric(*id, u64::from(*weight));
    }
    live.weights = weights;
}

fn set_guard_gauge(service: &Service, tripped: bool) {
    if let Some(id) = service.metrics.guard_tripped() {
        let _ = hostcalls::record_metric(id, u64::from(tripped));
    }
}

/// Merges this worker's pending guard counts into the proxy-wide state, applies
/// the trip/re-arm rule, and adopts the resulting state locally. The worker whose
/// write makes a transition logs it, so each transition is logged once.
pub(super) fn sync_guard(service: &Service, guard: &GuardConfig, live: &mut Live, now: u64) {
    for _ in 0..CAS_ATTEMPTS {
        let Ok((bytes, cas)) = hostcalls::get_shared_data(&service.guard_key) else {
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
            adopt(service, live, state.is_tripped());
            return;
        }
        match hostcalls::set_shared_data(&service.guard_key, Some(&state.encode()), cas) {
            Ok(()) => {
                live.pending = Pending::default();
                adopt(service, live, state.is_tripped());
                if let Some(event) = event {
                    let versions = &service.config.versions;
                    let line = describe(
                        &event,
                        guard,
                        versions.get(guard.version).map_or("?", |v| v.name.as_str()),
                        versions.first().map_or("?", |v| v.name.as_str()),
                    );
                    let rollout = service.log_prefix();
                    match event {
                        GuardEvent::Tripped { .. } => warn!("{rollout}{line}"),
                        GuardEvent::Rearmed => info!("{rollout}{line}"),
                    }
                }
                return;
            }
            Err(Status::CasMismatch) => continue,
            Err(_) => return,
        }
    }
}

fn adopt(service: &Service, live: &mut Live, tripped: bool) {
    live.routing.guard_tripped = tripped;
    set_guard_gauge(service, tripped);
}

/// At load: the guard state of this config starts afresh unless another worker
/// of the same load has just created it.
pub(super) fn reset_guard_state(service: &Service, guard: &GuardConfig, now: u64) {
    for _ in 0..CAS_ATTEMPTS {
        let Ok((bytes, cas)) = hostcalls::get_shared_data(&service.guard_key) else {
            return;
        };
        let current = bytes.as_deref().and_then(|b| GuardState::decode(b, guard));
        if current.is_some_and(|s| now.saturating_sub(s.created_ms) < SAME_LOAD_MS) {
            return;
        }
        let fresh = GuardState::new(now, guard).encode();
        match hostcalls::set_shared_data(&service.guard_key, Some(&fresh), cas) {
            Err(Status::CasMismatch) => continue,
            _ => return,
        }
    }
}

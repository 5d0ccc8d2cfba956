//! canary-router: a proxy-wasm HTTP filter that decides which version of a
//! service serves each request and writes it into a header the route table
//! matches.
//!
//! A pure core, tested natively, behind a thin host layer:
//! - [`config`]: the plugin config, its validation and precomputed form;
//! - [`bucket`]: sticky murmur3 bucketing of user IDs;
//! - [`request`]: header and cookie lookup in the host's serialized header map;
//! - [`decide`]: request facts + config -> [`decide::Assignment`];
//! - [`units`]: weights in basis points, durations, RFC 3339 times (a leaf);
//! - [`schedule`]: time-based ramps;
//! - [`guard`]: the rollback guard's sliding window and trip/re-arm rule;
//! - [`trust`]: who may override: constant-time tokens, source address ranges;
//! - [`hosts`]: which requests a plugin is for (`hosts` against `:authority`);
//! - [`fallback`]: what serves when a config is refused (last good config, safe mode);
//! - [`metrics`]: metric names, tags and the table of metric ids;
//! - [`pick`]: pick mode, where a rollout controller sets the route's weights;
//! - [`grpc`]: which requests are gRPC, and the status code a gRPC call ended with;
//! - `filter`: the proxy-wasm contexts (host calls only; built for wasm32).

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod bucket;
pub mod config;
pub mod decide;
pub mod fallback;
pub mod grpc;
pub mod guard;
pub mod hosts;
pub mod metrics;
pub mod pick;
pub mod request;
pub mod schedule;
pub mod trust;
pub mod units;

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::CanaryRoot::new())
    });
}}

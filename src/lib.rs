//! canary-router: a proxy-wasm HTTP filter that decides which version of a
//! service serves each request and writes it into a header the route table
//! matches.
//!
//! A pure core, tested natively (the `canary-router-core` crate in `core/`,
//! re-exported here module by module: [`config`], [`decide`], [`bucket`], ...),
//! behind a thin host layer: `filter`, the proxy-wasm contexts (host calls only;
//! built for wasm32). Two crates so that each gets its own optimisation: the
//! core, which mostly runs when a config loads, is built for size; this crate,
//! which runs for every request, for speed.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub use canary_router_core::{
    bucket, config, decide, fallback, grpc, guard, hosts, ip, metrics, pick, request, router,
    schedule, trust, units, visitor,
};

#[cfg(target_arch = "wasm32")]
mod filter;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::CanaryRoot::new())
    });
}}

//! canary-router's pure core: everything the filter decides and checks, with no
//! host calls, tested natively. The filter crate (the repository's root) is the
//! thin host layer around it, and re-exports these modules under its own name.
//!
//! - [`config`]: the plugin config, its validation and precomputed form;
//! - [`bucket`]: sticky murmur3 bucketing of user IDs;
//! - [`request`]: header and cookie lookup in the host's serialized header map;
//! - [`decide`]: request facts + config -> [`decide::Assignment`];
//! - [`units`]: weights in basis points, durations, RFC 3339 times (a leaf);
//! - [`schedule`]: time-based ramps;
//! - [`guard`]: the rollback guard's sliding window and trip/re-arm rule;
//! - [`trust`]: who may override: constant-time tokens, source address ranges;
//! - [`ip`]: IP and socket addresses as text, to std's grammar (a leaf);
//! - [`hosts`]: which requests a plugin is for (`hosts` against `:authority`);
//! - [`router`]: which rollout a request belongs to (hosts, path prefixes, headers);
//! - [`fallback`]: what serves when a config is refused (last good config, safe mode);
//! - [`metrics`]: metric names, tags and the table of metric ids;
//! - [`pick`]: pick mode, where a rollout controller sets the route's weights;
//! - [`grpc`]: which requests are gRPC, and the status code a gRPC call ended with;
//! - [`visitor`]: visitor IDs for `anonymous: "cookie"`, and the cookie headers
//!   that carry them;

//!
//! Built for size (`opt-level = "z"` in the workspace's release profile): most of
//! it runs when a config loads. What runs for every request is `#[inline]`, so
//! that it is compiled into the filter crate, which is built for speed.

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
pub mod ip;
pub mod metrics;
pub mod pick;
pub mod request;
pub mod router;
pub mod schedule;
pub mod trust;
pub mod units;
pub mod visitor;

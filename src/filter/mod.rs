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
//! `anonymous: "cookie"` costs nothing more on a request that has a user ID. A new
//! visitor (no user ID, not a gRPC call) costs three host calls: `random_get` (WASI)
//! for its 128-bit ID, a `cookie` request header write (so that the upstream sees
//! the ID), a `set-cookie` response header added beside the upstream's own, and
//! one counter increment (`P_visitor_ids_issued_total`).
//!
//! Ramps and the guard add no host call per request: a timer (`on_tick`) moves the
//! split and merges this worker's guard counts into the proxy-wide guard state in
//! shared data (compare-and-swap). A failed response of the guarded version merges
//! at once, so the guard trips as soon as the proxy has seen enough failures.
//!
//! The modules, each importing only those listed after it (no circle):
//! - `root`: the root context ([`CanaryRoot`]): loads the config, ticks;
//! - `request`: the HTTP context, one per request;
//! - `guard_sync`: the proxy-wide guard state in shared data, the gauges;
//! - `last_good`: config health, the last good config;
//! - `state`: what they share: the loaded config (`Active`) and what changes while
//!   it is loaded (`Live`);
//! - `host`: host helpers (clock, seed, metric definition, header map read).

mod guard_sync;
mod host;
mod last_good;
mod request;
mod root;
mod state;

pub use root::CanaryRoot;

//! The HTTP context: the rollout and the decision on the way in, the counts and
//! the guard's tally on the way out.

use super::guard_sync::sync_guard;
use super::host::{generated_locally, now_ms, random_bytes, request_header_map, unix_ms};
use super::state::{Active, Live, Service};
use crate::config::Config;
use crate::decide::{decide, Reason, Rng};
use crate::fallback::SafeMode;
use crate::grpc::{
    is_grpc_content_type, outcome_from_headers, outcome_from_trailers, status_may_be_in_headers,
    GrpcCode,
};
use crate::guard::GuardConfig;
use crate::ip::parse_socket_or_ip;
use crate::metrics::code_class_index;
use crate::pick::{decide_pick, version_of_cluster, RouteWrite};
use crate::request::{RequestFacts, SerializedHeaders};
use crate::visitor::{
    cookie_with_id, encode_visitor_id, may_issue, set_cookie_value, VISITOR_ID_LEN,
    VISITOR_ID_RANDOM_BYTES,
};
use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::time::SystemTime;

/// One per HTTP request.
pub(super) struct CanaryRequest {
    pub(super) active: Option<Rc<Active>>,
    pub(super) safe_mode: Option<Rc<SafeMode>>,
    /// Per rollout, as in `active.services`.
    pub(super) live: Rc<RefCell<Vec<Live>>>,
    pub(super) rng: Rc<Cell<Rng>>,
    /// The rollout that decided this request: an index into `active.services`.
    pub(super) rollout: usize,
    /// The version this request went to and when the decision was made.
    pub(super) decided: Option<(usize, Option<SystemTime>)>,
    /// Pick mode: the route's weights chose the cluster, so the response side learns
    /// the version from the cluster's name.
    pub(super) learn_cluster: bool,
    /// A gRPC call whose outcome is counted (its metric or a guard needs it).
    pub(super) grpc: bool,
    /// A gRPC call whose status is still to come, in the trailers: its version.
    pub(super) grpc_pending: Option<usize>,
    /// `anonymous: "cookie"`: the visitor ID issued to this request, for the
    /// response's `Set-Cookie`.
    pub(super) issued: Option<[u8; VISITOR_ID_LEN]>,
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
        let headers = request_header_map();
        let request = HostRequest {
            headers: SerializedHeaders::new(&headers),
            visitor_id: OnceCell::new(),
        };
        // No rollout's match holds (for a single service: not one of its `hosts`):
        // passed on untouched, not counted, not guarded.
        let Some(index) = active.router.route(&request) else {
            return Action::Continue;
        };
        let Some(service) = active.services.get(index) else {
            return Action::Continue;
        };
        let Ok(lives) = self.live.try_borrow() else {
            return Action::Continue;
        };
        let Some(live) = lives.get(index) else {
            return Action::Continue;
        };
        self.rollout = index;
        let mut rng = self.rng.get();
        let (assignment, pick_write) = match &service.config.hash.pick {
            Some(pick) => {
                let (assignment, write) =
                    decide_pick(&service.config, pick, &live.routing, &request, &mut rng);
                (assignment, Some((pick, write)))
            }
            None => (
                decide(&service.config, &live.routing, &request, &mut rng),
                None,
            ),
        };
        self.rng.set(rng);

        drop(lives);
        // The override secret stops here: upstreams and their logs never see it.
        if let Some(token) = &service.config.override_.token {
            if request.header(&token.header).is_some() {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &token.header, None);
            }
        }

        // gRPC is told by the content-type in the map already read: no host call.
        // Its outcome is read only if counted, or if the guard compares this version
        // (in pick mode the version is known only from the cluster, at the response).
        let guard_watches = service
            .config
            .guard
            .as_ref()
            .is_some_and(|g| pick_write.is_some() || g.watches(assignment.version));
        self.grpc = (service.metrics.counts_grpc() || guard_watches)
            && request
                .header("content-type")
                .is_some_and(is_grpc_content_type);
        // A new visitor: the upstream sees its ID in `Cookie` from this request on.
        self.issued = request.issued();
        if let (Some(id), Some(name)) = (&self.issued, &service.config.hash.cookie) {
            let cookie = cookie_with_id(&request.headers, name, id);
            if let Err(status) =
                hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "cookie", Some(&cookie))
            {
                warn!("cannot set cookie: {status:?}");
            }
        }
        if let Some((pick, write)) = pick_write {
            write_pick(&service.config, &pick.header, write, &request);
            let weighted = matches!(
                (write, assignment.reason),
                (
                    RouteWrite::Pick(_) | RouteWrite::Draw,
                    Reason::Hash | Reason::Random
                )
            );
            let id = if weighted {
                service.metrics.weighted_request(assignment.reason)
            } else {
                service
                    .metrics
                    .request(assignment.version, assignment.reason)
            };
            if let Some(id) = id {
                let _ = hostcalls::increment_metric(id, 1);
            }
            if let Some(id) = self.issued.and(
                service
                    .metrics
                    .visitor_id_issued(assignment.version, weighted),
            ) {
                let _ = hostcalls::increment_metric(id, 1);
            }
            let started = if service.metrics.records_latency() {
                hostcalls::get_current_time().ok()
            } else {
                None
            };
            self.decided = Some((assignment.version, started));
            // The served version, from the cluster (a host call per response), only
            // if something counts per version.
            self.learn_cluster = service.metrics.counts_responses()
                || service.metrics.records_latency()
                || service.config.guard.is_some()
                || self.grpc;
            return Action::Continue;
        }
        let Some(version) = service.config.versions.get(assignment.version) else {
            return Action::Continue;
        };
        // Replaces every value the client may have sent under this name.
        if let Err(status) = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            &service.config.route_header,
            Some(&version.name),
        ) {
            warn!("cannot set {}: {status:?}", service.config.route_header);
        }
        if let Some(id) = service
            .metrics
            .request(assignment.version, assignment.reason)
        {
            let _ = hostcalls::increment_metric(id, 1);
        }
        if let Some(id) = self
            .issued
            .and(service.metrics.visitor_id_issued(assignment.version, false))
        {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let started = if service.metrics.records_latency() {
            hostcalls::get_current_time().ok()
        } else {
            None
        };
        self.decided = Some((assignment.version, started));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let rollout = self.rollout;
        let service = self.active.as_deref().and_then(|a| a.services.get(rollout));
        // A new visitor's ID, added beside the upstream's own Set-Cookie headers.
        if let (Some(id), Some(service)) = (self.issued.take(), service) {
            if let Some(name) = &service.config.hash.cookie {
                let value = set_cookie_value(name, &id, &service.config.hash.set_cookie_attributes);
                if let Err(status) = hostcalls::add_map_value_bytes(
                    MapType::HttpResponseHeaders,
                    "set-cookie",
                    &value,
                ) {
                    warn!("cannot add set-cookie: {status:?}");
                }
            }
        }
        let (Some(service), Some((decided, started))) = (service, self.decided.take()) else {
            return Action::Continue;
        };
        let version = if self.learn_cluster {
            // The upstream cluster the router picked. Envoy 1.40 answers the
            // attribute `xds.cluster_name`; the older top-level `cluster_name` is empty.
            match hostcalls::get_property(vec!["xds", "cluster_name"]) {
                Ok(Some(cluster)) => version_of_cluster(
                    &cluster,
                    service.config.versions.iter().map(|v| v.name.as_str()),
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
        let guard_watches = service
            .config
            .guard
            .as_ref()
            .is_some_and(|g| g.watches(version));
        let status = if service.metrics.counts_responses() || guard_watches || self.grpc {
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten()
        } else {
            None
        };
        let code_class = status.as_deref().and_then(code_class_index);
        if let Some(id) = code_class.and_then(|c| service.metrics.response(version, c)) {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let mut now = None;
        if let (Some(started), Some(id)) = (started, service.metrics.duration(version)) {
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
                Some(code) => self.count_grpc(service, version, code, now),
                None => self.grpc_pending = Some(version),
            }
        } else if let Some(guard) = service.config.guard.as_ref().filter(|_| guard_watches) {
            let code = status
                .as_deref()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            self.count_for_guard(service, guard, version, code, now);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        let rollout = self.rollout;
        let service = self.active.as_deref().and_then(|a| a.services.get(rollout));
        if let (Some(version), Some(service)) = (self.grpc_pending.take(), service) {
            let grpc_status =
                hostcalls::get_map_value_bytes(MapType::HttpResponseTrailers, "grpc-status")
                    .ok()
                    .flatten();
            self.count_grpc(
                service,
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
                if let Some(service) = active.services.get(self.rollout) {
                    self.count_grpc(service, version, GrpcCode::UNKNOWN, None);
                }
            }
        }
    }
}

impl CanaryRequest {
    /// Counts a gRPC call's outcome; for the guard only its code decides.
    fn count_grpc(
        &self,
        service: &Service,
        version: usize,
        code: GrpcCode,
        now: Option<SystemTime>,
    ) {
        if let Some(id) = service.metrics.grpc_response(version, code) {
            let _ = hostcalls::increment_metric(id, 1);
        }
        if let Some(guard) = &service.config.guard {
            let failed = guard.grpc_status.contains(code);
            self.tally_for_guard(service, guard, version, failed, now);
        }
    }

    fn count_for_guard(
        &self,
        service: &Service,
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
        self.tally_for_guard(service, guard, version, failed, now);
    }

    fn tally_for_guard(
        &self,
        service: &Service,
        guard: &GuardConfig,
        version: usize,
        failed: bool,
        now: Option<SystemTime>,
    ) {
        if !guard.watches(version) {
            return;
        }
        let Ok(mut lives) = self.live.try_borrow_mut() else {
            return;
        };
        let Some(live) = lives.get_mut(self.rollout) else {
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
            sync_guard(service, guard, live, now);
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

/// The request as the decision sees it: headers from the one map read, the client
/// address from a property read made only if an override needs it, and a new
/// visitor ID drawn from the host's random source only if the decision needs one
/// (`anonymous: "cookie"`, no user ID, not a gRPC call).
struct HostRequest<'a> {
    headers: SerializedHeaders<'a>,
    visitor_id: OnceCell<Option<[u8; VISITOR_ID_LEN]>>,
}

impl HostRequest<'_> {
    /// The visitor ID the decision issued, if it issued one.
    fn issued(&self) -> Option<[u8; VISITOR_ID_LEN]> {
        self.visitor_id.get().copied().flatten()
    }
}

impl RequestFacts for HostRequest<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.header(name)
    }

    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.headers.cookie(name)
    }

    /// 128 bits from WASI `random_get`: a host call, made only for a new visitor.
    /// Should the host give none, no ID: the request is drawn as with `random`.
    fn issue_visitor_id(&self) -> Option<&[u8]> {
        self.visitor_id
            .get_or_init(|| {
                if !may_issue(&self.headers) {
                    return None;
                }
                random_bytes::<VISITOR_ID_RANDOM_BYTES>().map(|random| encode_visitor_id(&random))
            })
            .as_ref()
            .map(|id| &id[..])
    }

    fn source_address(&self) -> Option<std::net::IpAddr> {
        match hostcalls::get_property(vec!["source", "address"]) {
            Ok(Some(address)) => parse_socket_or_ip(&address),
            _ => None,
        }
    }
}

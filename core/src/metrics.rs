//! Metric names, their tag encoding, and the table of metric ids defined once per
//! config. Names follow Istio's tag convention `key=.=value;.;` so that one naming
//! serves plain Envoy (`stats_tags` regexes) and Istio (`extraStatTags`):
//! `version=.=canary;.;reason=.=hash;.;canary_requests_total` becomes
//! `canary_requests_total{version="canary",reason="hash"}` in Prometheus.
//!
//! In a config with `rollouts`, every series of a rollout carries a `rollout` tag,
//! first in the name as Istio writes its tags:
//! `rollout=.=checkout;.;version=.=canary;.;reason=.=hash;.;canary_requests_total`.
//! A single-service config keeps the names it always had, without the tag. The
//! config health series are the proxy's, never a rollout's: no tag.

use crate::config::{Anonymous, Config, WEIGHTED_VERSION};
use crate::decide::Reason;
use crate::grpc::{GrpcCode, CODE_NAMES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Where metrics live: the host in the filter, a recorder in tests.
pub trait MetricSink {
    type Error;
    fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, Self::Error>;
}

/// Pick mode: the reasons whose destination the route's weights choose.
pub const WEIGHTED_REASONS: [Reason; 2] = [Reason::Hash, Reason::Random];

/// Status classes counted per version: 1xx..5xx.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`CODE_CLASSES`] of an HTTP status, read as the bytes of `:status`.
#[inline]
pub fn code_class_index(status: &[u8]) -> Option<usize> {
    match status {
        [first @ b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => Some(usize::from(first - b'1')),
        _ => None,
    }
}

/// The tag that names a rollout, first in each of its metric names.
pub fn rollout_tag(rollout: &str) -> String {
    format!("rollout=.={rollout};.;")
}

/// Defines every metric of a rollout with its `rollout` tag in front of the name.
struct Tagged<'a, S> {
    tag: String,
    sink: &'a mut S,
}

impl<S: MetricSink> MetricSink for Tagged<'_, S> {
    type Error = S::Error;
    fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, Self::Error> {
        self.sink.define(kind, &format!("{}{name}", self.tag))
    }
}

pub fn requests_total_name(prefix: &str, version: &str, reason: Reason) -> String {
    format!(
        "version=.={version};.;reason=.={};.;{prefix}_requests_total",
        reason.as_str()
    )
}

pub fn responses_total_name(prefix: &str, version: &str, code_class: &str) -> String {
    format!("version=.={version};.;code_class=.={code_class};.;{prefix}_responses_total")
}

/// Defines the metric `name` and appends its id to `ids` (one copy of the call and
/// its cleanup in the `.wasm`, not one per kind of metric).
#[cold]
#[inline(never)]
fn define_into<S: MetricSink>(
    sink: &mut S,
    kind: MetricKind,
    name: String,
    ids: &mut Vec<u32>,
) -> Result<(), S::Error> {
    ids.push(sink.define(kind, &name)?);
    Ok(())
}

/// One series per version and gRPC status code name: the outcome of gRPC calls,
/// which `responses_total` cannot see (a failed gRPC call is mostly `:status 200`).
pub fn grpc_responses_total_name(prefix: &str, version: &str, grpc_code: &str) -> String {
    format!("version=.={version};.;grpc_code=.={grpc_code};.;{prefix}_grpc_responses_total")
}

/// `anonymous: "cookie"`: visitor IDs issued, per version the new visitor went to:
/// the new-visitor traffic of each version (its requests are also in
/// `requests_total`, as every decision).
pub fn visitor_ids_issued_total_name(prefix: &str, version: &str) -> String {
    format!("version=.={version};.;{prefix}_visitor_ids_issued_total")
}

pub fn request_duration_name(prefix: &str, version: &str) -> String {
    format!("version=.={version};.;{prefix}_request_duration_milliseconds")
}

pub fn weight_gauge_name(prefix: &str, version: &str) -> String {
    format!("version=.={version};.;{prefix}_weight_basis_points")
}

pub fn guard_tripped_gauge_name(prefix: &str, version: &str) -> String {
    format!("version=.={version};.;{prefix}_guard_tripped")
}

/// Config health, one series each per proxy, always under the default prefix
/// (`canary_`): they are about configs whose own `metrics_prefix` cannot be trusted,
/// and one fixed name lets one alert rule cover every plugin.
///
/// Bad configs loaded (counted once per VM: Envoy's main thread and each worker
/// load every config).
pub const CONFIG_REJECTED_TOTAL: &str = "canary_config_rejected_total";
/// Plugins whose newest config was refused, so that their last good config (or
/// safe mode) serves instead: 0 when every plugin runs the config last pushed.
pub const CONFIG_STALE: &str = "canary_config_stale";
/// Of those, plugins with no good config at all, in safe mode.
pub const CONFIG_SAFE_MODE: &str = "canary_config_safe_mode";

/// Metric ids for every (version, reason), (version, code class) and (version,
/// gRPC code), one
/// duration histogram and one weight gauge per version, and the guard's gauge:
/// the per-request path only indexes this table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricTable {
    requests: Vec<u32>,
    responses: Vec<u32>,
    grpc_responses: Vec<u32>,
    durations: Vec<u32>,
    weights: Vec<u32>,
    guard_tripped: Option<u32>,
    /// Pick mode: decisions the route's weights make, per reason, under the version
    /// label [`WEIGHTED_VERSION`].
    weighted: Vec<u32>,
    /// `anonymous: "cookie"`: visitor IDs issued per version.
    visitor_ids_issued: Vec<u32>,
    /// And in pick mode, those the route's weights decide, under the version label
    /// [`WEIGHTED_VERSION`].
    weighted_visitor_ids_issued: Option<u32>,
}

impl MetricTable {
    /// The metrics of one rollout: `rollout` names it (its tag starts every name),
    /// `None` for a single-service config (names without the tag).
    #[cold]
    #[inline(never)]
    pub fn define_for<S: MetricSink>(
        config: &Config,
        rollout: Option<&str>,
        sink: &mut S,
    ) -> Result<Self, S::Error> {
        // One code path for both (an untagged config has an empty tag): the table's
        // code is in the `.wasm` once.
        Self::define_tagged(
            config,
            &mut Tagged {
                tag: rollout.map_or_else(String::new, rollout_tag),
                sink,
            },
        )
    }

    /// The metrics of a single-service config (no `rollout` tag).
    #[cold]
    #[inline(never)]
    pub fn define<S: MetricSink>(config: &Config, sink: &mut S) -> Result<Self, S::Error> {
        Self::define_for(config, None, sink)
    }

    #[cold]
    #[inline(never)]
    fn define_tagged<S: MetricSink>(
        config: &Config,
        sink: &mut Tagged<S>,
    ) -> Result<Self, S::Error> {
        let n = config.versions.len();
        let mut table = MetricTable {
            requests: Vec::with_capacity(n * Reason::ALL.len()),
            responses: Vec::with_capacity(n * CODE_CLASSES.len()),
            grpc_responses: Vec::with_capacity(n * CODE_NAMES.len()),
            durations: Vec::with_capacity(n),
            weights: Vec::with_capacity(n),
            guard_tripped: None,
            weighted: Vec::new(),
            visitor_ids_issued: Vec::new(),
            weighted_visitor_ids_issued: None,
        };
        table.fill(config, sink)?;
        Ok(table)
    }

    /// Defines the metrics into `self`. Apart from [`Self::define_tagged`] so that a
    /// failure returns without dropping the table at every definition (one copy of
    /// that cleanup in the `.wasm`).
    #[cold]
    #[inline(never)]
    fn fill<S: MetricSink>(
        &mut self,
        config: &Config,
        sink: &mut Tagged<S>,
    ) -> Result<(), S::Error> {
        let prefix = &config.metrics_prefix;
        for version in &config.versions {
            let v = version.name.as_str();
            for reason in Reason::ALL {
                let name = requests_total_name(prefix, v, reason);
                define_into(sink, MetricKind::Counter, name, &mut self.requests)?;
            }
            if config.metrics.responses {
                for class in CODE_CLASSES {
                    let name = responses_total_name(prefix, v, class);
                    define_into(sink, MetricKind::Counter, name, &mut self.responses)?;
                }
                // gRPC outcomes belong with the response counts: the same switch.
                for code in CODE_NAMES {
                    let name = grpc_responses_total_name(prefix, v, code);
                    define_into(sink, MetricKind::Counter, name, &mut self.grpc_responses)?;
                }
            }
            if config.metrics.latency {
                let name = request_duration_name(prefix, v);
                define_into(sink, MetricKind::Histogram, name, &mut self.durations)?;
            }
            let name = weight_gauge_name(prefix, v);
            define_into(sink, MetricKind::Gauge, name, &mut self.weights)?;
        }
        if let Some(guarded) = config
            .guard
            .as_ref()
            .and_then(|g| config.versions.get(g.version))
        {
            let name = guard_tripped_gauge_name(prefix, &guarded.name);
            self.guard_tripped = Some(sink.define(MetricKind::Gauge, &name)?);
        }
        if config.hash.pick.is_some() {
            for reason in WEIGHTED_REASONS {
                let name = requests_total_name(prefix, WEIGHTED_VERSION, reason);
                define_into(sink, MetricKind::Counter, name, &mut self.weighted)?;
            }
        }
        if config.anonymous == Anonymous::Cookie {
            for version in &config.versions {
                let name = visitor_ids_issued_total_name(prefix, &version.name);
                define_into(
                    sink,
                    MetricKind::Counter,
                    name,
                    &mut self.visitor_ids_issued,
                )?;
            }
            if config.hash.pick.is_some() {
                let name = visitor_ids_issued_total_name(prefix, WEIGHTED_VERSION);
                self.weighted_visitor_ids_issued = Some(sink.define(MetricKind::Counter, &name)?);
            }
        }
        Ok(())
    }

    /// The counter of visitor IDs issued to requests that went to `version`;
    /// `weighted`: pick mode, where the route's weights chose (counted under
    /// [`WEIGHTED_VERSION`]).
    #[inline]
    pub fn visitor_id_issued(&self, version: usize, weighted: bool) -> Option<u32> {
        if weighted {
            self.weighted_visitor_ids_issued
        } else {
            self.visitor_ids_issued.get(version).copied()
        }
    }

    /// The weight gauge of each version, in version order.
    #[inline]
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    #[inline]
    pub fn guard_tripped(&self) -> Option<u32> {
        self.guard_tripped
    }

    /// True if responses are counted per status class.
    #[inline]
    pub fn counts_responses(&self) -> bool {
        !self.responses.is_empty()
    }

    /// True if gRPC calls are counted per status code.
    #[inline]
    pub fn counts_grpc(&self) -> bool {
        !self.grpc_responses.is_empty()
    }

    /// True if the per-version latency histogram is recorded.
    #[inline]
    pub fn records_latency(&self) -> bool {
        !self.durations.is_empty()
    }

    #[inline]
    pub fn request(&self, version: usize, reason: Reason) -> Option<u32> {
        self.requests
            .get(version * Reason::ALL.len() + reason.index())
            .copied()
    }

    /// Pick mode: the counter of a decision the route's weights make (`hash`, `random`).
    #[inline]
    pub fn weighted_request(&self, reason: Reason) -> Option<u32> {
        let at = WEIGHTED_REASONS.iter().position(|r| *r == reason)?;
        self.weighted.get(at).copied()
    }

    #[inline]
    pub fn response(&self, version: usize, code_class: usize) -> Option<u32> {
        self.responses
            .get(version * CODE_CLASSES.len() + code_class)
            .copied()
    }

    #[inline]
    pub fn grpc_response(&self, version: usize, code: GrpcCode) -> Option<u32> {
        self.grpc_responses
            .get(version * CODE_NAMES.len() + code.index())
            .copied()
    }

    #[inline]
    pub fn duration(&self, version: usize) -> Option<u32> {
        self.durations.get(version).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(MetricKind, String)>);

    impl MetricSink for Recorder {
        type Error = ();
        fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, ()> {
            self.0.push((kind, name.to_string()));
            Ok(self.0.len() as u32 - 1)
        }
    }

    #[test]
    fn names_use_the_istio_tag_convention() {
        assert_eq!(
            requests_total_name("canary", "canary", Reason::Hash),
            "version=.=canary;.;reason=.=hash;.;canary_requests_total"
        );
        assert_eq!(
            responses_total_name("p", "stable", "5xx"),
            "version=.=stable;.;code_class=.=5xx;.;p_responses_total"
        );
        assert_eq!(
            request_duration_name("canary", "v2"),
            "version=.=v2;.;canary_request_duration_milliseconds"
        );
    }

    #[test]
    fn the_table_maps_each_combination_to_its_own_metric() {
        let config = Config::from_json(
            br#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}],"metrics_prefix":"shop","metrics":{"responses":true,"latency":true}}"#,
        )
        .unwrap();
        let mut rec = Recorder::default();
        let table = MetricTable::define(&config, &mut rec).unwrap();
        assert_eq!(rec.0.len(), 2 * (6 + 5 + 17 + 1 + 1));
        assert_eq!(table.guard_tripped(), None);
        let name = |id: Option<u32>| rec.0[id.unwrap() as usize].clone();
        assert_eq!(
            name(table.request(1, Reason::Override)),
            (
                MetricKind::Counter,
                "version=.=canary;.;reason=.=override;.;shop_requests_total".into()
            )
        );
        assert_eq!(
            name(table.request(0, Reason::Baseline)),
            (
                MetricKind::Counter,
                "version=.=stable;.;reason=.=baseline;.;shop_requests_total".into()
            )
        );
        assert_eq!(
            name(table.response(1, 4)),
            (
                MetricKind::Counter,
                "version=.=canary;.;code_class=.=5xx;.;shop_responses_total".into()
            )
        );
        assert_eq!(
            name(table.duration(0)),
            (
                MetricKind::Histogram,
                "version=.=stable;.;shop_request_duration_milliseconds".into()
            )
        );
        assert_eq!(
            name(table.weights().get(1).copied()),
            (
                MetricKind::Gauge,
                "version=.=canary;.;shop_weight_basis_points".into()
            )
        );
        assert_eq!(
            name(table.request(0, Reason::Guard)),
            (
                MetricKind::Counter,
                "version=.=stable;.;reason=.=guard;.;shop_requests_total".into()
            )
        );
        assert_eq!(
            name(table.grpc_response(1, GrpcCode::UNAVAILABLE)),
            (
                MetricKind::Counter,
                "version=.=canary;.;grpc_code=.=UNAVAILABLE;.;shop_grpc_responses_total".into()
            )
        );
        assert_eq!(
            name(table.grpc_response(0, GrpcCode::OK)),
            (
                MetricKind::Counter,
                "version=.=stable;.;grpc_code=.=OK;.;shop_grpc_responses_total".into()
            )
        );
        // Every (version, code) has its own id.
        let ids: std::collections::BTreeSet<u32> = (0..2)
            .flat_map(|v| GrpcCode::all().map(move |c| (v, c)))
            .filter_map(|(v, c)| table.grpc_response(v, c))
            .collect();
        assert_eq!(ids.len(), 2 * 17);
        assert_eq!(table.grpc_response(2, GrpcCode::OK), None);
        assert_eq!(table.request(2, Reason::Hash), None);
        assert_eq!(table.response(2, 0), None);
    }

    #[test]
    fn a_guard_adds_one_gauge_for_the_guarded_version() {
        let config = Config::from_json(
            br#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}],"guard":{"version":"canary","max_error_rate":0.1}}"#,
        )
        .unwrap();
        let mut rec = Recorder::default();
        let table = MetricTable::define(&config, &mut rec).unwrap();
        // Decision counters and weight gauges only: response, gRPC and latency
        // metrics are opt-in, a guard does not turn them on.
        assert_eq!(rec.0.len(), 2 * (6 + 1) + 1);
        assert!(!table.counts_responses() && !table.records_latency() && !table.counts_grpc());
        assert_eq!(
            rec.0[table.guard_tripped().unwrap() as usize],
            (
                MetricKind::Gauge,
                "version=.=canary;.;canary_guard_tripped".into()
            )
        );
    }

    #[test]
    fn metrics_not_opted_into_are_not_defined() {
        let config =
            Config::from_json(br#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}]}"#)
                .unwrap();
        let mut rec = Recorder::default();
        let table = MetricTable::define(&config, &mut rec).unwrap();
        assert_eq!(rec.0.len(), 2 * (6 + 1));
        assert!(!table.counts_responses() && !table.records_latency() && !table.counts_grpc());
        assert_eq!(table.grpc_response(0, GrpcCode::OK), None);
        assert_eq!(table.response(0, 1), None);
        assert_eq!(table.duration(0), None);
        assert!(rec
            .0
            .iter()
            .all(|(_, n)| !n.contains("responses_total") && !n.contains("duration")));
    }

    #[test]
    fn a_rollouts_metrics_carry_its_tag_first_and_a_single_service_config_none() {
        let plugin = crate::config::PluginConfig::from_json(
            br#"{"metrics":{"responses":true,"latency":true},"rollouts":[
                {"name":"checkout","versions":[{"name":"stable"},{"name":"canary","weight":5}],
                 "guard":{"version":"canary","max_error_rate":0.1}},
                {"name":"search","versions":[{"name":"v1"}],"hash":{"header":"u","pick_header":"x-pick"}}]}"#,
        )
        .unwrap();
        let mut rec = Recorder::default();
        let tables: Vec<MetricTable> = plugin
            .rollouts
            .iter()
            .map(|r| MetricTable::define_for(&r.config, r.name.as_deref(), &mut rec).unwrap())
            .collect();
        // Every series of a rollout, whatever its kind, is tagged.
        assert_eq!(
            rec.0.len(),
            2 * (6 + 5 + 17 + 1 + 1) + 1 + (6 + 5 + 17 + 1 + 1) + 2
        );
        let checkout = rec
            .0
            .iter()
            .filter(|(_, n)| n.starts_with("rollout=.=checkout;.;version=.="))
            .count();
        let search = rec
            .0
            .iter()
            .filter(|(_, n)| n.starts_with("rollout=.=search;.;version=.="))
            .count();
        assert_eq!((checkout, search), (2 * 30 + 1, 30 + 2));
        let name = |id: Option<u32>| rec.0[id.unwrap() as usize].1.clone();
        assert_eq!(
            name(tables[0].request(1, Reason::Hash)),
            "rollout=.=checkout;.;version=.=canary;.;reason=.=hash;.;canary_requests_total"
        );
        assert_eq!(
            name(tables[0].guard_tripped()),
            "rollout=.=checkout;.;version=.=canary;.;canary_guard_tripped"
        );
        assert_eq!(
            name(tables[1].weighted_request(Reason::Random)),
            "rollout=.=search;.;version=.=weighted;.;reason=.=random;.;canary_requests_total"
        );
        assert_eq!(
            name(tables[1].duration(0)),
            "rollout=.=search;.;version=.=v1;.;canary_request_duration_milliseconds"
        );
        // Ids are the sink's, per rollout.
        assert_ne!(
            tables[0].request(0, Reason::Hash),
            tables[1].request(0, Reason::Hash)
        );

        let single = Config::from_json(br#"{"versions":[{"name":"stable"}]}"#).unwrap();
        let mut plain = Recorder::default();
        MetricTable::define_for(&single, None, &mut plain).unwrap();
        let mut before = Recorder::default();
        MetricTable::define(&single, &mut before).unwrap();
        assert_eq!(plain.0, before.0);
        assert!(plain.0.iter().all(|(_, n)| n.starts_with("version=.=")));
    }

    #[test]
    fn anonymous_cookie_adds_one_issued_counter_per_version() {
        let json = r#"{"versions":[{"name":"stable"},{"name":"canary","weight":5}],"hash":{"cookie":"vid"},"anonymous":"cookie","metrics_prefix":"shop"}"#;
        let config = Config::from_json(json.as_bytes()).unwrap();
        let mut rec = Recorder::default();
        let table = MetricTable::define(&config, &mut rec).unwrap();
        assert_eq!(rec.0.len(), 2 * (6 + 1 + 1));
        let name = |id: Option<u32>| rec.0[id.unwrap() as usize].clone();
        assert_eq!(
            name(table.visitor_id_issued(1, false)),
            (
                MetricKind::Counter,
                "version=.=canary;.;shop_visitor_ids_issued_total".into()
            )
        );
        assert_eq!(
            name(table.visitor_id_issued(0, false)).1,
            "version=.=stable;.;shop_visitor_ids_issued_total"
        );
        assert_eq!(table.visitor_id_issued(2, false), None);
        assert_eq!(table.visitor_id_issued(0, true), None, "not in pick mode");

        let pick = r#"{"versions":[{"name":"stable"},{"name":"canary"}],"hash":{"cookie":"vid","pick_header":"x-pick"},"anonymous":"cookie","metrics_prefix":"shop"}"#;
        let config = Config::from_json(pick.as_bytes()).unwrap();
        let mut rec = Recorder::default();
        let table = MetricTable::define(&config, &mut rec).unwrap();
        assert_eq!(
            rec.0[table.visitor_id_issued(0, true).unwrap() as usize].1,
            "version=.=weighted;.;shop_visitor_ids_issued_total"
        );
        assert_ne!(
            table.visitor_id_issued(0, true),
            table.visitor_id_issued(0, false)
        );

        for other in [r#""random""#, r#""baseline""#] {
            let json = json.replace(
                r#""anonymous":"cookie""#,
                &format!(r#""anonymous":{other}"#),
            );
            let config = Config::from_json(json.as_bytes()).unwrap();
            let mut rec = Recorder::default();
            let table = MetricTable::define(&config, &mut rec).unwrap();
            assert!(rec.0.iter().all(|(_, n)| !n.contains("visitor_ids")));
            assert_eq!(table.visitor_id_issued(0, false), None);
        }
    }

    #[test]
    fn config_health_metrics_use_the_default_prefix() {
        for name in [CONFIG_REJECTED_TOTAL, CONFIG_STALE, CONFIG_SAFE_MODE] {
            assert!(
                name.starts_with(&format!(
                    "{}_config_",
                    crate::config::DEFAULT_METRICS_PREFIX
                )),
                "{name}"
            );
        }
    }

    #[test]
    fn status_codes_map_to_classes() {
        assert_eq!(code_class_index(b"200"), Some(1));
        assert_eq!(code_class_index(b"101"), Some(0));
        assert_eq!(code_class_index(b"503"), Some(4));
        assert_eq!(code_class_index(b"404"), Some(3));
        assert_eq!(code_class_index(b"302"), Some(2));
        assert_eq!(code_class_index(b"600"), None);
        assert_eq!(code_class_index(b"20"), None);
        assert_eq!(code_class_index(b""), None);
        assert_eq!(code_class_index(b"2000"), None);
    }
}

//! The thin host layer: proxy-wasm root and HTTP contexts. It reads what the
//! decision needs from Envoy, writes back what the decision returns and counts it.
//! No routing logic lives here.
//!
//! Host calls per request: one read of the whole request header map, one header
//! write, one counter increment and one clock read on the way in; one `:status`
//! read, one counter increment, one clock read and one histogram record on the way
//! out. Envoy clears the route cache itself after a filter of this ABI (0.2.1)
//! changes request headers, so no explicit `clear_route_cache` call is made.

use crate::config::{format_basis_points, Config, ConfigError};
use crate::decide::{decide, Rng};
use crate::metrics::{code_class_index, MetricKind, MetricSink, MetricTable};
use crate::request::SerializedHeaders;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::ptr::null_mut;
use std::rc::Rc;
use std::time::SystemTime;

/// A config that passed validation, with its metrics defined in this VM.
struct Active {
    config: Config,
    metrics: MetricTable,
}

/// One per plugin and worker thread: owns the parsed config.
pub struct CanaryRoot {
    active: Option<Rc<Active>>,
    rng: Rc<Cell<Rng>>,
}

impl CanaryRoot {
    pub fn new() -> Self {
        // RandomState draws its keys from the host's random source (WASI
        // random_get) once; the per-request draw then needs no host call.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(now_nanos());
        CanaryRoot {
            active: None,
            rng: Rc::new(Cell::new(Rng::new(hasher.finish()))),
        }
    }
}

impl Default for CanaryRoot {
    fn default() -> Self {
        Self::new()
    }
}

fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

struct HostMetrics;

impl MetricSink for HostMetrics {
    type Error = (String, Status);
    fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, Self::Error> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).map_err(|status| (name.to_string(), status))
    }
}

fn log_rejection(errors: &[ConfigError]) {
    let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
    error!(
        "config rejected ({} problem{}): {}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        details.join("; ")
    );
}

impl Context for CanaryRoot {}

impl RootContext for CanaryRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) if !bytes.is_empty() => bytes,
            Ok(_) => {
                log_rejection(&[ConfigError {
                    field: String::new(),
                    message: "the plugin configuration is empty: it must be a JSON object with at least `versions`".into(),
                }]);
                return false;
            }
            Err(status) => {
                error!("config rejected: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let config = match Config::from_json(&bytes) {
            Ok(config) => config,
            Err(errors) => {
                log_rejection(&errors);
                return false;
            }
        };
        let metrics = match MetricTable::define(&config, &mut HostMetrics) {
            Ok(metrics) => metrics,
            Err((name, status)) => {
                error!("config rejected: cannot define metric `{name}`: {status:?}");
                return false;
            }
        };
        let split: Vec<String> = config
            .versions
            .iter()
            .map(|v| {
                format!(
                    "{}={}%",
                    v.name,
                    format_basis_points(v.weight_basis_points.into())
                )
            })
            .collect();
        info!(
            "config loaded: route_header={} versions {}",
            config.route_header,
            split.join(" ")
        );
        self.active = Some(Rc::new(Active { config, metrics }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryRequest {
            active: self.active.clone(),
            rng: Rc::clone(&self.rng),
            decided: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One per HTTP request.
struct CanaryRequest {
    active: Option<Rc<Active>>,
    rng: Rc<Cell<Rng>>,
    /// The version this request went to and when the decision was made.
    decided: Option<(usize, Option<SystemTime>)>,
}

impl Context for CanaryRequest {}

impl HttpContext for CanaryRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(active) = self.active.as_deref() else {
            return Action::Continue;
        };
        let headers = request_header_map();
        let mut rng = self.rng.get();
        let assignment = decide(&active.config, &SerializedHeaders::new(&headers), &mut rng);
        self.rng.set(rng);

        let Some(version) = active.config.versions.get(assignment.version) else {
            return Action::Continue;
        };
        // Replaces every value the client may have sent under this name.
        if let Err(status) = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            &active.config.route_header,
            Some(&version.name),
        ) {
            warn!("cannot set {}: {status:?}", active.config.route_header);
        }
        if let Some(id) = active
            .metrics
            .request(assignment.version, assignment.reason)
        {
            let _ = hostcalls::increment_metric(id, 1);
        }
        self.decided = Some((assignment.version, hostcalls::get_current_time().ok()));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(active), Some((version, started))) =
            (self.active.as_deref(), self.decided.take())
        else {
            return Action::Continue;
        };
        if let Ok(Some(status)) =
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
        {
            if let Some(id) =
                code_class_index(&status).and_then(|c| active.metrics.response(version, c))
            {
                let _ = hostcalls::increment_metric(id, 1);
            }
        }
        if let (Some(started), Some(id)) = (started, active.metrics.duration(version)) {
            if let Some(elapsed) = hostcalls::get_current_time()
                .ok()
                .and_then(|now| now.duration_since(started).ok())
            {
                let _ = hostcalls::record_metric(id, elapsed.as_millis() as u64);
            }
        }
        Action::Continue
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The whole request header map, serialized, in one host call. Parsed by
/// [`SerializedHeaders`], which tolerates any bytes: unlike the SDK's typed
/// getters, nothing here assumes header names or values are UTF-8.
fn request_header_map() -> Vec<u8> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated through this
    // module's exported allocator (a leaked Vec<u8> of that capacity), so taking
    // ownership back as a Vec<u8> of that length and capacity is sound.
    unsafe {
        match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    }
}

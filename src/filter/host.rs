//! Host helpers: the clock, the random source (the seed, visitor IDs), metric
//! definition, one-call header map read, and the rejection log line.

use crate::config::ConfigError;
use crate::metrics::{MetricKind, MetricSink};
use log::error;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType, Status};
use std::ptr::null_mut;
use std::time::SystemTime;

/// The host clock in unix milliseconds (0 if the host cannot say).
pub(super) fn now_ms() -> i64 {
    hostcalls::get_current_time().ok().map_or(0, unix_ms)
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI's random source, which Envoy gives every Wasm VM.
    #[link_name = "random_get"]
    fn wasi_random_get(buf: *mut u8, buf_len: usize) -> i32;
}

/// `N` bytes from the host's random source; `None` if the host gives none (WASI
/// errno not 0).
pub(super) fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    // SAFETY: the host writes at most `bytes.len()` bytes, into `bytes`.
    let errno = unsafe { wasi_random_get(bytes.as_mut_ptr(), bytes.len()) };
    (errno == 0).then_some(bytes)
}

/// The seed of a worker's random draws (anonymous users): 64 bits from the host's
/// random source, once per root context, so the per-request draw needs no host
/// call. Mixed with the clock, so that workers still differ should the host give
/// nothing.
pub(super) fn random_seed() -> u64 {
    u64::from_le_bytes(random_bytes::<8>().unwrap_or_default()) ^ now_ms().unsigned_abs()
}

pub(super) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) struct HostMetrics;

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

pub(super) fn log_rejection(errors: &[ConfigError]) {
    let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
    error!(
        "config rejected ({} problem{}): {}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        details.join("; ")
    );
}

/// True if Envoy produced the response itself rather than relaying the upstream's.
pub(super) fn generated_locally() -> bool {
    match hostcalls::get_property(vec!["response", "code_details"]) {
        Ok(Some(details)) => details.as_slice() != b"via_upstream",
        _ => false,
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
/// [`SerializedHeaders`](crate::request::SerializedHeaders), which tolerates any
/// bytes: unlike the SDK's typed getters, nothing here assumes header names or
/// values are UTF-8.
pub(super) fn request_header_map() -> Vec<u8> {
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

//! `anonymous: "cookie"` in the CLI: the visitor IDs the filter would issue, drawn
//! from the seeded PRNG instead of the host's random source (so that a run can be
//! repeated), and the cookie they travel in.

use canary_router::config::{Anonymous, Config};
use canary_router::decide::{user_id, Rng};
use canary_router::request::RequestFacts;
use canary_router::schedule::format_duration;
use canary_router::visitor::{
    encode_visitor_id, may_issue, VISITOR_ID_LEN, VISITOR_ID_RANDOM_BYTES,
};

/// A visitor ID as the filter writes one, from 128 bits of `rng`.
pub fn sample_id(rng: &mut Rng) -> [u8; VISITOR_ID_LEN] {
    let mut random = [0u8; VISITOR_ID_RANDOM_BYTES];
    random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    random[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    encode_visitor_id(&random)
}

/// True if the filter would issue this request a visitor ID: `anonymous: "cookie"`,
/// no user ID, not a gRPC call.
pub fn would_issue(config: &Config, request: &impl RequestFacts) -> bool {
    config.anonymous == Anonymous::Cookie
        && user_id(config, request).is_none()
        && may_issue(request)
}

/// `vid (Max-Age 365d, Path /, SameSite Lax, Secure, HttpOnly)`.
pub fn cookie_text(config: &Config) -> String {
    let attributes = config.hash.cookie_attributes.clone().unwrap_or_default();
    let mut parts = vec![
        format!("Max-Age {}", format_duration(attributes.max_age_ms)),
        format!("Path {}", attributes.path),
    ];
    if let Some(domain) = &attributes.domain {
        parts.push(format!("Domain {domain}"));
    }
    parts.push(format!("SameSite {}", attributes.same_site.as_str()));
    if attributes.secure {
        parts.push("Secure".to_string());
    }
    if attributes.http_only {
        parts.push("HttpOnly".to_string());
    }
    format!(
        "{} ({})",
        config.hash.cookie.as_deref().unwrap_or("?"),
        parts.join(", ")
    )
}

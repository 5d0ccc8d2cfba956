//! `anonymous`: what happens to a request that carries no user ID.

use super::json::{self, Json};
use serde::Deserialize;

/// What to do with a request that carries no user ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Draw each request independently by the weights.
    #[default]
    Random,
    /// Send it to the first (baseline) version.
    Baseline,
    /// Issue it a new visitor ID in the cookie hash.cookie and decide it on that ID,
    /// exactly as its later requests, which carry the cookie, are decided. Where no
    /// ID can be issued (gRPC calls), drawn as with random.
    Cookie,
}

/// `anonymous`, at the top level or in a rollout.
#[cold]
#[inline(never)]
pub(super) fn read_anonymous(json: &mut Json) -> json::Result<Anonymous> {
    json.unit_enum(&["random", "baseline", "cookie"])
        .map(|i| match i {
            0 => Anonymous::Random,
            1 => Anonymous::Baseline,
            _ => Anonymous::Cookie,
        })
}

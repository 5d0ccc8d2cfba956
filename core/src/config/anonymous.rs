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
}

/// `anonymous`, at the top level or in a rollout.
#[cold]
#[inline(never)]
pub(super) fn read_anonymous(json: &mut Json) -> json::Result<Anonymous> {
    json.unit_enum(&["random", "baseline"]).map(|i| {
        if i == 0 {
            Anonymous::Random
        } else {
            Anonymous::Baseline
        }
    })
}

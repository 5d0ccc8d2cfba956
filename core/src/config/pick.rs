//! Pick mode's config side: `hash.pick_header` and `hash.pick_total` validated
//! ([`PickConfig`]), their limits, and the version label of the decisions the
//! route's weights make. A leaf (it imports nothing), so that the config's sections
//! (`hash`, `versions`) and the `pick` module, which reads the whole `Config`, both
//! import it without a circle; `pick` re-exports it.

/// The default `hash.pick_total`: Istio, Flagger and Argo Rollouts weigh in percent.
pub const DEFAULT_PICK_TOTAL: u64 = 100;
/// The largest `hash.pick_total`: Envoy's weights are u32 and so is their sum.
pub const MAX_PICK_TOTAL: u64 = u32::MAX as u64;
/// The `version` label of decisions the route's weights make (hashed and anonymous
/// requests in pick mode): the filter cannot know the destination when it decides.
pub const WEIGHTED_VERSION: &str = "weighted";

/// `hash.pick_header` and `hash.pick_total`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickConfig {
    /// Lower-case header name.
    pub header: String,
    /// The sum of the route's weights, 1..=[`MAX_PICK_TOTAL`].
    pub total: u64,
}

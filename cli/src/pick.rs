//! Pick mode (`hash.pick_header`) in the CLI: the route's weights, given as
//! `--route-weights NAME=W,...` in the route's destination order, decide where a pick
//! value lands; `explain` shows the value and the destination, `simulate` the split
//! over the destinations. The pick values are the filter's (`canary_router::pick`).

use canary_router::config::{Anonymous, Config};
use canary_router::decide::{Assignment, Reason, Rng, Routing};
use canary_router::pick::{decide_pick, destination_of, PickConfig, RouteWrite};
use canary_router::request::{serialize_headers, KnownSource, SerializedHeaders};
use canary_router::visitor::WithVisitorId;
use serde_json::{json, Value};

/// The route's destinations and weights, in the route's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteWeights(pub Vec<(String, u64)>);

impl RouteWeights {
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, w)| w).sum()
    }

    fn weights(&self) -> Vec<u64> {
        self.0.iter().map(|(_, w)| *w).collect()
    }

    /// `primary=90, canary=10`.
    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(|(n, w)| format!("{n}={w}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The destination index and its range `[start, end)` of `0..total`.
    fn range_of(&self, value: u64) -> Option<(usize, u64, u64)> {
        let i = destination_of(value, &self.weights())?;
        let start: u64 = self.0[..i].iter().map(|(_, w)| w).sum();
        Some((i, start, start + self.0[i].1))
    }

    /// Where a request goes: a named version takes its header route when the route
    /// has a destination of that name (as the header routes placed first do), else
    /// its pick value decides; `None` for a random draw or weights summing to 0.
    fn destination(&self, config: &Config, write: RouteWrite) -> Option<usize> {
        match write {
            RouteWrite::Version { version, pick } => {
                let name = config.versions.get(version).map(|v| v.name.as_str());
                self.0
                    .iter()
                    .position(|(n, _)| Some(n.as_str()) == name)
                    .or_else(|| pick.and_then(|p| destination_of(p, &self.weights())))
            }
            RouteWrite::Pick(value) => destination_of(value, &self.weights()),
            RouteWrite::Draw => None,
        }
    }
}

/// `NAME=W,NAME=W`: the route's destinations in order, whole non-negative weights
/// (as Envoy's and Istio's), adding up to more than 0.
pub fn parse_route_weights(text: &str) -> Result<RouteWeights, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not NAME=WEIGHT"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{part}` has no destination name"));
        }
        let weight: u64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("`{part}`: the weight is not a whole number"))?;
        if weight > u64::from(u32::MAX) {
            return Err(format!("`{part}`: Envoy's weights are at most 4294967295"));
        }
        out.push((name.to_string(), weight));
    }
    let weights = RouteWeights(out);
    if weights.0.is_empty() || weights.total() == 0 {
        return Err("the route needs at least one destination with a weight above 0".into());
    }
    if weights.total() > u64::from(u32::MAX) {
        return Err("the weights add up to more than 4294967295 (Envoy's limit)".into());
    }
    Ok(weights)
}

/// A note when the route's weights do not add up to `hash.pick_total`: Envoy takes
/// the value modulo its own sum, so the documented ranges no longer hold.
pub fn total_note(pick: &PickConfig, weights: &RouteWeights) -> Option<String> {
    (weights.total() != pick.total).then(|| {
        format!(
            "the route's weights add up to {}, hash.pick_total is {}: Envoy takes the pick value modulo {}, so users no longer land as documented; set hash.pick_total to {}",
            weights.total(),
            pick.total,
            weights.total(),
            weights.total()
        )
    })
}

/// What `explain` adds in pick mode: text lines (`label`, text) and JSON fields.
pub struct Explained {
    pub version_line: Option<String>,
    pub lines: Vec<(&'static str, String)>,
    pub json: Value,
}

/// The pick decision of one request, described. `assignment` and `write` are
/// `decide_pick`'s.
pub fn explain(
    config: &Config,
    pick: &PickConfig,
    assignment: &Assignment,
    write: RouteWrite,
    weights: Option<&RouteWeights>,
) -> Explained {
    let mut lines = Vec::new();
    let (value, sets) = match write {
        RouteWrite::Version {
            version,
            pick: value,
        } => {
            let name = config
                .versions
                .get(version)
                .map_or("?", |v| v.name.as_str());
            let mut sets = format!("{}: {name}", config.route_header);
            match value {
                Some(v) => sets.push_str(&format!("; {}: {v}", pick.header)),
                None => sets.push_str(&format!("; removes {}", pick.header)),
            }
            (value, sets)
        }
        RouteWrite::Pick(v) => (
            Some(v),
            format!("{}: {v}; removes {}", pick.header, config.route_header),
        ),
        RouteWrite::Draw => (
            None,
            format!(
                "removes {} and {}: Envoy draws at random at the route's weights",
                pick.header, config.route_header
            ),
        ),
    };
    if let (Some(v), Some(bucket), Reason::Hash) = (value, assignment.bucket, assignment.reason) {
        lines.push((
            "pick",
            format!(
                "{v} = {t} - 1 - floor(({bucket} - 1) * {t} / {b})",
                t = pick.total,
                b = config.buckets
            ),
        ));
    } else if let Some(v) = value {
        let why = match write {
            RouteWrite::Version { version: 0, .. } | RouteWrite::Pick(_) => {
                "0 lands in the first destination's range: the baseline's, in the documented order"
            }
            _ => "pick_total - 1 lands in the last destination's range, in the documented order",
        };
        lines.push(("pick", format!("{v}: {why}")));
    }
    let mut destination_name = None;
    match weights {
        Some(weights) => {
            let lands = match (write, weights.destination(config, write)) {
                (RouteWrite::Draw, _) => {
                    let shares: Vec<String> = weights
                        .0
                        .iter()
                        .map(|(n, w)| {
                            format!("{n} {:.2}%", 100.0 * *w as f64 / weights.total() as f64)
                        })
                        .collect();
                    format!(
                        "a random draw at the route's weights: {}",
                        shares.join(", ")
                    )
                }
                (RouteWrite::Version { version, .. }, Some(i))
                    if config.versions.get(version).map(|v| v.name.as_str())
                        == Some(weights.0[i].0.as_str()) =>
                {
                    destination_name = Some(weights.0[i].0.clone());
                    format!(
                        "{} (by a header route on {}, placed before the weighted route; without one, by the pick value)",
                        weights.0[i].0, config.route_header
                    )
                }
                (_, Some(i)) => {
                    destination_name = Some(weights.0[i].0.clone());
                    let v = value.unwrap_or(0);
                    let (_, start, end) = weights.range_of(v).unwrap_or((i, 0, 0));
                    format!(
                        "{}: {v} % {} = {} is in its range {start}-{} (route weights {})",
                        weights.0[i].0,
                        weights.total(),
                        v % weights.total(),
                        end - 1,
                        weights.text()
                    )
                }
                (_, None) => "nowhere: the route's weights add up to 0".to_string(),
            };
            lines.push(("lands", lands));
            if let Some(note) = total_note(pick, weights) {
                lines.push(("note", note));
            }
        }
        None if !matches!(write, RouteWrite::Draw) => lines.push((
            "lands",
            "give --route-weights NAME=W,... (the route's destinations in order) to see where"
                .to_string(),
        )),
        None => {}
    }
    lines.push(("sets", sets));
    let version_line = match (assignment.reason, &destination_name) {
        (Reason::Hash | Reason::Random, Some(d)) => {
            Some(format!("{d} (the route's weights decide)"))
        }
        (Reason::Hash | Reason::Random, None) => Some("the route's weights decide".to_string()),
        _ => None,
    };
    Explained {
        version_line,
        lines,
        json: json!({
            "pick_header": pick.header,
            "pick_total": pick.total,
            "pick": value,
            "destination": destination_name,
        }),
    }
}

/// Counts per destination of one population.
struct Counts {
    requests: u64,
    by_destination: Vec<u64>,
}

impl Counts {
    fn outliers(&self, expected: &[f64]) -> Vec<usize> {
        let n = self.requests as f64;
        (0..self.by_destination.len())
            .filter(|&d| {
                let p = expected.get(d).copied().unwrap_or(0.0);
                let sigma = (n * p * (1.0 - p)).sqrt();
                (self.by_destination[d] as f64 - n * p).abs() > 4.0 * sigma + 1e-9
            })
            .collect()
    }
}

/// `simulate` in pick mode: N synthetic users and N anonymous requests through
/// `decide_pick`, landed on the route's destinations as Envoy would (the pick
/// value's range; a random draw without one), against the route's weights. Returns
/// the output, text or JSON.
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    config: &Config,
    pick: &PickConfig,
    routing: &Routing,
    weights: &RouteWeights,
    users: u64,
    anonymous: u64,
    seed: u64,
    json_out: bool,
) -> String {
    let mut rng = Rng::new(seed);
    let n = weights.0.len();
    let land = |write: RouteWrite, rng: &mut Rng| {
        weights.destination(config, write).or_else(|| {
            // Envoy's draw: a random value modulo the sum of the weights.
            destination_of(rng.next_u64() % weights.total(), &weights.weights())
        })
    };
    let place = config
        .hash
        .header
        .as_ref()
        .map(|h| (h.clone(), true))
        .or_else(|| config.hash.cookie.as_ref().map(|c| (c.clone(), false)));
    let mut user_counts = Counts {
        requests: 0,
        by_destination: vec![0; n],
    };
    if let Some((name, is_header)) = &place {
        for i in 0..users {
            let id = format!("user-{i}");
            let cookie = format!("{name}={id}");
            let bytes = if *is_header {
                serialize_headers(&[(name.as_bytes(), id.as_bytes())])
            } else {
                serialize_headers(&[(b"cookie", cookie.as_bytes())])
            };
            let request = KnownSource {
                headers: SerializedHeaders::new(&bytes),
                source: None,
            };
            let (_, write) = decide_pick(config, pick, routing, &request, &mut rng);
            user_counts.requests += 1;
            if let Some(d) = land(write, &mut rng) {
                user_counts.by_destination[d] += 1;
            }
        }
    }
    let empty = serialize_headers(&[]);
    let request = KnownSource {
        headers: SerializedHeaders::new(&empty),
        source: None,
    };
    let mut anonymous_counts = Counts {
        requests: 0,
        by_destination: vec![0; n],
    };
    // anonymous: cookie: each is a new visitor, issued an ID (see simulate.rs).
    let mut id_rng = Rng::new(seed ^ 0x7669_7369_746f_7273);
    for _ in 0..anonymous {
        let id = (config.anonymous == Anonymous::Cookie)
            .then(|| crate::visitors::sample_id(&mut id_rng));
        let facts = WithVisitorId {
            request,
            id: id.as_ref().map(|id| &id[..]),
        };
        let (_, write) = decide_pick(config, pick, routing, &facts, &mut rng);
        anonymous_counts.requests += 1;
        if let Some(d) = land(write, &mut rng) {
            anonymous_counts.by_destination[d] += 1;
        }
    }
    // Expected shares: the route's weights; everything on the first destination when
    // the filter writes 0 for all (a tripped guard; anonymous: baseline).
    let by_weight: Vec<f64> = weights
        .0
        .iter()
        .map(|(_, w)| *w as f64 / weights.total() as f64)
        .collect();
    let first_only = |weights: &RouteWeights| -> Vec<f64> {
        let first = destination_of(0, &weights.weights()).unwrap_or(0);
        (0..n).map(|d| if d == first { 1.0 } else { 0.0 }).collect()
    };
    let tripped = routing.guard_tripped && config.guard.is_some();
    let expected_users = if tripped {
        first_only(weights)
    } else {
        by_weight.clone()
    };
    let expected_anonymous = if tripped || config.anonymous == Anonymous::Baseline {
        first_only(weights)
    } else {
        by_weight
    };
    let user_outliers = user_counts.outliers(&expected_users);
    let anonymous_outliers = anonymous_counts.outliers(&expected_anonymous);
    let share = |c: &Counts, d: usize| {
        if c.requests == 0 {
            0.0
        } else {
            c.by_destination[d] as f64 / c.requests as f64
        }
    };
    if json_out {
        let destinations: Vec<Value> = (0..n)
            .map(|d| {
                json!({
                    "name": weights.0[d].0,
                    "weight": weights.0[d].1,
                    "users": { "count": user_counts.by_destination[d], "share": share(&user_counts, d) },
                    "anonymous": { "count": anonymous_counts.by_destination[d], "share": share(&anonymous_counts, d) },
                })
            })
            .collect();
        let out = json!({
            "pick_header": pick.header,
            "pick_total": pick.total,
            "route_weights_total": weights.total(),
            "guard_tripped": tripped,
            "users": { "requests": user_counts.requests, "within_4_sigma": user_outliers.is_empty() },
            "anonymous": { "requests": anonymous_counts.requests, "within_4_sigma": anonymous_outliers.is_empty() },
            "destinations": destinations,
            "note": total_note(pick, weights),
        });
        return format!("{out}\n");
    }
    let mut out = format!(
        "pick mode: pick values in {}, route weights {} (sum {}), {} buckets\n",
        pick.header,
        weights.text(),
        weights.total(),
        config.buckets
    );
    match &place {
        Some((name, is_header)) if users > 0 => out.push_str(&format!(
            "users:     {users} synthetic user IDs (user-0 to user-{}) in {} {name}\n",
            users - 1,
            if *is_header { "header" } else { "cookie" }
        )),
        Some(_) => out.push_str("users:     none simulated (--users 0)\n"),
        None => out.push_str("users:     none: the config has no hash.header or hash.cookie\n"),
    }
    out.push_str(&format!(
        "anonymous: {} requests without a user ID (anonymous: {})\n",
        anonymous_counts.requests,
        match config.anonymous {
            Anonymous::Random => "random: Envoy draws at the route's weights",
            Anonymous::Baseline => "baseline: pick value 0",
            Anonymous::Cookie => "cookie: each is issued a visitor ID and gets its pick value",
        }
    ));
    if tripped {
        out.push_str("guard:     tripped: every request the weights split gets pick value 0\n");
    }
    let width = weights
        .0
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max(11);
    out.push_str(&format!(
        "\n{:width$}  {:>6}  {:>16}  {:>16}\n",
        "destination", "weight", "users", "anonymous"
    ));
    for d in 0..n {
        out.push_str(&format!(
            "{:width$}  {:>6}  {:>7} {:>7.2}%  {:>7} {:>7.2}%\n",
            weights.0[d].0,
            weights.0[d].1,
            user_counts.by_destination[d],
            100.0 * share(&user_counts, d),
            anonymous_counts.by_destination[d],
            100.0 * share(&anonymous_counts, d),
        ));
    }
    out.push('\n');
    for (label, outliers) in [
        ("users", &user_outliers),
        ("anonymous", &anonymous_outliers),
    ] {
        if outliers.is_empty() {
            out.push_str(&format!(
                "{label}:{}every share is within 4 sigma of the expected split\n",
                " ".repeat(10 - label.len())
            ));
        } else {
            let names: Vec<&str> = outliers.iter().map(|&d| weights.0[d].0.as_str()).collect();
            out.push_str(&format!(
                "{label}:{}more than 4 sigma off: {}\n",
                " ".repeat(10 - label.len()),
                names.join(", ")
            ));
        }
    }
    if let Some(note) = total_note(pick, weights) {
        out.push_str(&format!("note:      {note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_weights_parse_in_order_and_refuse_nonsense() {
        let w = parse_route_weights("primary=90, canary=10").unwrap();
        assert_eq!(w.0, vec![("primary".into(), 90), ("canary".into(), 10)]);
        assert_eq!(w.total(), 100);
        assert_eq!(w.range_of(89), Some((0, 0, 90)));
        assert_eq!(w.range_of(90), Some((1, 90, 100)));
        for bad in ["", "a", "a=-1", "a=0", "=5", "a=1.5", "a=4294967296"] {
            assert!(parse_route_weights(bad).is_err(), "{bad}");
        }
    }
}

//! `simulate`: the filter's `decide` over many synthetic requests, counted by
//! version and reason, against the shares the config promises.

use crate::args::Simulate;
use crate::rollouts::match_text;
use crate::time::format_rfc3339;
use crate::validate::percent;
use crate::{load, print, Failure};
use canary_router::config::{Anonymous, Config, PluginConfig, Rollout};
use canary_router::decide::{decide, Reason, Rng, Routing};
use canary_router::request::KnownSource;
use canary_router::request::{serialize_headers, SerializedHeaders};
use canary_router::visitor::WithVisitorId;
use serde_json::{json, Map, Value};

/// Decisions of one population, by version and reason.
struct Tally {
    requests: u64,
    /// `counts[version][reason index]`.
    counts: Vec<[u64; Reason::ALL.len()]>,
}

impl Tally {
    fn new(versions: usize) -> Self {
        Tally {
            requests: 0,
            counts: vec![[0; Reason::ALL.len()]; versions],
        }
    }

    fn version_total(&self, version: usize) -> u64 {
        self.counts.get(version).map_or(0, |c| c.iter().sum())
    }

    /// The reasons that occurred anywhere in this population.
    fn reasons(&self) -> Vec<Reason> {
        Reason::ALL
            .into_iter()
            .filter(|r| self.counts.iter().any(|c| c[r.index()] > 0))
            .collect()
    }

    /// Versions whose count is more than 4 standard deviations (binomial) from the
    /// expected share; a share of 0 or 100% must be exact.
    fn outliers(&self, expected_bp: &[u32]) -> Vec<usize> {
        let n = self.requests as f64;
        (0..self.counts.len())
            .filter(|&v| {
                let p = f64::from(expected_bp.get(v).copied().unwrap_or(0)) / 10_000.0;
                let sigma = (n * p * (1.0 - p)).sqrt();
                (self.version_total(v) as f64 - n * p).abs() > 4.0 * sigma + 1e-9
            })
            .collect()
    }
}

/// Where a synthetic user ID goes: the hash header, else the hash cookie.
enum IdPlace {
    Header(String),
    Cookie(String),
}

pub fn run(options: &Simulate) -> Result<(), Failure> {
    let loaded = load(&options.common, "simulate")?;
    let rollout = crate::rollouts::chosen(&loaded.plugin, options.rollout.as_deref(), "simulate")?;
    let config = &rollout.config;
    let routing = Routing {
        split: config.split_at(loaded.now_ms),
        guard_tripped: options.guard_tripped,
    };
    let usage = |message: String| {
        Failure::Usage(crate::args::UsageError {
            message,
            command: Some("simulate"),
        })
    };
    if let Some(pick) = &config.hash.pick {
        if options.returns.is_some() || options.return_at.is_some() {
            return Err(usage(format!(
                "--returns and --return-at: the config is in pick mode (hash.pick_header {}): a returning visitor's pick value is its first's, and the route's weights decide where it lands",
                pick.header
            )));
        }
        // Pick mode: the route's weights decide, so the split is over its destinations.
        let Some(weights) = &options.route_weights else {
            return Err(Failure::Usage(crate::args::UsageError {
                message: format!(
                    "the config is in pick mode (hash.pick_header {}): the route's weights decide; give them with --route-weights NAME=W,... in the route's order",
                    pick.header
                ),
                command: Some("simulate"),
            }));
        };
        let out = crate::pick::simulate(
            config,
            pick,
            &routing,
            weights,
            options.users,
            options.anonymous.unwrap_or(options.users),
            options.seed.unwrap_or(1),
            options.common.json,
        );
        print(&with_rollout(
            out,
            &loaded.plugin,
            rollout,
            options.common.json,
        ));
        return Ok(());
    }
    let mut rng = Rng::new(options.seed.unwrap_or(1));
    let n_versions = config.versions.len();

    let place = match (&config.hash.header, &config.hash.cookie) {
        (Some(h), _) => Some(IdPlace::Header(h.clone())),
        (None, Some(c)) => Some(IdPlace::Cookie(c.clone())),
        (None, None) => None,
    };
    let mut users = Tally::new(n_versions);
    if let Some(place) = &place {
        for i in 0..options.users {
            let id = format!("user-{i}");
            let bytes = match place {
                IdPlace::Header(h) => serialize_headers(&[(h.as_bytes(), id.as_bytes())]),
                IdPlace::Cookie(c) => {
                    let cookie = format!("{c}={id}");
                    serialize_headers(&[(b"cookie", cookie.as_bytes())])
                }
            };
            let request = KnownSource {
                headers: SerializedHeaders::new(&bytes),
                source: None,
            };
            let a = decide(config, &routing, &request, &mut rng);
            users.requests += 1;
            users.counts[a.version][a.reason.index()] += 1;
        }
    }
    let mut anonymous = Tally::new(n_versions);
    let empty = serialize_headers(&[]);
    let request = KnownSource {
        headers: SerializedHeaders::new(&empty),
        source: None,
    };
    // Without a user ID source every request is anonymous: N of them. Each is a new
    // visitor; anonymous: cookie issues it an ID, from a PRNG of its own so that the
    // draws of the other policies stay as they were.
    let anonymous_n = options.anonymous.unwrap_or(options.users);
    let cookie_mode = config.anonymous == Anonymous::Cookie;
    let mut id_rng = Rng::new(options.seed.unwrap_or(1) ^ 0x7669_7369_746f_7273);
    let returns = options.returns.unwrap_or(u64::from(cookie_mode));
    let return_ms = match &options.return_at {
        Some(text) => crate::time::parse_at(text, loaded.now_ms)
            .map_err(|m| usage(m.replacen("--at", "--return-at", 1)))?,
        None => loaded.now_ms,
    };
    let return_routing = Routing {
        split: config.split_at(return_ms),
        guard_tripped: options.guard_tripped,
    };
    let mut returning = Tally::new(n_versions);
    let (mut moved, mut left) = (0u64, 0u64);
    let cookie_name = config.hash.cookie.as_deref().unwrap_or_default();
    for _ in 0..anonymous_n {
        let id = cookie_mode.then(|| crate::visitors::sample_id(&mut id_rng));
        let facts = WithVisitorId {
            request,
            id: id.as_ref().map(|id| &id[..]),
        };
        let first = decide(config, &routing, &facts, &mut rng);
        anonymous.requests += 1;
        anonymous.counts[first.version][first.reason.index()] += 1;
        if returns == 0 {
            continue;
        }
        // Back with the cookie it was issued, or as anonymous as before.
        let cookie = id.map(|id: [u8; canary_router::visitor::VISITOR_ID_LEN]| {
            let value = format!("{cookie_name}={}", String::from_utf8_lossy(&id));
            serialize_headers(&[(b"cookie", value.as_bytes())])
        });
        let later = KnownSource {
            headers: SerializedHeaders::new(cookie.as_deref().unwrap_or(&empty)),
            source: None,
        };
        let (mut saw_another, mut left_it) = (false, false);
        for _ in 0..returns {
            let a = decide(config, &return_routing, &later, &mut rng);
            returning.requests += 1;
            returning.counts[a.version][a.reason.index()] += 1;
            saw_another |= a.version != first.version;
            left_it |= first.version != 0 && a.version != first.version;
        }
        moved += u64::from(saw_another);
        left += u64::from(left_it);
    }

    // What each population should show: the weights, with a tripped guard's share
    // on the baseline; anonymous: baseline sends everything to the baseline.
    let weights = config.weights_at(loaded.now_ms);
    let mut expected = weights.clone();
    if let Some(guard) = config.guard.as_ref().filter(|_| options.guard_tripped) {
        let moved = expected.get(guard.version).copied().unwrap_or(0);
        if let Some(w) = expected.get_mut(guard.version) {
            *w = 0;
        }
        if let Some(w) = expected.first_mut() {
            *w += moved;
        }
    }
    let expected_anonymous: Vec<u32> = match config.anonymous {
        Anonymous::Random | Anonymous::Cookie => expected.clone(),
        Anonymous::Baseline => (0..n_versions)
            .map(|i| if i == 0 { 10_000 } else { 0 })
            .collect(),
    };
    let user_outliers = users.outliers(&expected);
    let anonymous_outliers = anonymous.outliers(&expected_anonymous);
    let id_source = place.as_ref().map(|p| match p {
        IdPlace::Header(h) => format!("header {h}"),
        IdPlace::Cookie(c) => format!("cookie {c}"),
    });
    let policy = match config.anonymous {
        Anonymous::Random => "random",
        Anonymous::Baseline => "baseline",
        Anonymous::Cookie => "cookie",
    };
    let returning_text = (returns > 0).then(|| {
        let how = if cookie_mode {
            "with its cookie"
        } else {
            "without a cookie, anonymous again"
        };
        let when = if options.return_at.is_some() {
            format!(" at {}", format_rfc3339(return_ms))
        } else {
            String::new()
        };
        format!(
            "returning: each visitor comes back {returns} time{} {how}{when}: {} requests; {moved} of {} visitors saw another version than on their first visit, {left} left the version (not the baseline) they first saw\n",
            if returns == 1 { "" } else { "s" },
            returning.requests,
            anonymous.requests
        )
    });

    if options.common.json {
        let population = |t: &Tally, v: usize| {
            let total = t.version_total(v);
            let mut reasons = Map::new();
            for r in Reason::ALL {
                let c = t.counts[v][r.index()];
                if c > 0 {
                    reasons.insert(r.as_str().to_string(), c.into());
                }
            }
            json!({
                "count": total,
                "share": if t.requests == 0 { 0.0 } else { total as f64 / t.requests as f64 },
                "reasons": reasons,
            })
        };
        let versions: Vec<Value> = (0..n_versions)
            .map(|v| {
                json!({
                    "name": config.versions[v].name,
                    "weight": f64::from(weights[v]) / 100.0,
                    "users": population(&users, v),
                    "anonymous": population(&anonymous, v),
                    "returning": population(&returning, v),
                })
            })
            .collect();
        let out = json!({
            "at": format_rfc3339(loaded.now_ms),
            "buckets": config.buckets,
            "guard_tripped": options.guard_tripped && config.guard.is_some(),
            "users": {
                "requests": users.requests,
                "id_source": id_source,
                "within_4_sigma": user_outliers.is_empty(),
            },
            "anonymous": {
                "requests": anonymous.requests,
                "policy": policy,
                "within_4_sigma": anonymous_outliers.is_empty(),
                "visitor_ids_issued": if cookie_mode { anonymous.requests } else { 0 },
            },
            "returning": {
                "returns_per_visitor": returns,
                "at": format_rfc3339(return_ms),
                "requests": returning.requests,
                "visitors_who_saw_another_version": moved,
                "visitors_who_left_their_version": left,
            },
            "versions": versions,
        });
        print(&with_rollout(
            format!("{out}\n"),
            &loaded.plugin,
            rollout,
            true,
        ));
        return Ok(());
    }

    let mut out = format!(
        "at {}, {} buckets\n",
        format_rfc3339(loaded.now_ms),
        config.buckets
    );
    match (&id_source, users.requests) {
        (Some(source), n) if n > 0 => out.push_str(&format!(
            "users:     {n} synthetic user IDs (user-0 to user-{}) in {source}\n",
            n - 1
        )),
        (Some(_), _) => out.push_str("users:     none simulated (--users 0)\n"),
        (None, _) => out.push_str(
            "users:     none: the config has no hash.header or hash.cookie, so every request is anonymous\n",
        ),
    }
    if cookie_mode {
        out.push_str(&format!(
            "anonymous: {} new visitors without a user ID (anonymous: cookie): each is issued a visitor ID in cookie {} and decided on it\n",
            anonymous.requests,
            crate::visitors::cookie_text(config)
        ));
    } else {
        out.push_str(&format!(
            "anonymous: {} requests without a user ID (anonymous: {policy})\n",
            anonymous.requests
        ));
    }
    if let Some(text) = &returning_text {
        out.push_str(text);
    }
    if options.guard_tripped {
        match &config.guard {
            Some(g) => out.push_str(&format!(
                "guard:     tripped: {}'s traffic goes to {}\n",
                config.versions[g.version].name, config.versions[0].name
            )),
            None => out.push_str("guard:     --guard-tripped, but the config has no guard\n"),
        }
    }
    out.push('\n');

    let mut columns: Vec<(String, &Tally)> = Vec::new();
    let anonymous_label = if cookie_mode {
        "new visitors"
    } else {
        "anonymous"
    };
    for (label, tally) in [
        ("users", &users),
        (anonymous_label, &anonymous),
        ("returning", &returning),
    ] {
        if tally.requests == 0 {
            continue;
        }
        let reasons = tally.reasons();
        let header = match reasons.as_slice() {
            [one] => format!("{label} ({})", one.as_str()),
            _ => label.to_string(),
        };
        columns.push((header, tally));
    }
    let mut rows: Vec<Vec<String>> = vec![{
        let mut h = vec!["version".to_string(), "weight".to_string()];
        h.extend(columns.iter().map(|(name, _)| name.clone()));
        h
    }];
    for (v, version) in config.versions.iter().enumerate() {
        let mut row = vec![version.name.clone(), percent(weights[v])];
        for (_, tally) in &columns {
            let total = tally.version_total(v);
            let share = 100.0 * total as f64 / tally.requests as f64;
            let width = tally.requests.to_string().len();
            let mut cell = format!("{total:>width$}  {share:>6.2}%");
            if tally.reasons().len() > 1 {
                let parts: Vec<String> = Reason::ALL
                    .into_iter()
                    .filter(|r| tally.counts[v][r.index()] > 0)
                    .map(|r| format!("{} {}", r.as_str(), tally.counts[v][r.index()]))
                    .collect();
                if !parts.is_empty() {
                    cell.push_str(&format!(" ({})", parts.join(", ")));
                }
            }
            row.push(cell);
        }
        rows.push(row);
    }
    out.push_str(&table(&rows));
    out.push('\n');

    let listed = listed_users(config);
    if !listed.is_empty() {
        out.push_str(&format!(
            "listed:    {listed}: always that version (reason user_list), not among the synthetic IDs\n"
        ));
    }
    for (label, tally, outliers, expected) in [
        ("users", &users, &user_outliers, &expected),
        (
            anonymous_label,
            &anonymous,
            &anonymous_outliers,
            &expected_anonymous,
        ),
    ] {
        if tally.requests == 0 {
            continue;
        }
        let expected_text = (0..n_versions)
            .map(|v| format!("{} {}", config.versions[v].name, percent(expected[v])))
            .collect::<Vec<_>>()
            .join(", ");
        if outliers.is_empty() {
            out.push_str(&format!(
                "{label:<10} every share is within 4 sigma of the expected {expected_text}\n",
                label = format!("{label}:")
            ));
        } else {
            let names: Vec<&str> = outliers
                .iter()
                .map(|&v| config.versions[v].name.as_str())
                .collect();
            out.push_str(&format!(
                "{label:<10} {} more than 4 sigma from the expected {expected_text}\n",
                names.join(", "),
                label = format!("{label}:")
            ));
        }
    }
    print(&with_rollout(out, &loaded.plugin, rollout, false));
    Ok(())
}

/// For a config with rollouts, says which one was simulated: a first line, or a
/// `rollout` field in the JSON.
fn with_rollout(out: String, plugin: &PluginConfig, rollout: &Rollout, json: bool) -> String {
    let Some(name) = rollout.name.as_deref() else {
        return out;
    };
    let matched = plugin
        .rollout_index(name)
        .and_then(|i| plugin.router.matches().get(i));
    if json {
        match serde_json::from_str::<Value>(&out) {
            Ok(mut value) => {
                value["rollout"] = json!(name);
                format!("{value}\n")
            }
            Err(_) => out,
        }
    } else {
        let what = matched.map_or(String::new(), |m| format!(" ({})", match_text(m)));
        format!("rollout:   {name}{what}\n{out}")
    }
}

/// `canary 2, stable 1`: how many user IDs the config lists per version.
fn listed_users(config: &Config) -> String {
    let mut per_version = vec![0usize; config.versions.len()];
    for &v in config.users.values() {
        if let Some(n) = per_version.get_mut(v) {
            *n += 1;
        }
    }
    per_version
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(v, n)| format!("{} {n}", config.versions[v].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Left-aligned columns, two spaces apart, no trailing spaces.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

//! `explain`: one request through the filter's `decide`, and why it went where it
//! went. The decision is `decide`'s; the text around it only describes the inputs.

use crate::args::Explain;
use crate::rollouts::{match_json, match_text};
use crate::time::format_rfc3339;
use crate::validate::percent;
use crate::{load, print, Failure};
use canary_router::config::{Config, PluginConfig, Split};
use canary_router::decide::{decide, user_id, Assignment, Reason, Rng, Routing};
use canary_router::grpc::is_grpc_content_type;
use canary_router::pick::decide_pick;
use canary_router::request::{serialize_headers, KnownSource, RequestFacts, SerializedHeaders};
use canary_router::trust::token_matches;
use canary_router::visitor::{cookie_with_id, set_cookie_value, WithVisitorId};
use serde_json::json;

/// The header map: `--host` and `--path` as `:authority` and `:path` (pseudo-headers
/// come first, as Envoy orders them), the headers in order, then one `cookie` header
/// with the cookies.
pub fn header_map(
    host: Option<&str>,
    path: Option<&str>,
    headers: &[(String, String)],
    cookies: &[(String, String)],
) -> Vec<u8> {
    let cookie_header = cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    if let Some(host) = host {
        pairs.push((b":authority", host.as_bytes()));
    }
    if let Some(path) = path {
        pairs.push((b":path", path.as_bytes()));
    }
    pairs.extend(headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    if !cookies.is_empty() {
        pairs.push((b"cookie", cookie_header.as_bytes()));
    }
    serialize_headers(&pairs)
}

pub fn run(options: &Explain) -> Result<(), Failure> {
    let loaded = load(&options.common, "explain")?;
    let plugin = &loaded.plugin;
    let bytes = header_map(
        options.host.as_deref(),
        options.path.as_deref(),
        &options.headers,
        &options.cookies,
    );
    let request = KnownSource {
        headers: SerializedHeaders::new(&bytes),
        source: options.source,
    };
    // The filter's own router: the first rollout whose match holds.
    let Some(index) = plugin.router.route(&request) else {
        return untouched(options, plugin, &request);
    };
    let rollout = &plugin.rollouts[index];
    let config = &rollout.config;
    // Which rollout, for a config with rollouts: (name, its match).
    let named = rollout
        .name
        .as_deref()
        .map(|name| (name, &plugin.router.matches()[index]));
    let routing = Routing {
        split: config.split_at(loaded.now_ms),
        guard_tripped: options.guard_tripped,
    };
    let rng = Rng::new(options.seed.unwrap_or(1));
    // anonymous: "cookie": the ID the filter would issue, one the seed stands in for.
    let issued = crate::visitors::would_issue(config, &request)
        .then(|| crate::visitors::sample_id(&mut Rng::new(options.seed.unwrap_or(1))));
    let facts = WithVisitorId {
        request,
        id: issued.as_ref().map(|id| &id[..]),
    };
    let assignment = decide(config, &routing, &facts, &mut rng.clone());
    // Pick mode: the filter's pick-mode decision, and what it writes.
    let picked = config.hash.pick.as_ref().map(|pick| {
        let (a, write) = decide_pick(config, pick, &routing, &facts, &mut rng.clone());
        (pick, a, write)
    });
    let mut assignment = picked.as_ref().map_or(assignment, |(_, a, _)| *a);
    if picked.is_some() && assignment.reason == Reason::Random {
        // The filter's own draw does not route in pick mode: Envoy draws.
        assignment.bucket = None;
    }
    // What it would have been with an armed guard: same draw, to say what the guard changed.
    let unguarded = decide(
        config,
        &Routing {
            guard_tripped: false,
            ..routing.clone()
        },
        &facts,
        &mut rng.clone(),
    );
    let issued = issued.as_ref().map(|id| &id[..]);
    let version = config
        .versions
        .get(assignment.version)
        .map_or("?", |v| v.name.as_str());
    let mut why = why(
        config,
        &routing.split,
        &request,
        issued,
        &assignment,
        &unguarded,
    );
    if picked.is_some() {
        why = pick_why(why, &assignment, &unguarded);
    }
    let explained = picked.as_ref().map(|(pick, a, write)| {
        crate::pick::explain(config, pick, a, *write, options.route_weights.as_ref())
    });
    let mut notes = override_notes(config, &request, &assignment);
    if options.route_weights.is_some() && picked.is_none() {
        notes.push("--route-weights: the config is not in pick mode (no hash.pick_header): its own weights decide".to_string());
    }
    notes.extend(grpc_note(config, &request, version));
    // What the filter writes for an issued ID: the request's Cookie, the response's Set-Cookie.
    let cookies = issued.map(|id| {
        let name = config.hash.cookie.as_deref().unwrap_or("?");
        (
            String::from_utf8_lossy(&cookie_with_id(&request.headers, name, id)).into_owned(),
            String::from_utf8_lossy(&set_cookie_value(
                name,
                id,
                &config.hash.set_cookie_attributes,
            ))
            .into_owned(),
        )
    });
    if options.guard_tripped && config.guard.is_none() {
        notes.push("--guard-tripped: the config has no guard, so nothing changes".to_string());
    }
    let shows_time = config.is_scheduled() || loaded.at_given;
    if options.common.json {
        let version = match &explained {
            Some(e) if e.version_line.is_some() => e.json["destination"].clone(),
            _ => json!(version),
        };
        let mut out = json!({
            "version": version,
            "reason": assignment.reason.as_str(),
            "bucket": assignment.bucket,
            "buckets": config.buckets,
            "route_header": config.route_header,
            "at": format_rfc3339(loaded.now_ms),
            "why": why,
            "notes": notes,
            "visitor_id": issued.map(|id| String::from_utf8_lossy(id).into_owned()),
            "cookie": cookies.as_ref().map(|(cookie, _)| cookie),
            "set_cookie": cookies.as_ref().map(|(_, set)| set),
        });
        if let (Some(e), Some(fields)) = (&explained, out.as_object_mut()) {
            if let Some(extra) = e.json.as_object() {
                fields.extend(extra.clone());
            }
        }
        if let Some((name, matched)) = named {
            out["rollout"] = json!(name);
            out["match"] = match_json(matched);
        }
        print(&format!("{out}\n"));
        return Ok(());
    }
    let shown = explained
        .as_ref()
        .and_then(|e| e.version_line.clone())
        .unwrap_or_else(|| version.to_string());
    let mut out = match named {
        Some((name, matched)) => format!(
            "rollout: {name} (the first whose match holds: {})\n",
            match_text(matched)
        ),
        None => String::new(),
    };
    out.push_str(&format!(
        "version: {shown}\nreason:  {}\n",
        assignment.reason.as_str()
    ));
    if let Some(bucket) = assignment.bucket {
        out.push_str(&format!("bucket:  {bucket} of {}\n", config.buckets));
    }
    out.push_str(&format!("why:     {why}\n"));
    for note in &notes {
        out.push_str(&format!("note:    {note}\n"));
    }
    if shows_time {
        out.push_str(&format!("at:      {}\n", format_rfc3339(loaded.now_ms)));
    }
    match &explained {
        Some(e) => {
            for (label, text) in &e.lines {
                out.push_str(&format!("{label}:{}{text}\n", " ".repeat(8 - label.len())));
            }
        }
        None => out.push_str(&format!("sets:    {}: {version}\n", config.route_header)),
    }
    if let Some((cookie, set_cookie)) = &cookies {
        out.push_str(&format!(
            "cookie:  {cookie} (the request's Cookie, as the upstream sees it)\n"
        ));
        out.push_str(&format!("answers: Set-Cookie: {set_cookie}\n"));
    }
    print(&out);
    Ok(())
}

/// Pick mode: the bucket explains the pick value, not a version (the route's
/// weights decide); a tripped guard sends everything the weights split to the baseline.
fn pick_why(why: String, assignment: &Assignment, unguarded: &Assignment) -> String {
    match (assignment.reason, unguarded.reason) {
        (Reason::Hash, _) => why
            .split_once("; buckets:")
            .map_or(why.clone(), |(head, _)| head.to_string()),
        (Reason::Guard, Reason::Hash | Reason::Random) => {
            "the guard has tripped: every request the route's weights would split gets pick value 0, the first (baseline's) range".to_string()
        }
        (Reason::Random, _) => {
            "no user ID: no pick value, so Envoy draws at random at the route's weights".to_string()
        }
        _ => why,
    }
}

/// A request no rollout matches (for a single service: another host than its
/// `hosts`): the filter leaves it alone.
fn untouched(
    options: &Explain,
    plugin: &PluginConfig,
    request: &KnownSource,
) -> Result<(), Failure> {
    let authority = request.header(":authority");
    let why = match (plugin.has_rollouts(), authority) {
        (false, Some(a)) => format!(
            ":authority {} matches no entry of hosts: the filter passes the request on untouched (no header written or removed, not counted, not seen by the guard)",
            quoted(a)
        ),
        (false, None) => "the request has no :authority (give --host HOST) and the config lists hosts: the filter passes it on untouched".to_string(),
        (true, _) => {
            let what = |name: &str| {
                request
                    .header(name)
                    .map_or(format!("no {name}"), |v| format!("{name} {}", quoted(v)))
            };
            format!(
                "{}, {}: no rollout's match holds, so the filter passes the request on untouched (no header written or removed, not counted, not seen by any guard)",
                what(":authority"),
                what(":path")
            )
        }
    };
    if options.common.json {
        let mut out = json!({
            "version": null,
            "reason": null,
            "untouched": true,
            "why": why,
        });
        if plugin.has_rollouts() {
            out["rollout"] = json!(null);
        } else {
            out["route_header"] = json!(plugin.rollouts[0].config.route_header);
        }
        print(&format!("{out}\n"));
    } else {
        print(&format!("version: none (untouched)\nwhy:     {why}\n"));
    }
    Ok(())
}

/// A gRPC call (by its content-type, as the filter tells): where its outcome is
/// counted and which codes the guard takes as failures.
fn grpc_note(config: &Config, request: &KnownSource, version: &str) -> Option<String> {
    let content_type = request.header("content-type")?;
    if !is_grpc_content_type(content_type) {
        return None;
    }
    let counted = if config.metrics.responses {
        format!(
            "counted in {}_grpc_responses_total{{version=\"{version}\",grpc_code}}",
            config.metrics_prefix
        )
    } else {
        "not counted (metrics.responses is off)".to_string()
    };
    let guard = match &config.guard {
        Some(g)
            if config
                .versions
                .get(g.version)
                .is_some_and(|v| v.name == version) =>
        {
            format!(
                "; the guard counts it failed on {}",
                g.grpc_status.names().join(", ")
            )
        }
        _ => String::new(),
    };
    Some(format!(
        "a gRPC call (content-type {}): its outcome is its grpc-status code, {counted}{guard}",
        quoted(content_type)
    ))
}

fn name_of(config: &Config, index: usize) -> &str {
    config.versions.get(index).map_or("?", |v| v.name.as_str())
}

fn quoted(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// `canary 1-1000, beta 3001-5000; stable the rest`.
fn ranges_text(config: &Config, split: &Split) -> String {
    let ranges: Vec<String> = split
        .ranges
        .iter()
        .enumerate()
        .map(|(i, &(start, end))| {
            let name = name_of(config, i + 1);
            if start == end {
                format!("{name} none")
            } else {
                format!("{name} {}-{end}", start + 1)
            }
        })
        .collect();
    let baseline = name_of(config, 0);
    if ranges.is_empty() {
        format!("{baseline} all")
    } else {
        format!("{}; {baseline} the rest", ranges.join(", "))
    }
}

/// Where the user ID came from, as `decide::user_id` reads it: the header, else the cookie.
fn user_id_source(config: &Config, request: &KnownSource) -> String {
    let from_header = config
        .hash
        .header
        .as_deref()
        .filter(|h| request.header(h).is_some_and(|v| !v.is_empty()));
    match (from_header, &config.hash.cookie) {
        (Some(h), _) => format!("header {h}"),
        (None, Some(c)) => format!("cookie {c}"),
        (None, None) => "nowhere".to_string(),
    }
}

fn no_user_id(config: &Config) -> String {
    let mut places = Vec::new();
    if let Some(h) = &config.hash.header {
        places.push(format!("header {h}"));
    }
    if let Some(c) = &config.hash.cookie {
        places.push(format!("cookie {c}"));
    }
    if places.is_empty() {
        "no user ID (the config has no hash.header or hash.cookie)".to_string()
    } else {
        format!("no user ID (no non-empty {})", places.join(" or "))
    }
}

fn why(
    config: &Config,
    split: &Split,
    request: &KnownSource,
    issued: Option<&[u8]>,
    assignment: &Assignment,
    unguarded: &Assignment,
) -> String {
    let version = name_of(config, assignment.version);
    // The ID decided on, and how it is named: from the request, or issued now.
    let (id, named) = match (user_id(config, request), issued) {
        (Some(id), _) => (
            id,
            format!("user ID {} (from {})", quoted(id), user_id_source(config, request)),
        ),
        (None, Some(id)) => (
            id,
            format!(
                "{}; anonymous: cookie issues the new visitor ID {} (it stands for the 128 random bits the filter draws; --seed changes it) and decides the request on it, as its later requests with cookie {} will be",
                no_user_id(config),
                quoted(id),
                config.hash.cookie.as_deref().unwrap_or("?")
            ),
        ),
        (None, None) => (&b""[..], String::new()),
    };
    let issued_now = issued.is_some() && user_id(config, request).is_none();
    match assignment.reason {
        Reason::Override => {
            let header = config.override_.header.as_deref().and_then(|h| {
                request
                    .header(h)
                    .filter(|v| config.version_index(v).is_some())
                    .map(|_| format!("the override header {h}"))
            });
            let by = header.unwrap_or_else(|| {
                format!(
                    "the override cookie {}",
                    config.override_.cookie.as_deref().unwrap_or("?")
                )
            });
            if issued_now {
                format!("{by} names {version}; {named}, and it goes by that ID whenever it names no version")
            } else {
                format!("{by} names {version}")
            }
        }
        Reason::UserList if issued_now => {
            format!("{named}: the ID is listed under users.{version}")
        }
        Reason::UserList => format!("{named} is listed under users.{version}"),
        Reason::Hash => {
            let mut key = config.hash.key_prefix.clone();
            key.extend_from_slice(id);
            let mut text = format!(
                "{named}: murmur3({}) % {} + 1 = bucket {}; buckets: {}",
                quoted(&key),
                config.buckets,
                assignment.bucket.unwrap_or(0),
                ranges_text(config, split)
            );
            if issued_now {
                text.push_str(&format!(
                    ". New visitors land at the weights: {}",
                    shares_text(config, split)
                ));
            }
            text
        }
        Reason::Random => {
            let policy = match config.anonymous {
                canary_router::config::Anonymous::Cookie => {
                    "a gRPC call is issued no visitor ID (its client keeps no cookie), so it is drawn as with anonymous: random, which draws a bucket for each request"
                }
                _ => "anonymous: random draws a bucket for each request",
            };
            format!(
                "{}; {policy}, this draw {} ({}). Over many requests: {}",
                no_user_id(config),
                assignment.bucket.unwrap_or(0),
                ranges_text(config, split),
                shares_text(config, split)
            )
        }
        Reason::Baseline => format!(
            "{}; anonymous: baseline sends it to the first version",
            no_user_id(config)
        ),
        Reason::Guard => {
            let before = why(config, split, request, issued, unguarded, unguarded);
            format!(
                "the guard on {} has tripped (--guard-tripped), so the baseline takes its traffic; with an armed guard: {} ({}: {before})",
                name_of(config, unguarded.version),
                name_of(config, unguarded.version),
                unguarded.reason.as_str()
            )
        }
    }
}

/// Overrides the request carries that did not count, and why not.
fn override_notes(config: &Config, request: &KnownSource, assignment: &Assignment) -> Vec<String> {
    let mut notes = Vec::new();
    let carried = [
        (
            "header",
            config.override_.header.as_deref(),
            config
                .override_
                .header
                .as_deref()
                .and_then(|h| request.header(h)),
        ),
        (
            "cookie",
            config.override_.cookie.as_deref(),
            config
                .override_
                .cookie
                .as_deref()
                .and_then(|c| request.cookie(c)),
        ),
    ];
    let mut names_a_version = false;
    for (kind, name, value) in carried {
        let (Some(name), Some(value)) = (name, value) else {
            continue;
        };
        if config.version_index(value).is_none() {
            notes.push(format!(
                "the override {kind} {name} is {}, which names no version: ignored",
                quoted(value)
            ));
        } else {
            names_a_version = true;
        }
    }
    if names_a_version && assignment.reason != Reason::Override {
        if let Some(token) = &config.override_.token {
            let presented = request.header(&token.header);
            if !token_matches(presented.unwrap_or_default(), &token.values) {
                notes.push(match presented {
                    None => format!(
                        "the override is ignored: override.token is set and the request has no {} header",
                        token.header
                    ),
                    Some(_) => format!(
                        "the override is ignored: the {} header matches none of override.token.values",
                        token.header
                    ),
                });
            }
        }
        let sources = &config.override_.trusted_sources;
        if !sources.is_empty() {
            match request.source {
                None => notes.push(
                    "the override is ignored: override.trusted_sources is set and the client address is unknown (give --source IP)"
                        .to_string(),
                ),
                Some(ip) if !sources.iter().any(|range| range.contains(ip)) => notes.push(
                    format!("the override is ignored: client {ip} is not in override.trusted_sources"),
                ),
                Some(_) => {}
            }
        }
    }
    notes
}

/// Each version's share at a split, for the text: `stable 90%, canary 10%`.
fn shares_text(config: &Config, split: &Split) -> String {
    let buckets = split.buckets.max(1);
    let mut owned: Vec<u32> = split.ranges.iter().map(|&(s, e)| e - s).collect();
    let others: u32 = owned.iter().sum();
    owned.insert(0, buckets.saturating_sub(others));
    owned
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let bp = (u64::from(n) * 10_000 / u64::from(buckets)) as u32;
            format!("{} {}", name_of(config, i), percent(bp))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

//! Which rollout a request belongs to: the first rollout, in config order, whose
//! `match` holds. Pure; the filter passes the header map it already read, so
//! routing costs no host call, whatever the number of rollouts.
//!
//! Built once per config ([`Router::new`]); per request ([`Router::route`]) it
//! does no allocation:
//! - a config whose first rollout matches every request (today's single-service
//!   config without `hosts`) decides at once, without reading a header;
//! - one rollout with conditions (a single-service config with `hosts`) is checked
//!   directly, as `hosts` always was;
//! - otherwise, when some rollout lists hosts, one hash lookup on the request's
//!   host finds the rollouts that can match it, in config order, with the
//!   wildcards (`*.example.com`) and the rollouts without `hosts` merged in when
//!   the config loads; only their path and header conditions are then checked.
//!   A host that no exact name matches is looked up once per dot, for the
//!   wildcards (`a.b.example.com`: `.b.example.com`, then `.example.com`, `.com`).
//!
//! Host matching is [`crate::hosts`]' (port and trailing dot dropped, case
//! ignored, `*.example.com` matches every subdomain at any depth but not
//! `example.com`). A path prefix matches `:path` as Envoy passes it on: case
//! matters, and the query string is part of it. A header condition reads the
//! header's first value, as every other header the filter reads; values compare
//! byte for byte, case included.

use crate::hosts::{host_of, Hosts};
use crate::request::RequestFacts;

/// One header condition of a rollout's `match.headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    /// Lower case, as Envoy hands header names over.
    pub name: String,
    pub test: HeaderTest,
}

/// What a header condition asks of the header's first value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    /// `present: true`: the header is there (any value, empty too);
    /// `present: false`: it is not.
    Present(bool),
}

impl HeaderTest {
    /// True if every header value (or absence) that meets `self` meets `other`.
    #[cold]
    #[inline(never)]
    fn implies(&self, other: &HeaderTest) -> bool {
        use HeaderTest::{Exact, Prefix, Present, Suffix};
        match (self, other) {
            (Present(false), Present(false)) => true,
            (Present(false), _) | (_, Present(false)) => false,
            (_, Present(true)) => true,
            (Exact(v), Exact(w)) => v == w,
            (Exact(v) | Prefix(v), Prefix(p)) => v.starts_with(p),
            (Exact(v) | Suffix(v), Suffix(s)) => v.ends_with(s),
            _ => false,
        }
    }
}

impl HeaderCondition {
    /// True if a request whose header has this first value (absent: `None`) meets it.
    #[inline]
    pub fn holds(&self, value: Option<&[u8]>) -> bool {
        match (&self.test, value) {
            (HeaderTest::Present(wanted), value) => value.is_some() == *wanted,
            (_, None) => false,
            (HeaderTest::Exact(v), Some(value)) => value == &v[..],
            (HeaderTest::Prefix(p), Some(value)) => value.starts_with(p),
            (HeaderTest::Suffix(s), Some(value)) => value.ends_with(s),
        }
    }
}

/// A rollout's `match`: every part given must hold. Empty: every request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    /// `None`: any host (or none).
    pub hosts: Option<Hosts>,
    /// Empty: any path; else `:path` starts with one of them.
    pub path_prefixes: Vec<Box<[u8]>>,
    /// Empty: no condition; else all hold.
    pub headers: Vec<HeaderCondition>,
}

impl Match {
    /// True if it matches every request.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.hosts.is_none() && !self.has_conditions()
    }

    /// True if it asks anything of the path or the headers.
    #[inline]
    pub fn has_conditions(&self) -> bool {
        !self.path_prefixes.is_empty() || !self.headers.is_empty()
    }

    /// True if the request matches, hosts included.
    #[inline]
    pub fn matches(&self, request: &impl RequestFacts) -> bool {
        if let Some(hosts) = &self.hosts {
            if !hosts.admits(request.header(":authority")) {
                return false;
            }
        }
        self.conditions_hold(request, &mut None)
    }

    /// True if every request that `other` matches, `self` matches too: placed
    /// before `other`, `self` leaves it nothing. Conservative: false where unsure
    /// (conditions that contradict each other, a path prefix of `/` that every
    /// ordinary path starts with, are not reasoned about).
    #[cold]
    #[inline(never)]
    pub fn covers(&self, other: &Match) -> bool {
        let hosts = match (&self.hosts, &other.hosts) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => {
                theirs.exact().iter().all(|host| {
                    mine.exact().contains(host)
                        || mine.suffixes().iter().any(|s| wildcard_matches(s, host))
                }) && theirs
                    .suffixes()
                    .iter()
                    .all(|t| mine.suffixes().iter().any(|s| t.ends_with(s)))
            }
        };
        let paths = self.path_prefixes.is_empty()
            || (!other.path_prefixes.is_empty()
                && other
                    .path_prefixes
                    .iter()
                    .all(|theirs| self.path_prefixes.iter().any(|p| theirs.starts_with(p))));
        let headers = self.headers.iter().all(|mine| {
            other
                .headers
                .iter()
                .any(|theirs| theirs.name == mine.name && theirs.test.implies(&mine.test))
        });
        hosts && paths && headers
    }

    /// The path and header conditions. `path` caches the `:path` lookup across
    /// the rollouts tried for one request.
    #[inline]
    fn conditions_hold<'r>(
        &self,
        request: &'r impl RequestFacts,
        path: &mut Option<Option<&'r [u8]>>,
    ) -> bool {
        if !self.path_prefixes.is_empty() {
            let Some(path) = *path.get_or_insert_with(|| request.header(":path")) else {
                return false;
            };
            if !self.path_prefixes.iter().any(|p| path.starts_with(p)) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|c| c.holds(request.header(&c.name)))
    }
}

/// Rollout indices, in config order.
type Candidates = Box<[u32]>;
/// Lower-case host (or wildcard suffix) -> its candidate list, an index into
/// [`Plan::ByHost`]'s `lists`. hashbrown's map with foldhash, and the very type of
/// the user index (config's `UserIndex`), so that the `.wasm` holds its code once.
type HostIndex = hashbrown::HashMap<Box<[u8]>, usize>;

/// The longest host the index holds: a DNS name's text form.
const MAX_KEY: usize = 253;
/// The end of the host lower-cased for the lookups: every key fits in it.
const LOOKUP_BYTES: usize = 256;

/// How [`Router::route`] finds the rollout.
#[derive(Debug, Clone)]
enum Plan {
    /// The first rollout matches every request.
    First,
    /// A single rollout with conditions.
    Single,
    /// No rollout lists hosts: each is tried in order.
    InOrder,
    /// Some rollouts list hosts.
    ByHost {
        /// Exact host -> its exact rollouts, the wildcards that match it and the
        /// rollouts without hosts, in order.
        exact: HostIndex,
        /// `.example.com` -> the wildcards that match every host under it (its
        /// own and shorter ones: `*.com`) and the rollouts without hosts.
        wildcards: HostIndex,
        /// The candidate lists the indices point at; the first is for a host that
        /// nothing lists: the rollouts without hosts.
        lists: Vec<Candidates>,
    },
}

/// Finds the rollout of a request; see the module's documentation.
#[derive(Debug, Clone)]
pub struct Router {
    matches: Vec<Match>,
    plan: Plan,
}

impl PartialEq for Router {
    /// Two routers are the same if they route by the same matches.
    fn eq(&self, other: &Self) -> bool {
        self.matches == other.matches
    }
}

impl Router {
    /// The router of these rollouts' matches, in config order.
    #[cold]
    #[inline(never)]
    pub fn new(matches: Vec<Match>) -> Router {
        let plan = match matches.as_slice() {
            [first, ..] if first.is_empty() => Plan::First,
            [_] => Plan::Single,
            _ if matches.iter().all(|m| m.hosts.is_none()) => Plan::InOrder,
            _ => by_host(&matches),
        };
        Router { matches, plan }
    }

    /// Each rollout's match, in config order.
    #[inline]
    pub fn matches(&self) -> &[Match] {
        &self.matches
    }

    /// The index of the first rollout whose match holds for this request.
    #[inline]
    pub fn route(&self, request: &impl RequestFacts) -> Option<usize> {
        match &self.plan {
            Plan::First => Some(0),
            Plan::Single => self
                .matches
                .first()
                .filter(|m| m.matches(request))
                .map(|_| 0),
            Plan::InOrder => {
                let mut path = None;
                self.matches
                    .iter()
                    .position(|m| m.conditions_hold(request, &mut path))
            }
            Plan::ByHost {
                exact,
                wildcards,
                lists,
            } => {
                let list = request
                    .header(":authority")
                    .and_then(|authority| lookup(exact, wildcards, host_of(authority)))
                    .unwrap_or(0);
                let candidates = lists.get(list)?;
                let mut path = None;
                candidates.iter().map(|&i| i as usize).find(|&i| {
                    self.matches
                        .get(i)
                        .is_some_and(|m| m.conditions_hold(request, &mut path))
                })
            }
        }
    }
}

/// Rollouts that can never match, each with the earlier one that takes every
/// request it would match: `(shadowed, by)`, by [`Match::covers`] (so only where
/// that is certain).
#[cold]
#[inline(never)]
pub fn shadowed(matches: &[Match]) -> Vec<(usize, usize)> {
    (1..matches.len())
        .filter_map(|j| {
            (0..j)
                .find(|&i| matches[i].covers(&matches[j]))
                .map(|i| (j, i))
        })
        .collect()
}

/// The candidate list of a host: its exact entry's, else the longest wildcard
/// suffix listed's, else `None` (the rollouts without hosts).
#[inline]
fn lookup(exact: &HostIndex, wildcards: &HostIndex, host: &[u8]) -> Option<usize> {
    // Lower case, on the stack: only the end of a longer host can match a key.
    let skipped = host.len().saturating_sub(LOOKUP_BYTES);
    let tail = &host[skipped..];
    let mut buffer = [0u8; LOOKUP_BYTES];
    let lower = &mut buffer[..tail.len()];
    lower.copy_from_slice(tail);
    lower.make_ascii_lowercase();
    let lower = &*lower;
    if skipped == 0 && lower.len() <= MAX_KEY {
        if let Some(&found) = exact.get(lower) {
            return Some(found);
        }
    }
    if wildcards.is_empty() {
        return None;
    }
    // Longest suffix first; a suffix is `.` and what follows, never the whole host
    // (`*.example.com` does not match `.example.com`).
    for (at, &byte) in lower.iter().enumerate() {
        if byte == b'.' && skipped + at > 0 {
            if let Some(&found) = wildcards.get(&lower[at..]) {
                return Some(found);
            }
        }
    }
    None
}

/// True if the wildcard suffix `suffix` (`.example.com`) matches `host`.
fn wildcard_matches(suffix: &[u8], host: &[u8]) -> bool {
    host.len() > suffix.len() && host.ends_with(suffix)
}

#[cold]
#[inline(never)]
fn by_host(matches: &[Match]) -> Plan {
    // The rollouts a request may belong to, given which of a rollout's hosts admit
    // it; cut after the first one without conditions, which always matches.
    let candidates = |admits: &dyn Fn(&Hosts) -> bool| -> Candidates {
        let mut out = Vec::new();
        for (i, m) in matches.iter().enumerate() {
            if m.hosts.as_ref().is_none_or(admits) {
                out.push(i as u32);
                if !m.has_conditions() {
                    break;
                }
            }
        }
        out.into_boxed_slice()
    };
    let mut lists = vec![candidates(&|_: &Hosts| false)];
    let mut exact = HostIndex::default();
    let mut wildcards = HostIndex::default();
    for hosts in matches.iter().filter_map(|m| m.hosts.as_ref()) {
        for key in hosts.exact() {
            // `get` rather than `contains_key`: the lookup per request's copy.
            if exact.get(&key[..]).is_none() {
                lists.push(candidates(&|hosts: &Hosts| {
                    hosts.exact().contains(key)
                        || hosts.suffixes().iter().any(|s| wildcard_matches(s, key))
                }));
                exact.insert(key.clone(), lists.len() - 1);
            }
        }
        for key in hosts.suffixes() {
            if wildcards.get(&key[..]).is_none() {
                lists.push(candidates(&|hosts: &Hosts| {
                    hosts.suffixes().iter().any(|s| key.ends_with(s))
                }));
                wildcards.insert(key.clone(), lists.len() - 1);
            }
        }
    }
    Plan::ByHost {
        exact,
        wildcards,
        lists,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{serialize_headers, SerializedHeaders};

    fn hosts(entries: &[&str]) -> Option<Hosts> {
        Some(Hosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap())
    }

    fn prefixes(entries: &[&str]) -> Vec<Box<[u8]>> {
        entries.iter().map(|e| e.as_bytes().into()).collect()
    }

    fn header(name: &str, test: HeaderTest) -> HeaderCondition {
        HeaderCondition {
            name: name.to_string(),
            test,
        }
    }

    fn bytes(text: &str) -> Box<[u8]> {
        text.as_bytes().into()
    }

    /// The rollout of a request with these headers, by the router and by trying
    /// every match in order: the two must agree.
    fn route(router: &Router, pairs: &[(&str, &str)]) -> Option<usize> {
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let map = serialize_headers(&pairs);
        let request = SerializedHeaders::new(&map);
        let routed = router.route(&request);
        let in_order = router.matches().iter().position(|m| m.matches(&request));
        assert_eq!(routed, in_order, "{pairs:?}");
        routed
    }

    #[test]
    fn header_conditions_read_the_first_value_byte_for_byte() {
        let exact = header("x", HeaderTest::Exact(bytes("ios")));
        assert!(exact.holds(Some(b"ios")));
        assert!(!exact.holds(Some(b"IOS")));
        assert!(!exact.holds(Some(b"ios ")));
        assert!(!exact.holds(None));
        let prefix = header("x", HeaderTest::Prefix(bytes("v2")));
        assert!(prefix.holds(Some(b"v2")) && prefix.holds(Some(b"v2.1")));
        assert!(!prefix.holds(Some(b"v1")) && !prefix.holds(None));
        let suffix = header("x", HeaderTest::Suffix(bytes(".internal")));
        assert!(suffix.holds(Some(b"a.internal")) && !suffix.holds(Some(b"internal")));
        let present = header("x", HeaderTest::Present(true));
        assert!(present.holds(Some(b"")) && !present.holds(None));
        let absent = header("x", HeaderTest::Present(false));
        assert!(absent.holds(None) && !absent.holds(Some(b"")));
    }

    #[test]
    fn an_empty_first_match_takes_every_request_without_reading_a_header() {
        let router = Router::new(vec![Match::default()]);
        assert!(matches!(router.plan, Plan::First));
        assert_eq!(router.route(&SerializedHeaders::new(b"")), Some(0));
        assert_eq!(route(&router, &[(":authority", "anything")]), Some(0));
    }

    #[test]
    fn a_single_rollout_with_hosts_matches_as_hosts_always_did() {
        let router = Router::new(vec![Match {
            hosts: hosts(&["myapp", "*.example.com"]),
            ..Match::default()
        }]);
        assert!(matches!(router.plan, Plan::Single));
        assert_eq!(route(&router, &[(":authority", "MyApp:8080")]), Some(0));
        assert_eq!(
            route(&router, &[(":authority", "a.b.example.com.")]),
            Some(0)
        );
        assert_eq!(route(&router, &[(":authority", "example.com")]), None);
        assert_eq!(route(&router, &[]), None);
    }

    #[test]
    fn the_first_rollout_in_config_order_whose_match_holds_decides() {
        let router = Router::new(vec![
            // 0: b.example + /api/v2/
            Match {
                hosts: hosts(&["b.example"]),
                path_prefixes: prefixes(&["/api/v2/"]),
                ..Match::default()
            },
            // 1: b.example + x-client: ios
            Match {
                hosts: hosts(&["b.example"]),
                headers: vec![header("x-client", HeaderTest::Exact(bytes("ios")))],
                ..Match::default()
            },
            // 2: every subdomain of example.org
            Match {
                hosts: hosts(&["*.example.org"]),
                ..Match::default()
            },
            // 3: a.example
            Match {
                hosts: hosts(&["a.example"]),
                ..Match::default()
            },
            // 4: shop.example.org, after the wildcard that shadows it
            Match {
                hosts: hosts(&["shop.example.org"]),
                ..Match::default()
            },
        ]);
        assert!(matches!(router.plan, Plan::ByHost { .. }));
        let at = |host: &str, path: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![(":authority", host), (":path", path)];
            pairs.extend_from_slice(extra);
            route(&router, &pairs)
        };
        assert_eq!(at("b.example", "/api/v2/cart", &[]), Some(0));
        assert_eq!(
            at("B.Example:443", "/api/v2/", &[("x-client", "ios")]),
            Some(0)
        );
        assert_eq!(
            at("b.example", "/api/v1/cart", &[("x-client", "ios")]),
            Some(1)
        );
        assert_eq!(at("b.example", "/API/v2/cart", &[]), None);
        assert_eq!(at("b.example", "/api/v1", &[("x-client", "android")]), None);
        assert_eq!(at("a.example", "/", &[]), Some(3));
        assert_eq!(at("shop.example.org", "/", &[]), Some(2));
        assert_eq!(at("x.y.example.org", "/", &[]), Some(2));
        assert_eq!(at("example.org", "/", &[]), None);
        assert_eq!(at("c.example", "/api/v2/", &[]), None);
        assert_eq!(route(&router, &[(":path", "/api/v2/")]), None);
    }

    #[test]
    fn rollouts_without_hosts_are_merged_into_every_host_in_order() {
        let router = Router::new(vec![
            Match {
                hosts: hosts(&["a.example"]),
                path_prefixes: prefixes(&["/a"]),
                ..Match::default()
            },
            // Any host, with a header.
            Match {
                headers: vec![header("x-beta", HeaderTest::Present(true))],
                ..Match::default()
            },
            Match {
                hosts: hosts(&["a.example", "*.example"]),
                ..Match::default()
            },
            // Any host, any request: the rest falls here.
            Match {
                path_prefixes: prefixes(&["/"]),
                ..Match::default()
            },
        ]);
        let at = |host: &str, path: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![(":authority", host), (":path", path)];
            pairs.extend_from_slice(extra);
            route(&router, &pairs)
        };
        assert_eq!(at("a.example", "/a/b", &[("x-beta", "1")]), Some(0));
        assert_eq!(at("a.example", "/b", &[("x-beta", "1")]), Some(1));
        assert_eq!(at("a.example", "/b", &[]), Some(2));
        assert_eq!(at("z.a.example", "/b", &[]), Some(2));
        assert_eq!(at("other", "/b", &[("x-beta", "")]), Some(1));
        assert_eq!(at("other", "/b", &[]), Some(3));
        assert_eq!(at("other", "*", &[]), None);
        assert_eq!(route(&router, &[]), None);
    }

    #[test]
    fn without_hosts_each_rollout_is_tried_in_order() {
        let router = Router::new(vec![
            Match {
                path_prefixes: prefixes(&["/api/v2/", "/v2/"]),
                ..Match::default()
            },
            Match {
                headers: vec![
                    header("x-client", HeaderTest::Suffix(bytes("-ios"))),
                    header("x-debug", HeaderTest::Present(false)),
                ],
                ..Match::default()
            },
        ]);
        assert!(matches!(router.plan, Plan::InOrder));
        assert_eq!(route(&router, &[(":path", "/v2/x?y=1")]), Some(0));
        assert_eq!(
            route(&router, &[(":path", "/v3"), ("x-client", "app-ios")]),
            Some(1)
        );
        assert_eq!(
            route(
                &router,
                &[(":path", "/v3"), ("x-client", "app-ios"), ("x-debug", "1")]
            ),
            None
        );
        // The first value counts, as for every header the filter reads.
        assert_eq!(
            route(&router, &[("x-client", "web"), ("x-client", "app-ios")]),
            None
        );
    }

    #[test]
    fn wildcards_nest_and_the_longest_listed_suffix_finds_them_all() {
        let router = Router::new(vec![
            Match {
                hosts: hosts(&["*.a.example.com"]),
                headers: vec![header("x", HeaderTest::Present(true))],
                ..Match::default()
            },
            Match {
                hosts: hosts(&["*.example.com"]),
                path_prefixes: prefixes(&["/p"]),
                ..Match::default()
            },
            Match {
                hosts: hosts(&["*.com", "[fd00::1]", "10.0.0.7"]),
                ..Match::default()
            },
        ]);
        for (host, extra, want) in [
            ("z.a.example.com", &[("x", "1")][..], Some(0)),
            ("z.a.example.com", &[], Some(1)),
            ("a.example.com", &[("x", "1")], Some(1)),
            ("q.example.com", &[], Some(1)),
            ("example.com", &[], Some(2)),
            ("com", &[], None),
            (".com", &[], None),
            ("[FD00::1]:80", &[], Some(2)),
            ("10.0.0.7:8080", &[], Some(2)),
            ("10.0.0.8", &[], None),
        ] {
            let mut pairs = vec![(":authority", host), (":path", "/p")];
            pairs.extend_from_slice(extra);
            assert_eq!(route(&router, &pairs), want, "{host} {extra:?}");
        }
        let mut pairs = vec![(":authority", "q.example.com"), (":path", "/q")];
        assert_eq!(route(&router, &pairs), Some(2));
        pairs[0].1 = "";
        assert_eq!(route(&router, &pairs), None);
    }

    #[test]
    fn a_host_longer_than_any_key_still_finds_its_wildcard() {
        let router = Router::new(vec![
            Match {
                hosts: hosts(&["a.example"]),
                ..Match::default()
            },
            Match {
                hosts: hosts(&["*.example.com"]),
                ..Match::default()
            },
        ]);
        let long = format!("{}.example.com", "x".repeat(400));
        assert_eq!(route(&router, &[(":authority", &long)]), Some(1));
        let long = format!("{}.Example.COM:1", "x.".repeat(300));
        assert_eq!(route(&router, &[(":authority", &long)]), Some(1));
        let junk = "\u{ff}.example.com";
        assert_eq!(route(&router, &[(":authority", junk)]), Some(1));
    }

    #[test]
    fn a_rollout_is_shadowed_only_where_an_earlier_one_surely_takes_all_it_matches() {
        let m = |h: &[&str], p: &[&str], c: Vec<HeaderCondition>| Match {
            hosts: if h.is_empty() { None } else { hosts(h) },
            path_prefixes: prefixes(p),
            headers: c,
        };
        let ios = || header("x-client", HeaderTest::Exact(bytes("ios")));
        let cases: Vec<(Match, Match, bool)> = vec![
            (
                m(&[], &[], vec![]),
                m(&["a.example"], &["/x"], vec![ios()]),
                true,
            ),
            (
                m(&["a.example"], &[], vec![]),
                m(&["A.example"], &["/x"], vec![]),
                true,
            ),
            (
                m(&["a.example"], &[], vec![]),
                m(&[], &["/x"], vec![]),
                false,
            ),
            (
                m(&["*.example"], &[], vec![]),
                m(&["a.example", "*.b.example"], &[], vec![]),
                true,
            ),
            (
                m(&["*.example"], &[], vec![]),
                m(&["example"], &[], vec![]),
                false,
            ),
            (
                m(&["*.b.example"], &[], vec![]),
                m(&["*.example"], &[], vec![]),
                false,
            ),
            (
                m(&["a.example"], &["/api/"], vec![]),
                m(&["a.example"], &["/api/v2/", "/api/v3"], vec![]),
                true,
            ),
            (
                m(&["a.example"], &["/api/"], vec![]),
                m(&["a.example"], &["/api/v2/", "/v3"], vec![]),
                false,
            ),
            (m(&[], &["/api/"], vec![]), m(&[], &[], vec![]), false),
            (
                m(
                    &[],
                    &[],
                    vec![header("x-client", HeaderTest::Present(true))],
                ),
                m(&[], &[], vec![ios()]),
                true,
            ),
            (
                m(
                    &[],
                    &[],
                    vec![header("x-client", HeaderTest::Prefix(bytes("io")))],
                ),
                m(&[], &[], vec![ios()]),
                true,
            ),
            (
                m(
                    &[],
                    &[],
                    vec![header("x-client", HeaderTest::Suffix(bytes("os")))],
                ),
                m(
                    &[],
                    &[],
                    vec![header("x-client", HeaderTest::Suffix(bytes("ios")))],
                ),
                true,
            ),
            (
                m(&[], &[], vec![ios()]),
                m(
                    &[],
                    &[],
                    vec![header("x-client", HeaderTest::Prefix(bytes("ios")))],
                ),
                false,
            ),
            (m(&[], &[], vec![ios()]), m(&[], &[], vec![]), false),
            (
                m(&[], &[], vec![ios()]),
                m(
                    &[],
                    &[],
                    vec![header("x-other", HeaderTest::Exact(bytes("ios")))],
                ),
                false,
            ),
            (
                m(&[], &[], vec![header("x", HeaderTest::Present(false))]),
                m(
                    &[],
                    &[],
                    vec![header("x", HeaderTest::Present(false)), ios()],
                ),
                true,
            ),
            (
                m(&[], &[], vec![header("x", HeaderTest::Present(false))]),
                m(&[], &[], vec![header("x", HeaderTest::Present(true))]),
                false,
            ),
            (
                m(&[], &[], vec![header("x", HeaderTest::Present(true))]),
                m(&[], &[], vec![header("x", HeaderTest::Present(false))]),
                false,
            ),
        ];
        for (i, (earlier, later, covered)) in cases.iter().enumerate() {
            assert_eq!(earlier.covers(later), *covered, "case {i}");
        }
        let matches = vec![
            m(&["a.example"], &["/api/"], vec![]),
            m(&["b.example"], &[], vec![]),
            m(&["a.example"], &["/api/v2/"], vec![]),
            m(&["b.example", "c.example"], &[], vec![]),
            m(&["b.example"], &[], vec![ios()]),
        ];
        assert_eq!(shadowed(&matches), [(2, 0), (4, 1)]);
    }

    #[test]
    fn candidate_lists_stop_at_the_first_rollout_without_conditions() {
        let router = Router::new(vec![
            Match {
                hosts: hosts(&["a.example"]),
                ..Match::default()
            },
            Match {
                hosts: hosts(&["a.example", "b.example"]),
                ..Match::default()
            },
            Match::default(),
        ]);
        let Plan::ByHost { exact, lists, .. } = &router.plan else {
            panic!("by host")
        };
        assert_eq!(&*lists[exact[&b"a.example"[..]]], &[0]);
        assert_eq!(&*lists[exact[&b"b.example"[..]]], &[1]);
        assert_eq!(&*lists[0], &[2]);
    }
}

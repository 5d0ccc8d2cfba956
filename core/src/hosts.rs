//! Which requests the plugin is for: the `hosts` list matched against the
//! request's `:authority`. Pure; the filter passes the value from the header map it
//! already read, so matching costs no host call.
//!
//! Why: on a sidecar, Istio matches a client-side plugin to listeners by port only,
//! so every outbound request of the caller on that port passes through it, for
//! every Service on that port. With `hosts`, only requests to the service's own
//! names are decided, counted and fed to the guard; the others pass untouched.
//!
//! Matching drops the port (`myapp:8080` is `myapp`, `[::1]:80` is `[::1]`) and a
//! trailing dot, and ignores case. `*.example.com` matches every subdomain at any
//! depth (`a.example.com`, `a.b.example.com`) but not `example.com` itself, as in
//! Envoy's and Istio's host wildcards: list both to match both.

/// At most this many entries: every request scans the list.
pub const MAX_HOSTS: usize = 64;
/// A DNS name's longest text form.
const MAX_HOST_LEN: usize = 253;

/// A validated `hosts` list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hosts {
    /// Exact names, lower case.
    exact: Vec<Box<[u8]>>,
    /// For `*.example.com`: `.example.com`, lower case.
    suffixes: Vec<Box<[u8]>>,
}

impl Hosts {
    /// Checks the entries; on failure every problem, as (index, message).
    #[cold]
    #[inline(never)]
    pub fn parse(entries: &[String]) -> Result<Hosts, Vec<(Option<usize>, String)>> {
        let mut problems = Vec::new();
        if entries.is_empty() {
            problems.push((
                None,
                "is empty, which would match no request: leave it out to match every host"
                    .to_string(),
            ));
        }
        if entries.len() > MAX_HOSTS {
            problems.push((
                None,
                format!("{} entries; at most {MAX_HOSTS} are allowed", entries.len()),
            ));
        }
        let mut hosts = Hosts::default();
        let mut seen: Vec<String> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let lower = entry.to_ascii_lowercase();
            if let Some(problem) = entry_problem(&lower) {
                problems.push((
                    Some(i),
                    format!("`{}` {problem}", crate::units::escape_text(entry, true)),
                ));
                continue;
            }
            if let Some(first) = seen.iter().position(|s| *s == lower) {
                problems.push((
                    Some(i),
                    format!("`{entry}` is already listed as hosts[{first}]"),
                ));
            }
            match lower.strip_prefix('*') {
                Some(suffix) => hosts.suffixes.push(suffix.as_bytes().into()),
                None => hosts.exact.push(lower.as_bytes().into()),
            }
            seen.push(lower);
        }
        if problems.is_empty() {
            Ok(hosts)
        } else {
            Err(problems)
        }
    }

    /// The exact names, lower case.
    #[inline]
    pub fn exact(&self) -> &[Box<[u8]>] {
        &self.exact
    }

    /// The wildcards' suffixes, lower case: `.example.com` for `*.example.com`.
    #[inline]
    pub fn suffixes(&self) -> &[Box<[u8]>] {
        &self.suffixes
    }

    /// True if a request with this `:authority` (absent: `None`) is for the plugin.
    #[inline]
    pub fn admits(&self, authority: Option<&[u8]>) -> bool {
        let Some(host) = authority.map(host_of) else {
            return false;
        };
        self.exact.iter().any(|e| host.eq_ignore_ascii_case(e))
            || self.suffixes.iter().any(|s| {
                host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            })
    }
}

/// The host part of an authority: without the port and a trailing dot.
#[inline]
pub fn host_of(authority: &[u8]) -> &[u8] {
    let host = if authority.first() == Some(&b'[') {
        // An IPv6 literal: up to and with the closing bracket.
        match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.iter().position(|&b| b == b':') {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    host.strip_suffix(b".").unwrap_or(host)
}

/// What is wrong with one entry (already lower case), if anything.
#[cold]
#[inline(never)]
fn entry_problem(entry: &str) -> Option<&'static str> {
    if entry.is_empty() {
        return Some("is empty");
    }
    if entry.len() > MAX_HOST_LEN {
        return Some("is longer than 253 characters");
    }
    if entry == "*" {
        return Some("matches every host: leave hosts out instead");
    }
    if entry.contains(':') && !entry.starts_with('[') {
        return Some("has a port: ports are ignored, list the host name only");
    }
    if entry.starts_with('[') {
        let inner = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']'));
        return match inner {
            Some(ip) if crate::ip::parse_ipv6(ip.as_bytes()).is_some() => None,
            _ => Some("is not an IPv6 address in brackets such as [fd00::1] (without a port)"),
        };
    }
    let name = match entry.strip_prefix("*.") {
        Some(rest) => rest,
        None if entry.contains('*') => return Some(
            "has a `*` that is not a leading `*.`: only `*.example.com` wildcards are supported",
        ),
        None => entry,
    };
    if name.contains('*') {
        return Some(
            "has a `*` that is not a leading `*.`: only `*.example.com` wildcards are supported",
        );
    }
    // `windows` rather than `contains("..")`: no substring search code in the .wasm.
    if name.ends_with('.')
        || name.starts_with('.')
        || name.as_bytes().windows(2).any(|w| w == b"..")
    {
        return Some("has an empty label: write names such as myapp.myns.svc.cluster.local");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Some("has characters outside [A-Za-z0-9.-]: write a host name such as myapp.myns.svc.cluster.local");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> Hosts {
        Hosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn problems(entries: &[&str]) -> Vec<(Option<usize>, String)> {
        Hosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap_err()
    }

    #[test]
    fn exact_names_match_without_port_and_case() {
        let h = hosts(&["myapp", "MyApp.myapp.svc.cluster.local"]);
        for yes in [
            "myapp",
            "MYAPP",
            "myapp:80",
            "myapp:8080",
            "myapp.",
            "myapp.myapp.svc.cluster.local",
            "myapp.MYAPP.svc.cluster.local:9080",
            "myapp.myapp.svc.cluster.local.:80",
        ] {
            assert!(h.admits(Some(yes.as_bytes())), "{yes}");
        }
        for no in [
            "",
            "myapp2",
            "xmyapp",
            "other",
            "myapp.myapp",
            "myapp.myapp.svc.cluster.local.evil",
            ":80",
            "other:myapp",
        ] {
            assert!(!h.admits(Some(no.as_bytes())), "{no}");
        }
        assert!(!h.admits(None));
    }

    #[test]
    fn a_wildcard_matches_every_subdomain_but_not_the_domain_itself() {
        let h = hosts(&["*.Example.com"]);
        for yes in ["a.example.com", "a.b.example.com:443", "X.EXAMPLE.COM"] {
            assert!(h.admits(Some(yes.as_bytes())), "{yes}");
        }
        for no in [
            "example.com",
            ".example.com",
            "aexample.com",
            "example.com.evil",
            "a.example.org",
        ] {
            assert!(!h.admits(Some(no.as_bytes())), "{no}");
        }
        let both = hosts(&["*.example.com", "example.com"]);
        assert!(both.admits(Some(b"example.com")));
    }

    #[test]
    fn ipv6_and_ipv4_literals() {
        let h = hosts(&["[fd00::1]", "10.0.0.7"]);
        assert!(h.admits(Some(b"[fd00::1]:8080")));
        assert!(h.admits(Some(b"[FD00::1]")));
        assert!(h.admits(Some(b"10.0.0.7:80")));
        assert!(!h.admits(Some(b"[fd00::2]:8080")));
        assert!(!h.admits(Some(b"[fd00::1")));
    }

    #[test]
    fn bytes_that_are_no_host_never_match_and_never_panic() {
        let h = hosts(&["*.example.com", "myapp"]);
        for junk in [
            &b"\xff\xfe"[..],
            b"[",
            b"]",
            b":",
            b"[]:",
            b".",
            b"*.example.com",
        ] {
            let _ = h.admits(Some(junk));
        }
        assert!(!h.admits(Some(b".")));
        assert!(!h.admits(Some(b"")));
    }

    #[test]
    fn bad_entries_are_named_by_index() {
        assert_eq!(problems(&[]).len(), 1);
        assert_eq!(problems(&[])[0].0, None);
        let p = problems(&[
            "myapp",
            "myapp:8080",
            "my app",
            "*",
            "a.*.example.com",
            "*example.com",
            "MYAPP",
            "",
            "[::1",
            "a..b",
        ]);
        let indices: Vec<Option<usize>> = p.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            indices,
            [1, 2, 3, 4, 5, 6, 7, 8, 9].map(Some).to_vec(),
            "{p:?}"
        );
        assert!(p[0].1.contains("has a port"), "{}", p[0].1);
        assert!(p[5].1.contains("already listed as hosts[0]"), "{}", p[5].1);
        let many: Vec<String> = (0..65).map(|i| format!("h{i}")).collect();
        assert!(Hosts::parse(&many).unwrap_err()[0].1.contains("at most 64"));
    }
}

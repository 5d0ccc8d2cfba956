//! `hosts`: which requests the plugin is for, by the request's `:authority`. The
//! matching itself is [`crate::hosts`]; this section checks the entries and names
//! each bad one by its index.

use super::error::ConfigError;
use crate::hosts::Hosts;

pub use crate::hosts::MAX_HOSTS;

/// The JSON Schema pattern of an entry: a host name, optionally `*.`-prefixed, or an
/// IPv6 address in brackets; no port. The same rules as [`Hosts::parse`] (which also
/// refuses empty labels, duplicates and names over 253 characters).
#[cfg(feature = "schema")]
pub(super) const HOST_PATTERN: &str =
    r"^(?:(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])$";

#[cold]
#[inline(never)]
pub(super) fn validate_hosts(
    raw: Option<Vec<String>>,
    errors: &mut Vec<ConfigError>,
) -> Option<Hosts> {
    let entries = raw?;
    match Hosts::parse(&entries) {
        Ok(hosts) => Some(hosts),
        Err(problems) => {
            for (index, message) in problems {
                let field = index.map_or_else(|| "hosts".to_string(), |i| format!("hosts[{i}]"));
                ConfigError::report(errors, field, message);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{errors_of, parse};

    #[test]
    fn absent_means_every_request_and_a_list_is_parsed() {
        let c = parse(r#"{"versions":[{"name":"s"}]}"#).unwrap();
        assert!(c.hosts.is_none());
        let c = parse(r#"{"versions":[{"name":"s"}],"hosts":["myapp","*.example.com"]}"#).unwrap();
        let hosts = c.hosts.expect("hosts");
        assert!(hosts.admits(Some(b"MyApp:8080")));
        assert!(hosts.admits(Some(b"shop.example.com")));
        assert!(!hosts.admits(Some(b"example.com")));
        assert!(!hosts.admits(Some(b"other")));
    }

    #[test]
    fn bad_entries_are_named_by_index() {
        assert_eq!(
            errors_of(r#"{"versions":[{"name":"s"}],"hosts":["myapp","myapp:80","*","myapp"]}"#),
            [
                "hosts[1]: `myapp:80` has a port: ports are ignored, list the host name only",
                "hosts[2]: `*` matches every host: leave hosts out instead",
                "hosts[3]: `myapp` is already listed as hosts[0]",
            ]
        );
        assert_eq!(
            errors_of(r#"{"versions":[{"name":"s"}],"hosts":[]}"#),
            ["hosts: is empty, which would match no request: leave it out to match every host"]
        );
        assert_eq!(
            errors_of(r#"{"versions":[{"name":"s"}],"hosts":"myapp"}"#)[0]
                .split(':')
                .next(),
            Some("hosts")
        );
    }
}

//! The command line, declared with clap (derive): help, usage errors with
//! suggestions, and shell completions come from these types.

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;
use std::net::IpAddr;

pub const DEFAULT_SIMULATED_USERS: u64 = 100_000;
/// Enough for any split to show; a bound so that a typo cannot run for hours.
pub const MAX_SIMULATED: u64 = 100_000_000;
/// Returns per simulated visitor: a bound for the same reason.
pub const MAX_RETURNS: u64 = 1000;

/// The main help page starts with what the tool is, as `canary-router: ...`.
const TEMPLATE: &str = "{bin}: {about}\n\n{usage-heading} {usage}\n\n{all-args}{after-help}";
/// A command's help page starts with its command line (`canary-router explain
/// [OPTIONS] <CONFIG>`), then what it does.
const COMMAND_TEMPLATE: &str = "{usage}\n\n{about}\n\n{all-args}{after-help}";

const AFTER_HELP: &str = "\
CONFIG is a file, or - for standard input: the plugin config as JSON (what Envoy's
`configuration` holds), as YAML (what Istio's `pluginConfig` holds), or a whole
WasmPlugin or TrafficExtension manifest. Names ending in .json are JSON, .yaml and
.yml are YAML; otherwise text starting with `{` is JSON, anything else YAML. YAML is
read as Kubernetes reads manifests (YAML 1.1): a plain `yes`, `on` or `y` is true.

TIME is an RFC 3339 time (2026-12-01T09:30:00Z), `now` (the default), or a duration
from now such as +2h or -30m. It matters for ramp schedules.

Exit codes:
  0  done (validate: the config is valid)
  1  the config is invalid: every problem is on standard error, each naming its field
  2  usage error: bad arguments, or CONFIG cannot be read";

#[derive(Debug, Parser)]
#[command(
    name = "canary-router",
    version,
    about = "check a canary-router config, explain a routing decision, simulate\nthe split. The filter's own parser and decision code, run natively.",
    after_help = AFTER_HELP,
    help_template = TEMPLATE,
    subcommand_required = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// Check a config as the filter does; print a one-line summary or every error
    #[command(
        help_template = COMMAND_TEMPLATE,
        long_about = "Check a config as the filter does.\n\n\
Parses and validates CONFIG with the filter's own code: what it accepts, the filter
loads; what it rejects, the filter never takes (it logs the same errors and keeps its
last good config, or runs in safe mode; with CANARY_ROUTER_ON_BAD_CONFIG=refuse Envoy
refuses it).

Valid: exit 0 and one line on standard output: the versions with their weights (at
TIME, for ramps) and the guard.
Invalid: exit 1 and every problem on standard error, one per line, each as
`error: FIELD: MESSAGE`, then a count."
    )]
    Validate(Common),
    /// Which version a request gets, for which reason, and its bucket
    #[command(
        help_template = COMMAND_TEMPLATE,
        long_about = "Which version a request gets, for which reason, and its bucket.\n\n\
Describes the request with its host, path, headers and cookies, finds its rollout
as the filter does (the first whose match holds; a request that matches none passes
untouched), runs the filter's decision on it and prints the rollout (for a config
with rollouts), the version (the value the filter writes into the route header), the
reason (the `reason` metric label: override, user_list, hash, random, baseline,
guard), the bucket when a bucket decided, and why."
    )]
    Explain(Explain),
    /// The split over N synthetic users and N anonymous requests, by version and reason,
    /// against the configured weights
    #[command(
        help_template = COMMAND_TEMPLATE,
        long_about = "The split over synthetic users and anonymous requests.\n\n\
Runs the filter's decision for N synthetic user IDs (user-0, user-1, ...; in
hash.header, else hash.cookie) and for anonymous requests (no user ID), and prints
how many went to each version and why, next to the configured weights. Says whether
each share is within 4 standard deviations of its weight.

Under anonymous: cookie each anonymous request is a new visitor: it is issued a
visitor ID (drawn from --seed, where the filter draws 128 random bits) and decided on
it. With --returns N every visitor then comes back N times with its cookie (at
--return-at, e.g. after a ramp step), and the output counts the visitors who saw
another version than on their first visit; under the other policies they come back
without one."
    )]
    Simulate(Simulate),
    /// Print the JSON Schema of the config (config.schema.json)
    #[command(
        help_template = COMMAND_TEMPLATE,
        long_about = "Print the JSON Schema of the config (config.schema.json).\n\n\
Prints the JSON Schema (draft 2020-12) of the plugin config: every field with its
type, default, description and the constraints JSON Schema can express. Point your
editor at it, or validate manifests with it. The repository commits the same text as
config.schema.json. Checks that JSON Schema cannot express (weights adding up to at
most 100, unique names, the guard naming a version) are `validate`'s."
    )]
    Schema,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        help_template = COMMAND_TEMPLATE,
        long_about = "Print a shell completion script.\n\n\
For example: `canary-router completions bash > /etc/bash_completion.d/canary-router`,
or `canary-router completions zsh > \"${fpath[1]}/_canary-router\"`."
    )]
    Completions {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Options every config-reading command takes.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct Common {
    /// The config: a file, or - for standard input
    #[arg(value_name = "CONFIG")]
    pub config: String,
    /// Evaluate ramp schedules at TIME (default: now)
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,
    /// Print the result as JSON on standard output (validate: also when invalid,
    /// {"valid": false, "errors": [{"field": ..., "message": ...}]})
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct Explain {
    #[command(flatten)]
    pub common: Common,
    /// The request's host (`:authority`, port allowed), which `hosts` and
    /// rollouts' match.hosts are matched against
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The request's path (`:path`, query included), which rollouts'
    /// match.path_prefixes are matched against
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// A request header (repeatable; also `NAME: VALUE`). Names are case-insensitive;
    /// with repeated names the first counts, as in the filter
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = header)]
    pub headers: Vec<(String, String)>,
    /// A cookie (repeatable); all go into one `cookie` header
    #[arg(long = "cookie", value_name = "NAME=VALUE", value_parser = cookie)]
    pub cookies: Vec<(String, String)>,
    /// The client address Envoy sees, for override.trusted_sources (without it, a
    /// config with trusted_sources refuses overrides)
    #[arg(long, value_name = "IP")]
    pub source: Option<IpAddr>,
    /// Decide as if the guard had tripped
    #[arg(long)]
    pub guard_tripped: bool,
    /// Seed of the anonymous random draw (default: 1)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Pick mode (hash.pick_header): the route's destinations and weights in the
    /// route's order, e.g. primary=90,canary=10, to show where the pick value lands
    #[arg(long, value_name = "NAME=W,...", value_parser = crate::pick::parse_route_weights)]
    pub route_weights: Option<crate::pick::RouteWeights>,
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct Simulate {
    #[command(flatten)]
    pub common: Common,
    /// The rollout to simulate, by name: required when the config has several
    #[arg(long, value_name = "NAME")]
    pub rollout: Option<String>,
    /// Synthetic user IDs (0 for none)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SIMULATED_USERS,
          value_parser = clap::value_parser!(u64).range(..=MAX_SIMULATED))]
    pub users: u64,
    /// Requests without a user ID (default: as many as --users): new visitors,
    /// which anonymous: cookie issues an ID
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(..=MAX_SIMULATED))]
    pub anonymous: Option<u64>,
    /// Returning visitors: each anonymous visitor comes back N more times, with the
    /// cookie it was issued under anonymous: cookie, with none otherwise (default: 1
    /// under anonymous: cookie, else 0)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(..=MAX_RETURNS))]
    pub returns: Option<u64>,
    /// When the visitors come back (default: --at), e.g. after a ramp step
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub return_at: Option<String>,
    /// Simulate with the guard tripped
    #[arg(long)]
    pub guard_tripped: bool,
    /// Seed of the anonymous random draws (default: 1)
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Pick mode (hash.pick_header), required there: the route's destinations and
    /// weights in the route's order, e.g. primary=90,canary=10
    #[arg(long, value_name = "NAME=W,...", value_parser = crate::pick::parse_route_weights)]
    pub route_weights: Option<crate::pick::RouteWeights>,
}

/// A usage problem found after parsing (an unreadable CONFIG, a bad --at): the
/// message says why, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    /// The command whose usage to point at.
    pub command: Option<&'static str>,
}

/// `NAME=VALUE`, or `NAME: VALUE` as curl writes it. Names cannot contain `=` or `:`,
/// so the first of them ends the name; a pseudo-header's leading `:` is part of its
/// name (`:authority=myapp:8080`, the host `hosts` matches). Envoy hands the filter
/// header names in lower case.
fn header(text: &str) -> Result<(String, String), String> {
    let (pseudo, rest) = match text.strip_prefix(':') {
        Some(rest) => (":", rest),
        None => ("", text),
    };
    pair(rest, true)
        .map(|(name, value)| {
            (
                format!("{pseudo}{}", name.trim().to_ascii_lowercase()),
                value,
            )
        })
        .map_err(|_| format!("`{text}` is not NAME=VALUE"))
}

/// `NAME=VALUE`; the value may hold `=`.
fn cookie(text: &str) -> Result<(String, String), String> {
    pair(text, false)
}

fn pair(text: &str, header: bool) -> Result<(String, String), String> {
    let split = text
        .find(|c| c == '=' || (header && c == ':'))
        .filter(|&i| i > 0);
    let Some(i) = split else {
        return Err(format!("`{text}` is not NAME=VALUE"));
    };
    let (name, value) = (&text[..i], &text[i + 1..]);
    let value = if text.as_bytes()[i] == b':' {
        value.trim_start()
    } else {
        value
    };
    Ok((name.to_string(), value.to_string()))
}

/// The subcommand a command line names, to point a usage error at its help.
pub fn command_named(args: &[std::ffi::OsString]) -> Option<&'static str> {
    let first = args.get(1)?.to_str()?;
    ["validate", "explain", "simulate", "schema", "completions"]
        .into_iter()
        .find(|c| *c == first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse_str(line: &str) -> Result<Command, clap::Error> {
        let args = std::iter::once("canary-router").chain(line.split_whitespace());
        Cli::try_parse_from(args).map(|cli| cli.command)
    }

    fn common(config: &str) -> Common {
        Common {
            config: config.into(),
            at: None,
            json: false,
        }
    }

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_and_their_options() {
        assert_eq!(
            parse_str("validate c.json").unwrap(),
            Command::Validate(common("c.json"))
        );
        assert_eq!(
            parse_str("validate - --json --at=2026-12-01T09:00:00Z").unwrap(),
            Command::Validate(Common {
                config: "-".into(),
                at: Some("2026-12-01T09:00:00Z".into()),
                json: true
            })
        );
        assert_eq!(
            parse_str("validate c.json --at -30m").unwrap(),
            Command::Validate(Common {
                config: "c.json".into(),
                at: Some("-30m".into()),
                json: false
            })
        );
        let Ok(Command::Explain(e)) = parse_str(
            "explain c.yaml --header X-User-Id=alice --header x-a:b=c --cookie uid=a=b --source 10.1.2.3 --guard-tripped --seed 7",
        ) else {
            panic!("not explain")
        };
        assert_eq!(
            e.headers,
            vec![
                ("x-user-id".to_string(), "alice".to_string()),
                ("x-a".to_string(), "b=c".to_string())
            ]
        );
        assert_eq!(e.cookies, vec![("uid".to_string(), "a=b".to_string())]);
        assert_eq!(e.source, Some("10.1.2.3".parse().unwrap()));
        assert!(e.guard_tripped);
        assert_eq!(e.seed, Some(7));
        let Ok(Command::Simulate(s)) = parse_str("simulate c.json --users 10 --anonymous=5") else {
            panic!("not simulate")
        };
        assert_eq!((s.users, s.anonymous), (10, Some(5)));
        let Ok(Command::Simulate(s)) = parse_str("simulate c.json") else {
            panic!("not simulate")
        };
        assert_eq!((s.users, s.anonymous), (DEFAULT_SIMULATED_USERS, None));
        assert_eq!((s.returns, s.return_at), (None, None));
        let Ok(Command::Simulate(s)) = parse_str("simulate c.json --returns 3 --return-at +1h")
        else {
            panic!("not simulate")
        };
        assert_eq!((s.returns, s.return_at.as_deref()), (Some(3), Some("+1h")));
        assert_eq!(parse_str("schema").unwrap(), Command::Schema);
        assert_eq!(
            parse_str("completions zsh").unwrap(),
            Command::Completions { shell: Shell::Zsh }
        );
        assert_eq!(
            parse_str("explain -- --odd-name.json").unwrap(),
            Command::Explain(Explain {
                common: common("--odd-name.json"),
                host: None,
                path: None,
                headers: vec![],
                cookies: vec![],
                source: None,
                guard_tripped: false,
                seed: None,
                route_weights: None,
            })
        );
    }

    #[test]
    fn a_pseudo_header_keeps_its_colon_and_its_value_may_hold_one() {
        let args = [
            "canary-router",
            "explain",
            "c.json",
            "--header",
            ":Authority=myapp:8080",
            "--header",
            ":authority: other",
        ];
        let Ok(Cli {
            command: Command::Explain(e),
        }) = Cli::try_parse_from(args)
        else {
            panic!("not explain")
        };
        assert_eq!(
            e.headers,
            vec![
                (":authority".to_string(), "myapp:8080".to_string()),
                (":authority".to_string(), "other".to_string())
            ]
        );
        assert!(Cli::try_parse_from(["canary-router", "explain", "c", "--header", ":=x"]).is_err());
    }

    #[test]
    fn curl_style_headers_keep_the_value_as_written() {
        let args = [
            "canary-router",
            "explain",
            "c.json",
            "--header",
            "X-User-Id:  alice b",
        ];
        let Ok(Cli {
            command: Command::Explain(e),
        }) = Cli::try_parse_from(args)
        else {
            panic!("not explain")
        };
        assert_eq!(
            e.headers,
            vec![("x-user-id".to_string(), "alice b".to_string())]
        );
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for line in [
            "--help",
            "-h",
            "help",
            "help explain",
            "simulate c.json --help",
        ] {
            assert_eq!(
                parse_str(line).unwrap_err().kind(),
                ErrorKind::DisplayHelp,
                "{line}"
            );
        }
        assert_eq!(
            parse_str("--version").unwrap_err().kind(),
            ErrorKind::DisplayVersion
        );
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let message = |line: &str| {
            let e = parse_str(line).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{line}");
            e.to_string()
        };
        let has = |line: &str, needle: &str| {
            let m = message(line);
            assert!(m.contains(needle), "{line}: {m}");
        };
        // No command at all: main says so in one line instead of clap's whole help.
        assert_eq!(
            parse_str("").unwrap_err().kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        has("frobnicate", "unrecognized subcommand 'frobnicate'");
        has("valdate c", "a similar subcommand exists: 'validate'");
        has("--frob", "unexpected argument '--frob'");
        has("help frob", "unrecognized subcommand 'frob'");
        has(
            "validate",
            "the following required arguments were not provided",
        );
        has("validate a b", "unexpected argument 'b'");
        has("validate c --users 5", "unexpected argument '--users'");
        has(
            "explain c --header",
            "a value is required for '--header <NAME=VALUE>'",
        );
        has("explain c --header novalue", "`novalue` is not NAME=VALUE");
        has("explain c --cookie a:b", "`a:b` is not NAME=VALUE");
        has(
            "explain c --source 10.0.0.0/8",
            "invalid value '10.0.0.0/8' for '--source <IP>'",
        );
        has(
            "simulate c --users 100000001",
            "100000001 is not in 0..=100000000",
        );
        has("simulate c --returns 1001", "1001 is not in 0..=1000");
        has(
            "simulate c --users many",
            "invalid value 'many' for '--users <N>'",
        );
        has(
            "simulate c --json=yes",
            "unexpected value 'yes' for '--json'",
        );
        has("schema extra", "unexpected argument 'extra'");
        has("completions tcsh", "invalid value 'tcsh'");
    }
}

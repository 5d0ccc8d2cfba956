//! `canary-router`: the operator's side of the filter. It parses configs with the
//! filter's own parser and decides with the filter's own `decide`, natively, so its
//! answers are the filter's answers.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod args;
mod explain;
mod input;
mod schema;
mod simulate;
mod time;
mod validate;

use args::{Command, Common, UsageError};
use canary_router::config::{Config, ConfigError};
use std::io::Write;
use std::process::ExitCode;

/// Exit codes, as documented in `--help` and the README.
pub const EXIT_OK: u8 = 0;
pub const EXIT_INVALID_CONFIG: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

const HELP: &str = "\
canary-router: check a canary-router config, explain a routing decision, simulate
the split. The filter's own parser and decision code, run natively.

Usage:
  canary-router validate CONFIG [--at TIME] [--json]
  canary-router explain  CONFIG [--header NAME=VALUE]... [--cookie NAME=VALUE]...
                                [--source IP] [--at TIME] [--guard-tripped]
                                [--seed N] [--json]
  canary-router simulate CONFIG [--users N] [--anonymous N] [--at TIME]
                                [--guard-tripped] [--seed N] [--json]
  canary-router schema
  canary-router help [COMMAND]      (or COMMAND --help)
  canary-router --version

Commands:
  validate   Check a config as the filter does; print a one-line summary or every error
  explain    Which version a request gets, for which reason, and its bucket
  simulate   The split over N synthetic users and N anonymous requests, by version
             and reason, against the configured weights
  schema     Print the JSON Schema of the config (config.schema.json)

CONFIG is a file, or - for standard input: the plugin config as JSON (what Envoy's
`configuration` holds), as YAML (what Istio's `pluginConfig` holds), or a whole
WasmPlugin or TrafficExtension manifest. Names ending in .json are JSON, .yaml and
.yml are YAML; otherwise text starting with `{` is JSON, anything else YAML.

TIME is an RFC 3339 time (2026-12-01T09:30:00Z), `now` (the default), or a duration
from now such as +2h or -30m. It matters for ramp schedules.

Exit codes:
  0  done (validate: the config is valid)
  1  the config is invalid: every problem is on standard error, each naming its field
  2  usage error: bad arguments, or CONFIG cannot be read
";

const HELP_VALIDATE: &str = "\
canary-router validate CONFIG [--at TIME] [--json]

Parses and validates CONFIG with the filter's own code: what it accepts, the filter
loads; what it rejects, the filter refuses (Envoy keeps the previous config, or does
not start).

Valid: exit 0 and one line on standard output: the versions with their weights (at
TIME, for ramps) and the guard.
Invalid: exit 1 and every problem on standard error, one per line, each as
`error: FIELD: MESSAGE`, then a count.

Options:
  --at TIME   Evaluate ramp schedules at TIME (default: now)
  --json      Print the result as JSON on standard output instead (also when invalid:
              {\"valid\": false, \"errors\": [{\"field\": ..., \"message\": ...}]})
";

const HELP_EXPLAIN: &str = "\
canary-router explain CONFIG [--header NAME=VALUE]... [--cookie NAME=VALUE]...
                             [--source IP] [--at TIME] [--guard-tripped] [--seed N]
                             [--json]

Describes the request with headers and cookies, runs the filter's decision on it and
prints the version (the value the filter writes into the route header), the reason
(the `reason` metric label: override, user_list, hash, random, baseline, guard), the
bucket when a bucket decided, and why.

Options:
  --header NAME=VALUE   A request header (repeatable; also `NAME: VALUE`). Names are
                        case-insensitive; with repeated names the first counts, as in
                        the filter
  --cookie NAME=VALUE   A cookie (repeatable); all go into one `cookie` header
  --source IP           The client address Envoy sees, for override.trusted_sources
                        (without it, a config with trusted_sources refuses overrides)
  --at TIME             Decide at TIME, for ramps (default: now)
  --guard-tripped       Decide as if the guard had tripped
  --seed N              Seed of the anonymous random draw (default: 1)
  --json                Print {\"version\", \"reason\", \"bucket\", ...} as JSON
";

const HELP_SIMULATE: &str = "\
canary-router simulate CONFIG [--users N] [--anonymous N] [--at TIME]
                              [--guard-tripped] [--seed N] [--json]

Runs the filter's decision for N synthetic user IDs (user-0, user-1, ...; in
hash.header, else hash.cookie) and for anonymous requests (no user ID), and prints
how many went to each version and why, next to the configured weights. Says whether
each share is within 4 standard deviations of its weight.

Options:
  --users N        Synthetic user IDs (default: 100000; 0 for none)
  --anonymous N    Requests without a user ID (default: as many as --users)
  --at TIME        Simulate at TIME, for ramps (default: now)
  --guard-tripped  Simulate with the guard tripped
  --seed N         Seed of the anonymous random draws (default: 1)
  --json           Print the counts as JSON
";

const HELP_SCHEMA: &str = "\
canary-router schema

Prints the JSON Schema (draft 2020-12) of the plugin config: every field with its
type, default, description and the constraints JSON Schema can express. Point your
editor at it, or validate manifests with it. The repository commits the same text as
config.schema.json. Checks that JSON Schema cannot express (weights adding up to at
most 100, unique names, the guard naming a version) are `validate`'s.
";

fn help_text(topic: Option<&str>) -> &'static str {
    match topic {
        Some("validate") => HELP_VALIDATE,
        Some("explain") => HELP_EXPLAIN,
        Some("simulate") => HELP_SIMULATE,
        Some("schema") => HELP_SCHEMA,
        _ => HELP,
    }
}

/// How a command ends when it does not succeed.
pub enum Failure {
    /// The config is invalid: the errors, and where the config came from.
    Invalid {
        source: String,
        errors: Vec<ConfigError>,
        json: bool,
    },
    Usage(UsageError),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e)
    }
}

/// What the filter's host layer (`on_configure` in src/filter.rs) says when Envoy
/// hands it no configuration bytes at all; `Config::from_json` never sees those.
const EMPTY_CONFIGURATION: &str =
    "the plugin configuration is empty: it must be a JSON object with at least `versions`";

/// A loaded config and the moment to evaluate it at.
pub struct Loaded {
    pub source: String,
    pub config: Config,
    pub now_ms: i64,
    /// True when `--at` was given.
    pub at_given: bool,
}

/// Reads, converts and parses CONFIG with the filter's parser; resolves `--at`.
pub fn load(common: &Common, command: &'static str) -> Result<Loaded, Failure> {
    let usage = |message: String| {
        Failure::Usage(UsageError {
            message,
            command: Some(command),
        })
    };
    let now = time::now_ms();
    let now_ms = match &common.at {
        Some(text) => time::parse_at(text, now).map_err(usage)?,
        None => now,
    };
    let bytes = input::read(&common.config).map_err(usage)?;
    let source = input::display_name(&common.config);
    let invalid = |errors| Failure::Invalid {
        source: source.clone(),
        errors,
        json: common.json,
    };
    let format = input::format_of(&common.config, &bytes);
    let json = input::plugin_json(&bytes, format).map_err(invalid)?;
    if json.is_empty() {
        return Err(invalid(vec![ConfigError {
            field: String::new(),
            message: EMPTY_CONFIGURATION.to_string(),
        }]));
    }
    let config = Config::from_json(&json).map_err(|errors| match format {
        input::Format::Json => invalid(errors),
        // Positions in the JSON made from the YAML would only mislead; the field says where.
        input::Format::Yaml => invalid(errors.into_iter().map(input::without_position).collect()),
    })?;
    Ok(Loaded {
        source: source.clone(),
        config,
        now_ms,
        at_given: common.at.is_some(),
    })
}

/// Writes to standard output; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn eprint(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn run(args: &[String]) -> Result<(), Failure> {
    match args::parse(args)? {
        Command::Help(topic) => print(help_text(topic)),
        Command::Version => print(&format!("canary-router {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Schema => print(&schema::text()),
        Command::Validate(common) => validate::run(&common)?,
        Command::Explain(options) => explain::run(&options)?,
        Command::Simulate(options) => simulate::run(&options)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(arg) => {
                eprint(&format!(
                    "canary-router: argument {arg:?} is not UTF-8\nRun `canary-router --help` for usage.\n"
                ));
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    match run(&args) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure::Usage(e)) => {
            let hint = match e.command {
                Some(c) => format!("canary-router {c} --help"),
                None => "canary-router --help".to_string(),
            };
            eprint(&format!(
                "canary-router: {}\nRun `{hint}` for usage.\n",
                e.message
            ));
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Invalid {
            source,
            errors,
            json,
        }) => {
            // Errors always go to standard error; --json also gets them as JSON.
            if json {
                print(&validate::errors_json(&errors));
            }
            eprint(&validate::errors_text(&source, &errors));
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

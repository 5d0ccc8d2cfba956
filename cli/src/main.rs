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
mod pick;
mod rollouts;
mod schema;
mod simulate;
mod time;
mod validate;
mod visitors;
mod yaml;

use args::{Cli, Command, Common, UsageError};
use canary_router::config::{ConfigError, PluginConfig};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use std::io::Write;
use std::process::ExitCode;

/// Exit codes, as documented in `--help` and docs/cli.md#exit-codes.
pub const EXIT_OK: u8 = 0;
pub const EXIT_INVALID_CONFIG: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

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

/// What the filter's host layer (`on_configure` in src/filter/root.rs) says when Envoy
/// hands it no configuration bytes at all; `PluginConfig::from_json` never sees those.
const EMPTY_CONFIGURATION: &str =
    "the plugin configuration is empty: it must be a JSON object with at least `versions` (or `rollouts`)";

/// A loaded config and the moment to evaluate it at.
pub struct Loaded {
    pub source: String,
    /// Every rollout (one, unnamed, for a config without `rollouts`).
    pub plugin: PluginConfig,
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
    let plugin = PluginConfig::from_json(&json).map_err(|errors| match format {
        input::Format::Json => invalid(errors),
        // Positions in the JSON made from the YAML would only mislead; the field says where.
        input::Format::Yaml => invalid(errors.into_iter().map(input::without_position).collect()),
    })?;
    Ok(Loaded {
        source: source.clone(),
        plugin,
        now_ms,
        at_given: common.at.is_some(),
    })
}

/// Writes to standard output; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub fn eprint(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Schema => print(&schema::text()),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "canary-router", &mut script);
            print(&String::from_utf8_lossy(&script));
        }
        Command::Validate(common) => validate::run(&common)?,
        Command::Explain(options) => explain::run(&options)?,
        Command::Simulate(options) => simulate::run(&options)?,
    }
    Ok(())
}

/// A usage problem as the CLI reports every one: `canary-router: WHAT`, then where to
/// read the usage; exit code 2.
fn usage_failure(message: &str, command: Option<&str>) -> ExitCode {
    let hint = match command {
        Some(c) => format!("canary-router {c} --help"),
        None => "canary-router --help".to_string(),
    };
    eprint(&format!(
        "canary-router: {}\nRun `{hint}` for usage.\n",
        message.trim_end()
    ));
    ExitCode::from(EXIT_USAGE)
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = match Cli::try_parse_from(&args) {
        Ok(cli) => cli.command,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print(&e.to_string());
            return ExitCode::from(EXIT_OK);
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return usage_failure(
                "no command given (validate, explain, simulate, schema, completions)",
                None,
            );
        }
        Err(e) => {
            // clap's text without its `error: ` prefix and its closing pointer to
            // --help, which usage_failure gives in the CLI's own words.
            let text = e.to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            let text = text
                .trim_end()
                .strip_suffix("For more information, try '--help'.")
                .unwrap_or(text);
            return usage_failure(text, args::command_named(&args));
        }
    };
    match run(command) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure::Usage(e)) => usage_failure(&e.message, e.command),
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

//! The command line, parsed by hand: four subcommands with a few options each do
//! not need an argument-parsing crate.

use std::net::IpAddr;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Validate(Common),
    Explain(Explain),
    Simulate(Simulate),
    Schema,
    /// `--help`, `help`, `help COMMAND`, `COMMAND --help`.
    Help(Option<&'static str>),
    Version,
}

/// Options every config-reading command takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// A file name, or `-` for standard input.
    pub config: String,
    /// `--at`: when to evaluate ramps; `None` is now.
    pub at: Option<String>,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Explain {
    pub common: Common,
    /// `--header NAME=VALUE`, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// `--cookie NAME=VALUE`: they become one `cookie` header, in order.
    pub cookies: Vec<(String, String)>,
    pub source: Option<IpAddr>,
    pub guard_tripped: bool,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Simulate {
    pub common: Common,
    pub users: u64,
    /// Anonymous requests; `None` is as many as users.
    pub anonymous: Option<u64>,
    pub guard_tripped: bool,
    pub seed: Option<u64>,
}

pub const DEFAULT_SIMULATED_USERS: u64 = 100_000;
/// Enough for any split to show; a bound so that a typo cannot run for hours.
pub const MAX_SIMULATED: u64 = 100_000_000;

pub const COMMANDS: [&str; 4] = ["validate", "explain", "simulate", "schema"];

/// A command line that makes no sense: the message says why, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    /// The command whose usage to point at.
    pub command: Option<&'static str>,
}

fn usage(command: Option<&'static str>, message: impl Into<String>) -> UsageError {
    UsageError {
        message: message.into(),
        command,
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some(first) = args.first() else {
        return Err(usage(None, "no command given"));
    };
    let command: &'static str = match first.as_str() {
        "-h" | "--help" => return Ok(Command::Help(None)),
        "-V" | "--version" => return Ok(Command::Version),
        "help" => {
            return match args.get(1) {
                None => Ok(Command::Help(None)),
                Some(topic) => match COMMANDS.iter().find(|c| *c == topic) {
                    Some(c) => Ok(Command::Help(Some(c))),
                    None => Err(usage(None, format!("no command `{topic}`"))),
                },
            }
        }
        other => match COMMANDS.iter().find(|c| **c == other) {
            Some(c) => c,
            None if other.starts_with('-') => {
                return Err(usage(None, format!("unknown option `{other}`")))
            }
            None => return Err(usage(None, format!("no command `{other}`"))),
        },
    };
    let rest = &args[1..];
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help(Some(command)));
    }
    let mut p = Parser {
        command,
        args: rest,
        index: 0,
        only_positional: false,
    };
    let mut positional: Vec<String> = Vec::new();
    let mut at = None;
    let mut json = false;
    let mut headers = Vec::new();
    let mut cookies = Vec::new();
    let mut source = None;
    let mut guard_tripped = false;
    let mut seed = None;
    let mut users = None;
    let mut anonymous = None;
    while let Some(arg) = p.next_arg() {
        let Some((name, inline)) = p.option(&arg) else {
            positional.push(arg);
            continue;
        };
        let allowed: &[&str] = match command {
            "validate" => &["at", "json"],
            "explain" => &[
                "at",
                "json",
                "header",
                "cookie",
                "source",
                "guard-tripped",
                "seed",
            ],
            "simulate" => &["at", "json", "users", "anonymous", "guard-tripped", "seed"],
            _ => &[],
        };
        if !allowed.contains(&name.as_str()) {
            return Err(usage(
                Some(command),
                format!("`{command}` has no option --{name}"),
            ));
        }
        match name.as_str() {
            "json" | "guard-tripped" => {
                if inline.is_some() {
                    return Err(usage(Some(command), format!("--{name} takes no value")));
                }
                if name == "json" {
                    json = true;
                } else {
                    guard_tripped = true;
                }
            }
            _ => {
                let value = p.value(&name, inline)?;
                match name.as_str() {
                    "at" => at = Some(value),
                    "header" => headers.push(p.pair(&name, &value, true)?),
                    "cookie" => cookies.push(p.pair(&name, &value, false)?),
                    "source" => {
                        source = Some(value.parse::<IpAddr>().map_err(|_| {
                            usage(
                                Some(command),
                                format!("--source: `{value}` is not an IP address"),
                            )
                        })?)
                    }
                    "seed" => seed = Some(p.number(&name, &value, u64::MAX)?),
                    "users" => users = Some(p.number(&name, &value, MAX_SIMULATED)?),
                    _ => anonymous = Some(p.number(&name, &value, MAX_SIMULATED)?),
                }
            }
        }
    }
    if command == "schema" {
        if let Some(extra) = positional.first() {
            return Err(usage(
                Some(command),
                format!("`schema` takes no arguments (got `{extra}`)"),
            ));
        }
        return Ok(Command::Schema);
    }
    let config = match positional.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(usage(
                Some(command),
                "no CONFIG given (a file, or - for standard input)",
            ))
        }
        [_, extra, ..] => {
            return Err(usage(
                Some(command),
                format!("one CONFIG only (also got `{extra}`)"),
            ))
        }
    };
    let common = Common { config, at, json };
    Ok(match command {
        "validate" => Command::Validate(common),
        "explain" => Command::Explain(Explain {
            common,
            headers,
            cookies,
            source,
            guard_tripped,
            seed,
        }),
        _ => Command::Simulate(Simulate {
            common,
            users: users.unwrap_or(DEFAULT_SIMULATED_USERS),
            anonymous,
            guard_tripped,
            seed,
        }),
    })
}

struct Parser<'a> {
    command: &'static str,
    args: &'a [String],
    index: usize,
    only_positional: bool,
}

impl Parser<'_> {
    fn next_arg(&mut self) -> Option<String> {
        loop {
            let arg = self.args.get(self.index)?.clone();
            self.index += 1;
            if arg == "--" && !self.only_positional {
                self.only_positional = true;
                continue;
            }
            return Some(arg);
        }
    }

    /// `--name` or `--name=value` -> (name, inline value); `-` (stdin) and anything
    /// after `--` are positional.
    fn option(&self, arg: &str) -> Option<(String, Option<String>)> {
        if self.only_positional {
            return None;
        }
        let body = arg.strip_prefix("--")?;
        Some(match body.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (body.to_string(), None),
        })
    }

    fn value(&mut self, name: &str, inline: Option<String>) -> Result<String, UsageError> {
        if let Some(value) = inline {
            return Ok(value);
        }
        match self.args.get(self.index) {
            Some(value) => {
                self.index += 1;
                Ok(value.clone())
            }
            None => Err(usage(Some(self.command), format!("--{name} needs a value"))),
        }
    }

    /// `NAME=VALUE`, or for headers also `NAME: VALUE` (as curl writes them). Names
    /// cannot contain `=` or `:`, so the first of them ends the name.
    fn pair(&self, option: &str, text: &str, header: bool) -> Result<(String, String), UsageError> {
        let split = text
            .find(|c| c == '=' || (header && c == ':'))
            .filter(|&i| i > 0);
        let Some(i) = split else {
            return Err(usage(
                Some(self.command),
                format!("--{option}: `{text}` is not NAME=VALUE"),
            ));
        };
        let (name, value) = (&text[..i], &text[i + 1..]);
        let value = if text.as_bytes()[i] == b':' {
            value.trim_start()
        } else {
            value
        };
        let name = if header {
            // Envoy hands the filter header names in lower case.
            name.trim().to_ascii_lowercase()
        } else {
            name.to_string()
        };
        Ok((name, value.to_string()))
    }

    fn number(&self, option: &str, text: &str, max: u64) -> Result<u64, UsageError> {
        text.parse::<u64>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| {
                usage(
                    Some(self.command),
                    format!("--{option}: `{text}` is not a whole number from 0 to {max}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, UsageError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn common(config: &str) -> Common {
        Common {
            config: config.into(),
            at: None,
            json: false,
        }
    }

    #[test]
    fn commands_and_their_options() {
        assert_eq!(
            parse_str("validate c.json"),
            Ok(Command::Validate(common("c.json")))
        );
        assert_eq!(
            parse_str("validate - --json --at=2026-12-01T09:00:00Z"),
            Ok(Command::Validate(Common {
                config: "-".into(),
                at: Some("2026-12-01T09:00:00Z".into()),
                json: true
            }))
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
        assert_eq!(parse_str("schema"), Ok(Command::Schema));
        assert_eq!(
            parse_str("explain -- --odd-name.json"),
            Ok(Command::Explain(Explain {
                common: common("--odd-name.json"),
                headers: vec![],
                cookies: vec![],
                source: None,
                guard_tripped: false,
                seed: None
            }))
        );
    }

    #[test]
    fn curl_style_headers_keep_the_value_as_written() {
        let args: Vec<String> = ["explain", "c.json", "--header", "X-User-Id:  alice b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Ok(Command::Explain(e)) = parse(&args) else {
            panic!("not explain")
        };
        assert_eq!(
            e.headers,
            vec![("x-user-id".to_string(), "alice b".to_string())]
        );
    }

    #[test]
    fn help_and_version_anywhere() {
        assert_eq!(parse_str("--help"), Ok(Command::Help(None)));
        assert_eq!(parse_str("-h"), Ok(Command::Help(None)));
        assert_eq!(parse_str("help"), Ok(Command::Help(None)));
        assert_eq!(
            parse_str("help explain"),
            Ok(Command::Help(Some("explain")))
        );
        assert_eq!(
            parse_str("simulate c.json --users x --help"),
            Ok(Command::Help(Some("simulate")))
        );
        assert_eq!(parse_str("--version"), Ok(Command::Version));
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let message = |line: &str| parse_str(line).unwrap_err().message;
        assert_eq!(message(""), "no command given");
        assert_eq!(message("frobnicate"), "no command `frobnicate`");
        assert_eq!(message("--frob"), "unknown option `--frob`");
        assert_eq!(message("help frob"), "no command `frob`");
        assert_eq!(
            message("validate"),
            "no CONFIG given (a file, or - for standard input)"
        );
        assert_eq!(message("validate a b"), "one CONFIG only (also got `b`)");
        assert_eq!(
            message("validate c --users 5"),
            "`validate` has no option --users"
        );
        assert_eq!(message("explain c --header"), "--header needs a value");
        assert_eq!(
            message("explain c --header novalue"),
            "--header: `novalue` is not NAME=VALUE"
        );
        assert_eq!(
            message("explain c --cookie a:b"),
            "--cookie: `a:b` is not NAME=VALUE"
        );
        assert_eq!(
            message("explain c --source 10.0.0.0/8"),
            "--source: `10.0.0.0/8` is not an IP address"
        );
        assert_eq!(
            message("simulate c --users -5"),
            "--users: `-5` is not a whole number from 0 to 100000000"
        );
        assert_eq!(message("simulate c --json=yes"), "--json takes no value");
        assert_eq!(
            message("schema extra"),
            "`schema` takes no arguments (got `extra`)"
        );
    }
}

//! The built `canary-router` binary, run as operators run it: on the shared fixtures
//! (`tests/fixtures/configs/{good,bad}`), which it must accept and reject exactly as
//! the filter's parser does; against the committed `config.schema.json` and the
//! configuration reference (docs/configuration.md), which must never drift from the config types;
//! and each command's output and exit codes.
//!
//! Runs `target/release/canary-router` (`make cli`; see tests/cli_support).
//! `CANARY_ROUTER_BLESS=1` rewrites the `.expected` files of the bad fixtures (the
//! exact standard error of `validate`) instead of comparing them: review the diff.

mod cli_support;

use canary_router::config::{ConfigError, PluginConfig};
use cli_support::{
    code, filter_input, fixtures, is_yaml, name, repo_root, run, stderr, stdout, without_position,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

/// What the filter does with its configuration bytes in `on_configure`: no bytes
/// at all are refused by the host layer itself, anything else goes to
/// `PluginConfig::from_json`.
fn filter_parse(json: &[u8]) -> Result<PluginConfig, Vec<ConfigError>> {
    if json.is_empty() {
        return Err(vec![ConfigError {
            field: String::new(),
            message: "the plugin configuration is empty: it must be a JSON object with at least `versions` (or `rollouts`)".into(),
        }]);
    }
    PluginConfig::from_json(json)
}

/// Whole-document problems, which have no field to name.
const NO_FIELD: [&str; 5] = [
    "empty.json",
    "missing-versions.json",
    "not-an-object.json",
    "trailing-comma.json",
    "yaml-syntax-error.yaml",
];

#[test]
fn validate_accepts_every_good_fixture_as_the_filter_parser_does() {
    for path in fixtures("good") {
        let file = path.to_string_lossy().into_owned();
        let o = run(&["validate", &file], None);
        assert_eq!(code(&o), 0, "{file}: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{file}: {}", stderr(&o));
        let line = stdout(&o);
        assert!(
            line.starts_with("valid: ") && line.lines().count() == 1,
            "{file}: {line}"
        );
        let json = filter_input(&path).unwrap_or_else(|| panic!("{file}: no filter input"));
        if let Err(errors) = filter_parse(&json) {
            panic!("{file}: the filter's parser rejects it: {errors:?}");
        }
    }
}

#[test]
fn validate_rejects_every_bad_fixture_with_the_filter_parsers_errors() {
    let bless = std::env::var_os("CANARY_ROUTER_BLESS").is_some();
    for path in fixtures("bad") {
        let file = path.to_string_lossy().into_owned();
        let relative = path
            .strip_prefix(repo_root())
            .expect("under the repo")
            .to_string_lossy()
            .into_owned();
        let o = run(&["validate", &relative], None);
        assert_eq!(code(&o), 1, "{file} must be invalid: {}", stdout(&o));
        assert!(stdout(&o).is_empty(), "{file}: {}", stdout(&o));
        let err = stderr(&o);

        // Every error, each naming its field, then the count.
        let lines: Vec<&str> = err.lines().collect();
        let (last, errors) = lines.split_last().expect("some output");
        assert_eq!(
            *last,
            format!(
                "{relative}: config rejected ({} problem{})",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )
        );
        for line in errors {
            let message = line
                .strip_prefix("error: ")
                .unwrap_or_else(|| panic!("{file}: {line}"));
            let names_a_field = message
                .split_once(": ")
                .is_some_and(|(field, _)| !field.contains(' ') && !field.is_empty());
            assert!(
                names_a_field || NO_FIELD.contains(&name(&path).as_str()),
                "{file}: `{line}` names no field"
            );
        }

        // The same errors as the filter's own parser, in the same order.
        if let Some(json) = filter_input(&path) {
            let parsed = filter_parse(&json);
            let Err(filter_errors) = parsed else {
                panic!("{file}: the filter's parser accepts it, validate does not");
            };
            let expected: Vec<String> = filter_errors
                .iter()
                .map(|e: &ConfigError| {
                    let text = e.to_string();
                    let text = if is_yaml(&path) {
                        without_position(&text)
                    } else {
                        text
                    };
                    format!("error: {text}")
                })
                .collect();
            assert_eq!(errors, expected.as_slice(), "{file}");
        }

        // The exact text, reviewed once: it is what an operator reads.
        let golden = path.with_extension("expected");
        if bless {
            fs::write(&golden, &err).expect("write golden");
        } else {
            let want = fs::read_to_string(&golden).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run CANARY_ROUTER_BLESS=1 cargo test --release --test cli, and review it",
                    golden.display()
                )
            });
            assert_eq!(
                err,
                want,
                "{file}: stderr differs from {} (CANARY_ROUTER_BLESS=1 rewrites it)",
                golden.display()
            );
        }
    }
}

#[test]
fn every_bad_fixture_has_its_expected_output_and_no_expected_output_is_orphaned() {
    let dir = repo_root().join("tests/fixtures/configs/bad");
    let configs: BTreeSet<String> = fixtures("bad")
        .iter()
        .map(|p| name(&p.with_extension("")))
        .collect();
    for entry in fs::read_dir(&dir).expect("bad dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("expected") {
            let stem = name(&path.with_extension(""));
            assert!(
                configs.contains(&stem),
                "{} belongs to no fixture",
                path.display()
            );
        }
    }
}

// ---- config.schema.json ------------------------------------------------------------

fn committed_schema() -> Value {
    let text = fs::read_to_string(repo_root().join("config.schema.json"))
        .expect("config.schema.json at the repository root");
    serde_json::from_str(&text).expect("config.schema.json is JSON")
}

#[test]
fn the_committed_schema_is_the_one_generated_from_the_config_types() {
    let o = run(&["schema"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let committed = fs::read_to_string(repo_root().join("config.schema.json")).unwrap_or_default();
    assert!(
        stdout(&o) == committed,
        "config.schema.json is out of date with the config types in core/src/config/: run `make schema` and commit it"
    );
}

/// `foo[i].bar` and `foo[0].bar` are both `foo[].bar`.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                root,
                root.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {reference}")),
            )
        }
        None => schema,
    }
}

/// The schemas an instance of `schema` may be: through `$ref`, and the `$ref` of
/// a nullable `anyOf` (an `Option` of a struct). Other `anyOf`s only add rules.
fn alternatives<'a>(root: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(root, schema);
    let mut out = vec![schema];
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        for s in any.iter().filter(|s| s.get("$ref").is_some()) {
            out.push(resolve(root, s));
        }
    }
    out
}

/// Every field path in the schema: `versions[].schedule.steps[].after`, with the
/// required flag and the default of each.
fn schema_fields(
    root: &Value,
    schema: &Value,
    prefix: &str,
    out: &mut BTreeMap<String, (bool, Option<Value>)>,
) {
    for s in alternatives(root, schema) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (key, sub) in props {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(
                    path.clone(),
                    (
                        required.contains(&key.as_str()),
                        sub.get("default").cloned(),
                    ),
                );
                schema_fields(root, sub, &path, out);
            }
        }
        if let Some(item) = s.get("items") {
            schema_fields(root, item, &format!("{prefix}[]"), out);
        }
    }
}

/// The rows of the configuration reference's table (docs/configuration.md, section
/// "Fields"): field -> default cell.
fn reference_fields() -> BTreeMap<String, String> {
    let page = fs::read_to_string(repo_root().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let start = page.find("\n## Fields\n").expect("a Fields section") + 1;
    let section = &page[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut rows = BTreeMap::new();
    for line in section[..end].lines() {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(field) = cells
            .first()
            .and_then(|c| c.strip_prefix("| `"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let default = cells.get(2).copied().unwrap_or_default().to_string();
        rows.insert(normalize(field), default);
    }
    assert!(
        rows.len() > 20,
        "docs/configuration.md: fields table not found: {rows:?}"
    );
    rows
}

/// The per-service fields, which a rollout holds as the top level of a
/// single-service config does.
const PER_SERVICE: [&str; 7] = [
    "route_header",
    "versions",
    "override",
    "users",
    "hash",
    "anonymous",
    "guard",
];

#[test]
fn the_configuration_reference_documents_every_field_of_the_schema_and_no_other() {
    let schema = committed_schema();
    let mut fields = BTreeMap::new();
    schema_fields(&schema, &schema, "", &mut fields);
    // Inside a rollout, what lies below a per-service field (`rollouts[].versions[].name`)
    // is documented once, by the top-level row (`versions[].name`); the rollout's own
    // fields (`rollouts[].versions`, `rollouts[].match.hosts`) have rows of their own.
    fields.retain(|path, _| {
        let Some(inner) = path.strip_prefix("rollouts[].") else {
            return true;
        };
        let top = inner.split(['.', '[']).next().unwrap_or_default();
        let below = inner.len() > top.len();
        if below && PER_SERVICE.contains(&top) {
            assert!(
                schema["properties"].get(top).is_some(),
                "{path}: rollouts[].{top} is documented by the top-level {top}, which the schema lacks"
            );
            return false;
        }
        true
    });
    let documented = reference_fields();
    let in_schema: BTreeSet<&String> = fields.keys().collect();
    let in_reference: BTreeSet<&String> = documented.keys().collect();
    let undocumented: Vec<_> = in_schema.difference(&in_reference).collect();
    let unknown: Vec<_> = in_reference.difference(&in_schema).collect();
    assert!(
        undocumented.is_empty(),
        "fields of the config missing from docs/configuration.md's fields table: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents fields the config does not have: {unknown:?}"
    );
    for (field, (required, default)) in &fields {
        let cell = &documented[field];
        if *required {
            assert!(
                cell.starts_with("required"),
                "{field} is required in the schema; docs/configuration.md says `{cell}`"
            );
        } else {
            assert!(
                cell == "required for `i ≥ 1`" || !cell.starts_with("required"),
                "{field} is optional in the schema; docs/configuration.md says `{cell}`"
            );
        }
        if let Some(default) = default {
            let want = format!("`{}`", serde_json::to_string(default).expect("JSON"));
            assert_eq!(
                cell, &want,
                "{field}: docs/configuration.md's default differs from the schema's"
            );
        }
    }
}

#[test]
fn the_schema_reflects_the_parsers_rules() {
    let schema = committed_schema();
    let defs = &schema["$defs"];
    assert_eq!(schema["additionalProperties"], false);
    for (name, def) in defs.as_object().expect("$defs") {
        if def.get("properties").is_some() {
            assert_eq!(
                def["additionalProperties"], false,
                "{name}: unknown fields are errors (deny_unknown_fields)"
            );
        }
    }
    // One service (versions) or several (rollouts), never both.
    assert_eq!(schema.get("required"), None);
    let one_of: Vec<&Value> = schema["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|s| &s["required"])
        .collect();
    assert_eq!(
        one_of,
        [
            &serde_json::json!(["versions"]),
            &serde_json::json!(["rollouts"])
        ]
    );
    let rollouts = &schema["properties"]["rollouts"];
    assert_eq!(
        (&rollouts["minItems"], &rollouts["maxItems"]),
        (&Value::from(1), &Value::from(1000))
    );
    assert_eq!(
        defs["Rollout"]["required"],
        serde_json::json!(["name", "versions"])
    );
    let versions = &schema["properties"]["versions"];
    assert_eq!(
        (&versions["minItems"], &versions["maxItems"]),
        (&Value::from(1), &Value::from(16))
    );
    let name = &defs["Version"]["properties"]["name"];
    assert_eq!(name["pattern"], "^[A-Za-z0-9._-]+$");
    assert_eq!(
        (&name["minLength"], &name["maxLength"]),
        (&Value::from(1), &Value::from(63))
    );
    let weight = &defs["Version"]["properties"]["weight"];
    assert_eq!(
        (&weight["minimum"], &weight["maximum"]),
        (&Value::from(0), &Value::from(100))
    );
    let allowed: Vec<Value> = canary_router::config::ALLOWED_BUCKETS
        .iter()
        .map(|&b| Value::from(b))
        .chain([Value::Null])
        .collect();
    assert_eq!(
        defs["Hash"]["properties"]["buckets"]["enum"],
        Value::from(allowed)
    );
    let anonymous: Vec<&Value> = defs["Anonymous"]["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|v| &v["const"])
        .collect();
    assert_eq!(
        anonymous,
        [
            &Value::from("random"),
            &Value::from("baseline"),
            &Value::from("cookie")
        ]
    );
    // Descriptions come from the doc comments, one paragraph each.
    assert!(schema["properties"]["route_header"]["description"]
        .as_str()
        .is_some_and(|d| d.starts_with("The request header") && !d.contains('\n')));
}

/// Bad fixtures whose only problems are ones JSON Schema cannot express (sums,
/// cross-references, weights in whole buckets): the schema accepts them, `validate`
/// does not.
const SCHEMA_CANNOT_TELL: [&str; 5] = [
    "route-header-as-input.json",
    "rollouts-duplicate-names.yaml",
    "users-errors.yaml",
    "weight-precision.yaml",
    "weights-above-100-in-total.json",
];

#[test]
fn the_schema_accepts_every_good_config_and_rejects_the_bad_ones_it_can_tell() {
    let schema = committed_schema();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("config.schema.json is a valid JSON Schema");
    for path in fixtures("good") {
        let json = filter_input(&path).expect("filter input");
        let instance: Value = serde_json::from_slice(&json).expect("JSON");
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}: the schema rejects a config the filter accepts: {errors:?}",
            name(&path)
        );
    }
    for path in fixtures("bad") {
        let Some(json) = filter_input(&path) else {
            continue;
        };
        let Ok(instance) = serde_json::from_slice::<Value>(&json) else {
            continue; // not JSON at all
        };
        let valid = validator.is_valid(&instance);
        let file = name(&path);
        if SCHEMA_CANNOT_TELL.contains(&file.as_str()) {
            assert!(valid, "{file} is listed as beyond the schema, yet the schema rejects it: take it off the list");
        } else {
            assert!(
                !valid,
                "{file}: the schema accepts a config the filter rejects"
            );
        }
    }
}

// ---- the commands ------------------------------------------------------------------

const DOCUMENTED: &str = "tests/fixtures/configs/good/documented.json";
const PROTECTED: &str = "tests/fixtures/configs/good/override-protected.json";
const RAMP: &str = "tests/fixtures/configs/good/ramp.json";
const GUARD: &str = "tests/fixtures/configs/good/guard.json";
const THREE: &str = "tests/fixtures/configs/good/three-versions.yaml";

fn json_out(args: &[&str]) -> Value {
    let o = run(args, None);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

fn explain(config: &str, extra: &[&str]) -> Value {
    let mut args = vec!["explain", config, "--json"];
    args.extend_from_slice(extra);
    json_out(&args)
}

#[test]
fn help_and_version_exit_0_and_name_every_command_and_exit_code() {
    let o = run(&["--help"], None);
    assert_eq!(code(&o), 0);
    let help = stdout(&o);
    for needle in [
        "validate",
        "explain",
        "simulate",
        "schema",
        "Exit codes",
        "  0 ",
        "  1 ",
        "  2 ",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    for command in ["validate", "explain", "simulate", "schema"] {
        for args in [vec![command, "--help"], vec!["help", command]] {
            let o = run(&args, None);
            assert_eq!(code(&o), 0, "{args:?}");
            assert!(
                stdout(&o).starts_with(&format!("canary-router {command}")),
                "{args:?}: {}",
                stdout(&o)
            );
        }
    }
    let manifest = fs::read_to_string(repo_root().join("cli/Cargo.toml")).expect("cli/Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a version");
    let o = run(&["--version"], None);
    assert_eq!(stdout(&o), format!("canary-router {version}\n"));
}

#[test]
fn usage_errors_exit_2_on_standard_error_with_a_pointer_to_help() {
    for args in [
        vec![],
        vec!["deploy"],
        vec!["validate"],
        vec!["validate", DOCUMENTED, "--users", "5"],
        vec!["explain", DOCUMENTED, "--header", "novalue"],
        vec!["explain", DOCUMENTED, "--at", "next tuesday"],
        vec!["simulate", DOCUMENTED, "--users", "many"],
        vec!["validate", "no/such/config.json"],
    ] {
        let o = run(&args, None);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("canary-router: ") && err.contains("--help` for usage"),
            "{args:?}: {err}"
        );
    }
    let err = stderr(&run(&["validate", "no/such/config.json"], None));
    assert!(err.contains("cannot read no/such/config.json"), "{err}");
}

#[test]
fn config_from_standard_input_as_json_yaml_or_a_manifest() {
    for fixture in [
        DOCUMENTED,
        THREE,
        "tests/fixtures/configs/good/wasmplugin.yaml",
    ] {
        let bytes = fs::read(repo_root().join(fixture)).expect("fixture");
        let from_file = run(&["validate", fixture], None);
        let from_stdin = run(&["validate", "-"], Some(&bytes));
        assert_eq!(code(&from_stdin), 0, "{fixture}: {}", stderr(&from_stdin));
        assert_eq!(stdout(&from_stdin), stdout(&from_file), "{fixture}");
    }
    let o = run(
        &["validate", "-"],
        Some(b"versions: [{name: s}, {name: c}]\n"),
    );
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "error: versions[1].weight: missing: every version after the first needs a weight (a percentage from 0 to 100) or a schedule\n<stdin>: config rejected (1 problem)\n"
    );
}

#[test]
fn validate_summarises_versions_weights_and_guard_on_one_line() {
    let o = run(&["validate", DOCUMENTED], None);
    assert_eq!(
        stdout(&o),
        "valid: 2 versions: stable 90%, canary 10%; no guard\n"
    );
    let o = run(&["validate", GUARD], None);
    assert_eq!(
        stdout(&o),
        "valid: 2 versions: stable 90%, canary 10%; guard on canary: trips when more than 5% of its responses fail and its rate exceeds the baseline's by 2 points (at least 50 in a 30s window), then sends canary's traffic to stable for 10m; a gRPC call fails on UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS\n"
    );
    let o = run(&["validate", RAMP, "--at", "2026-12-01T09:45:00Z"], None);
    assert_eq!(
        stdout(&o),
        "valid: 2 versions, at 2026-12-01T09:45:00Z: stable 75%, canary 25% (ramp: 1% at 2026-12-01T09:00:00Z to 100% at 2026-12-01T11:00:00Z); no guard\n"
    );
    let v = json_out(&["validate", RAMP, "--json", "--at", "2026-12-01T10:00:00Z"]);
    assert_eq!(v["valid"], true);
    assert_eq!(v["versions"][1]["weight"], 50.0);
    assert_eq!(v["versions"][1]["scheduled"], true);
}

#[test]
fn validate_json_reports_errors_on_stdout_and_stderr() {
    let o = run(
        &[
            "validate",
            "tests/fixtures/configs/bad/weight-above-100.json",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({"valid": false, "errors": [{"field": "versions[1].weight", "message": "120 is above 100"}]})
    );
    assert!(stderr(&o).contains("error: versions[1].weight: 120 is above 100"));
}

#[test]
fn explain_gives_version_reason_and_bucket_for_each_rule() {
    // Sticky hashing, by header and by cookie; the header wins.
    let alice = explain(DOCUMENTED, &["--header", "x-user-id=alice"]);
    assert_eq!(alice["reason"], "hash");
    assert_eq!(alice["buckets"], 10000);
    let bucket = canary_router::bucket::bucket_of(b"checkout-v2:", b"alice", 10000);
    assert_eq!(alice["bucket"], bucket);
    assert_eq!(
        alice["version"],
        if bucket <= 1000 { "canary" } else { "stable" }
    );
    let by_cookie = explain(DOCUMENTED, &["--cookie", "uid=alice"]);
    assert_eq!(
        (&by_cookie["version"], &by_cookie["bucket"]),
        (&alice["version"], &alice["bucket"])
    );
    let both = explain(
        DOCUMENTED,
        &["--cookie", "uid=bob", "--header", "X-User-Id: alice"],
    );
    assert_eq!(both["bucket"], alice["bucket"]);

    // Listed users, overrides, an override naming no version.
    let listed = explain(DOCUMENTED, &["--header", "x-user-id=qa-alice"]);
    assert_eq!(
        (&listed["version"], &listed["reason"], &listed["bucket"]),
        (
            &Value::from("canary"),
            &Value::from("user_list"),
            &Value::Null
        )
    );
    let forced = explain(DOCUMENTED, &["--cookie", "canary=canary"]);
    assert_eq!(
        (&forced["version"], &forced["reason"]),
        (&Value::from("canary"), &Value::from("override"))
    );
    let unknown = explain(
        DOCUMENTED,
        &[
            "--header",
            "x-canary=nightly",
            "--header",
            "x-user-id=alice",
        ],
    );
    assert_eq!(unknown["reason"], "hash");
    assert_eq!(
        unknown["notes"][0],
        "the override header x-canary is \"nightly\", which names no version: ignored"
    );

    // No user ID: a random draw (reproducible by seed), or the baseline.
    let at = "2026-12-01T09:00:00Z";
    let drawn = explain(DOCUMENTED, &["--seed", "7", "--at", at]);
    assert_eq!(drawn["reason"], "random");
    assert_eq!(drawn, explain(DOCUMENTED, &["--seed", "7", "--at", at]));
    let empty_id = explain(THREE, &["--header", "x-user-id="]);
    assert_eq!(
        (&empty_id["version"], &empty_id["reason"]),
        (&Value::from("stable"), &Value::from("baseline"))
    );

    // A tripped guard sends the guarded version's users to the baseline.
    let canary_user = (0..)
        .map(|i| format!("u{i}"))
        .find(|id| explain(GUARD, &["--cookie", &format!("uid={id}")])["version"] == "canary")
        .expect("some user is in the canary");
    let tripped = explain(
        GUARD,
        &["--cookie", &format!("uid={canary_user}"), "--guard-tripped"],
    );
    assert_eq!(
        (&tripped["version"], &tripped["reason"]),
        (&Value::from("stable"), &Value::from("guard"))
    );
}

#[test]
fn explain_text_says_why() {
    let o = run(
        &[
            "explain",
            DOCUMENTED,
            "--header",
            "x-user-id=qa-alice",
            "--header",
            "x-canary=nightly",
        ],
        None,
    );
    assert_eq!(
        stdout(&o),
        "version: canary\nreason:  user_list\nwhy:     user ID \"qa-alice\" (from header x-user-id) is listed under users.canary\nnote:    the override header x-canary is \"nightly\", which names no version: ignored\nsets:    x-canary-version: canary\n"
    );
    let o = run(
        &[
            "explain",
            RAMP,
            "--header",
            "x-user-id=alice",
            "--at",
            "2026-12-01T09:00:00Z",
        ],
        None,
    );
    let bucket = canary_router::bucket::bucket_of(b"", b"alice", 10000);
    let version = if bucket <= 100 { "canary" } else { "stable" };
    assert_eq!(
        stdout(&o),
        format!("version: {version}\nreason:  hash\nbucket:  {bucket} of 10000\nwhy:     user ID \"alice\" (from header x-user-id): murmur3(\"alice\") % 10000 + 1 = bucket {bucket}; buckets: canary 1-100; stable the rest\nat:      2026-12-01T09:00:00Z\nsets:    x-canary-version: {version}\n")
    );
}

#[test]
fn explain_honours_override_tokens_and_trusted_sources() {
    let user = ["--header", "x-user-id=alice"];
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = user.to_vec();
        args.extend_from_slice(extra);
        explain(PROTECTED, &args)
    };
    let token = ["--header", "x-canary-token=0123456789abcdef"];
    let ok = with(&[
        "--header",
        "x-canary=canary",
        token[0],
        token[1],
        "--source",
        "10.1.2.3",
    ]);
    assert_eq!(
        (&ok["version"], &ok["reason"]),
        (&Value::from("canary"), &Value::from("override"))
    );
    let no_token = with(&["--header", "x-canary=canary", "--source", "10.1.2.3"]);
    assert_eq!(no_token["reason"], "hash");
    assert_eq!(
        no_token["notes"],
        serde_json::json!(["the override is ignored: override.token is set and the request has no x-canary-token header"])
    );
    let no_source = with(&["--header", "x-canary=canary", token[0], token[1]]);
    assert_eq!(no_source["reason"], "hash");
    assert!(no_source["notes"][0]
        .as_str()
        .is_some_and(|n| n.contains("client address is unknown (give --source IP)")));
    let untrusted = with(&[
        "--header",
        "x-canary=canary",
        token[0],
        token[1],
        "--source",
        "203.0.113.9",
    ]);
    assert_eq!(untrusted["reason"], "hash");
    assert_eq!(
        untrusted["notes"][0],
        "the override is ignored: client 203.0.113.9 is not in override.trusted_sources"
    );
}

#[test]
fn simulate_splits_users_and_anonymous_requests_by_the_weights() {
    let v = json_out(&["simulate", DOCUMENTED, "--users", "20000", "--json"]);
    assert_eq!(v["users"]["requests"], 20000);
    assert_eq!(v["users"]["id_source"], "header x-user-id");
    assert_eq!(v["users"]["within_4_sigma"], true);
    assert_eq!(v["anonymous"]["requests"], 20000);
    assert_eq!(v["anonymous"]["within_4_sigma"], true);
    let canary = &v["versions"][1];
    assert_eq!(canary["weight"], 10.0);
    // Exactly the formula, user by user.
    let in_canary = (0..20000)
        .filter(|i| {
            canary_router::bucket::bucket_of(b"checkout-v2:", format!("user-{i}").as_bytes(), 10000)
                <= 1000
        })
        .count();
    assert_eq!(canary["users"]["count"], in_canary);
    assert_eq!(canary["users"]["reasons"]["hash"], in_canary);
    let random: u64 = (0..2)
        .map(|i| {
            v["versions"][i]["anonymous"]["reasons"]["random"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(random, 20000);

    // anonymous: baseline sends every anonymous request to the first version.
    let v = json_out(&[
        "simulate",
        THREE,
        "--users",
        "1000",
        "--anonymous",
        "50",
        "--json",
    ]);
    assert_eq!(v["versions"][0]["anonymous"]["reasons"]["baseline"], 50);
    assert_eq!(v["anonymous"]["within_4_sigma"], true);

    // A tripped guard leaves its version nothing.
    let v = json_out(&[
        "simulate",
        GUARD,
        "--users",
        "2000",
        "--guard-tripped",
        "--json",
    ]);
    assert_eq!(v["versions"][1]["users"]["count"], 0);
    assert_eq!(v["versions"][1]["anonymous"]["count"], 0);
    assert!(v["versions"][0]["users"]["reasons"]["guard"].as_u64() > Some(100));
    assert_eq!(v["users"]["within_4_sigma"], true);
}

#[test]
fn simulate_text_is_a_table_against_the_weights() {
    let o = run(
        &[
            "simulate",
            THREE,
            "--users",
            "10000",
            "--at",
            "2026-12-01T09:00:00Z",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "at 2026-12-01T09:00:00Z, 100 buckets");
    assert_eq!(
        lines[1],
        "users:     10000 synthetic user IDs (user-0 to user-9999) in header x-user-id"
    );
    assert_eq!(
        lines[2],
        "anonymous: 10000 requests without a user ID (anonymous: baseline)"
    );
    assert!(
        lines[4].starts_with("version     weight  users (hash)")
            && lines[4].ends_with("anonymous (baseline)"),
        "{text}"
    );
    assert!(lines[5].starts_with("stable      85% "), "{text}");
    assert!(lines[6].starts_with("canary      10% "), "{text}");
    assert!(lines[7].starts_with("experiment  5% "), "{text}");
    assert!(text.contains("listed:    stable 1, canary 2: always that version (reason user_list), not among the synthetic IDs\n"), "{text}");
    assert!(text.contains("users:     every share is within 4 sigma of the expected stable 85%, canary 10%, experiment 5%\n"), "{text}");
    assert!(text.contains("anonymous: every share is within 4 sigma of the expected stable 100%, canary 0%, experiment 0%\n"), "{text}");
}

const VISITORS: &str = "tests/fixtures/configs/good/visitor-cookie.json";

#[test]
fn validate_names_the_visitor_cookie_and_warns_of_attributes_that_do_nothing() {
    let o = run(&["validate", VISITORS], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "valid: 2 versions: stable 90%, canary 10%; new visitors get an ID in cookie visitor (Max-Age 180d, Path /, Domain shop.example.com, SameSite Lax, Secure, HttpOnly); no guard\n"
    );
    let v = json_out(&["validate", VISITORS, "--json"]);
    assert_eq!(v["anonymous"], "cookie");
    assert_eq!(
        v["visitor_cookie"],
        serde_json::json!({"name": "visitor", "set_cookie_attributes": "; Max-Age=15552000; Path=/; Domain=shop.example.com; SameSite=Lax; Secure; HttpOnly"})
    );
    assert_eq!(v["warnings"], serde_json::json!([]));

    // Attributes without anonymous: cookie are taken (a mesh config is not refused
    // for them), with a warning on standard error.
    let config = r#"{"versions":[{"name":"stable"}],"hash":{"cookie":"visitor","cookie_attributes":{"max_age":"30d"}}}"#;
    let o = run(&["validate", "-"], Some(config.as_bytes()));
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o), "valid: 1 version: stable 100%; no guard\n");
    assert_eq!(
        stderr(&o),
        "warning: hash.cookie_attributes: has no effect: only anonymous: \"cookie\" sets a cookie\n"
    );
    let o = run(&["validate", "-", "--json"], Some(config.as_bytes()));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(
        v["warnings"],
        serde_json::json!([{"field": "hash.cookie_attributes", "message": "has no effect: only anonymous: \"cookie\" sets a cookie"}])
    );
}

#[test]
fn explain_says_a_new_visitor_is_issued_an_id_and_decided_on_it() {
    let at = "2026-12-01T09:00:00Z";
    let first = explain(VISITORS, &["--seed", "5", "--at", at]);
    assert_eq!(first["reason"], "hash");
    let id = first["visitor_id"]
        .as_str()
        .expect("an issued ID")
        .to_string();
    assert_eq!(id.len(), 22);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(first["cookie"], format!("visitor={id}"));
    assert_eq!(
        first["set_cookie"],
        format!("visitor={id}; Max-Age=15552000; Path=/; Domain=shop.example.com; SameSite=Lax; Secure; HttpOnly")
    );
    let bucket = canary_router::bucket::bucket_of(b"shop:", id.as_bytes(), 10000);
    assert_eq!(first["bucket"], bucket);
    // Its later requests carry the cookie: the same decision, and no new ID.
    let later = explain(
        VISITORS,
        &["--cookie", &format!("visitor={id}"), "--cookie", "a=1"],
    );
    assert_eq!(
        (&later["version"], &later["reason"], &later["bucket"]),
        (&first["version"], &first["reason"], &first["bucket"])
    );
    assert_eq!(
        (&later["visitor_id"], &later["set_cookie"]),
        (&Value::Null, &Value::Null)
    );
    // Other cookies stay in the request's Cookie, before the ID.
    let with_other = explain(VISITORS, &["--seed", "5", "--cookie", "theme=dark"]);
    assert_eq!(with_other["cookie"], format!("theme=dark; visitor={id}"));
    // A user ID from the header: no ID issued. A gRPC call: none, drawn as random.
    let user = explain(VISITORS, &["--header", "x-user-id=alice"]);
    assert_eq!(
        (&user["reason"], &user["visitor_id"]),
        (&Value::from("hash"), &Value::Null)
    );
    let grpc = explain(VISITORS, &["--header", "content-type=application/grpc"]);
    assert_eq!(
        (&grpc["reason"], &grpc["visitor_id"]),
        (&Value::from("random"), &Value::Null)
    );
    // An override wins, and the ID is issued all the same.
    let forced = explain(VISITORS, &["--seed", "5", "--header", "x-canary=canary"]);
    assert_eq!(
        (&forced["version"], &forced["reason"], &forced["visitor_id"]),
        (
            &Value::from("canary"),
            &Value::from("override"),
            &Value::from(id.as_str())
        )
    );

    let o = run(&["explain", VISITORS, "--seed", "5"], None);
    let text = stdout(&o);
    assert!(text.contains(&format!("why:     no user ID (no non-empty header x-user-id or cookie visitor); anonymous: cookie issues the new visitor ID \"{id}\"")), "{text}");
    assert!(
        text.contains("New visitors land at the weights: stable 90%, canary 10%\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cookie:  visitor={id} (the request's Cookie, as the upstream sees it)\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "answers: Set-Cookie: visitor={id}; Max-Age=15552000;"
        )),
        "{text}"
    );
}

#[test]
fn simulate_counts_new_and_returning_visitors() {
    let v = json_out(&[
        "simulate",
        VISITORS,
        "--users",
        "0",
        "--anonymous",
        "20000",
        "--json",
    ]);
    assert_eq!(v["anonymous"]["policy"], "cookie");
    assert_eq!(v["anonymous"]["visitor_ids_issued"], 20000);
    assert_eq!(v["anonymous"]["within_4_sigma"], true);
    // Each comes back once by default, with its cookie: nobody moves.
    assert_eq!(v["returning"]["returns_per_visitor"], 1);
    assert_eq!(v["returning"]["requests"], 20000);
    assert_eq!(v["returning"]["visitors_who_saw_another_version"], 0);
    for i in 0..2 {
        let version = &v["versions"][i];
        assert_eq!(version["anonymous"]["count"], version["returning"]["count"]);
        assert_eq!(
            version["anonymous"]["count"],
            version["anonymous"]["reasons"]["hash"]
        );
    }
    // Back after a ramp step: some move into the canary, none leave it.
    let ramp = r#"{"versions":[{"name":"stable"},{"name":"canary","schedule":{"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":10},{"after":"1h","weight":25}]}}],"hash":{"cookie":"vid"},"anonymous":"cookie"}"#;
    let o = run(
        &[
            "simulate",
            "-",
            "--users",
            "0",
            "--anonymous",
            "20000",
            "--returns",
            "2",
            "--at",
            "2026-12-01T09:30:00Z",
            "--return-at",
            "2026-12-01T10:30:00Z",
            "--json",
        ],
        Some(ramp.as_bytes()),
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    let moved = v["returning"]["visitors_who_saw_another_version"]
        .as_u64()
        .unwrap();
    assert_eq!(v["returning"]["visitors_who_left_their_version"], 0);
    let new_canary = v["versions"][1]["anonymous"]["count"].as_u64().unwrap();
    let returning_canary = v["versions"][1]["returning"]["count"].as_u64().unwrap();
    assert_eq!(returning_canary, 2 * (new_canary + moved));
    // 15% of the visitors move: within 4 sigma.
    let sigma = (20000.0f64 * 0.15 * 0.85).sqrt();
    assert!((moved as f64 - 3000.0).abs() < 4.0 * sigma, "{moved}");

    // anonymous: random, the same visitors: they flip.
    let random = ramp.replace(r#""anonymous":"cookie""#, r#""anonymous":"random""#);
    let o = run(
        &[
            "simulate",
            "-",
            "--users",
            "0",
            "--anonymous",
            "20000",
            "--returns",
            "2",
            "--at",
            "2026-12-01T09:30:00Z",
            "--json",
        ],
        Some(random.as_bytes()),
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    let moved = v["returning"]["visitors_who_saw_another_version"]
        .as_u64()
        .unwrap();
    // 1 - P(same version three times) = 1 - (0.9^3 + 0.1^3) = 0.27.
    let sigma = (20000.0f64 * 0.27 * 0.73).sqrt();
    assert!((moved as f64 - 5400.0).abs() < 4.0 * sigma, "{moved}");

    let o = run(
        &["simulate", VISITORS, "--users", "0", "--anonymous", "1000"],
        None,
    );
    let text = stdout(&o);
    assert!(text.contains("anonymous: 1000 new visitors without a user ID (anonymous: cookie): each is issued a visitor ID in cookie visitor (Max-Age 180d, Path /, Domain shop.example.com, SameSite Lax, Secure, HttpOnly) and decided on it\n"), "{text}");
    assert!(text.contains("returning: each visitor comes back 1 time with its cookie: 1000 requests; 0 of 1000 visitors saw another version than on their first visit, 0 left the version (not the baseline) they first saw\n"), "{text}");
    assert!(
        text.contains("new visitors (hash)  returning (hash)"),
        "{text}"
    );
}

#[test]
fn schema_prints_json_schema() {
    let o = run(&["schema"], None);
    assert_eq!(code(&o), 0);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(v["title"], "canary-router plugin config");
}

#[test]
fn every_shipped_manifest_and_bootstrap_config_is_valid_for_the_cli_and_the_schema() {
    let schema = committed_schema();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let mut manifests = Vec::new();
    let mut dirs = vec![repo_root().join("istio")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if is_yaml(&path)
                && fs::read_to_string(&path).is_ok_and(|t| t.contains("kind: WasmPlugin"))
            {
                manifests.push(path);
            }
        }
    }
    manifests.sort();
    assert!(
        manifests.len() >= 3,
        "WasmPlugin manifests under istio/: {manifests:?}"
    );
    for path in &manifests {
        let file = path.to_string_lossy().into_owned();
        let o = run(&["validate", &file], None);
        assert_eq!(code(&o), 0, "{file}: {}", stderr(&o));
        let json = filter_input(path).expect("a pluginConfig");
        let instance: Value = serde_json::from_slice(&json).expect("JSON");
        assert!(
            validator.is_valid(&instance),
            "{file}: config.schema.json rejects its pluginConfig"
        );
    }
    // The bootstrap that `make demo` and the end-to-end tests run.
    let config = harness_plugin_config();
    let o = run(&["validate", "-"], Some(config.as_bytes()));
    assert_eq!(code(&o), 0, "envoy/envoy.yaml: {}", stderr(&o));
    let instance: Value = serde_json::from_str(&config).expect("JSON");
    assert!(validator.is_valid(&instance), "envoy/envoy.yaml's config");
}

/// The plugin configuration string in envoy/envoy.yaml.
fn harness_plugin_config() -> String {
    let text = fs::read_to_string(repo_root().join("envoy/envoy.yaml")).expect("envoy.yaml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    fn find(v: &serde_yaml::Value) -> Option<String> {
        match v {
            serde_yaml::Value::Mapping(m) => {
                if m.get("name").and_then(|n| n.as_str()) == Some("canary-router") {
                    if let Some(s) = v["typed_config"]["config"]["configuration"]["value"].as_str()
                    {
                        return Some(s.to_string());
                    }
                }
                m.values().find_map(find)
            }
            serde_yaml::Value::Sequence(s) => s.iter().find_map(find),
            _ => None,
        }
    }
    find(&yaml).expect("the canary-router filter's configuration in envoy/envoy.yaml")
}

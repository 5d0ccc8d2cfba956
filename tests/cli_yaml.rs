//! The built `canary-router` reads YAML as Kubernetes does (YAML 1.1 plain scalars), so
//! a config means to the CLI what it means to the filter behind Istio; and it prints
//! shell completions.
//!
//! Runs `target/release/canary-router` (`make cli`; see tests/cli_support).

mod cli_support;

use canary_router::config::{Config, Weight};
use cli_support::{code, run, stderr, stdout};

/// The JSON string Istio hands the filter for the `pluginConfig` below: kubectl turns
/// the manifest into JSON with sigs.k8s.io/yaml (YAML 1.1: a plain `yes` is true), the
/// API server keeps it, and Istio writes the `google.protobuf.Struct` back as JSON.
const ISTIO_JSON: &str = r#"{"versions":[{"name":"stable"},{"name":"canary","schedule":{"interpolate":true,"start":"2026-12-01T09:00:00Z","steps":[{"after":"0s","weight":1},{"after":"2h","weight":100}]}}]}"#;

const PLUGIN_CONFIG: &str = "\
versions:
- name: stable
- name: canary
  schedule:
    start: 2026-12-01T09:00:00Z
    steps: [{after: 0s, weight: 1}, {after: 2h, weight: 100}]
    interpolate: yes
";

fn manifest(plugin_config: &str) -> String {
    let indented: String = plugin_config
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: canary-router\nspec:\n  url: oci://registry.example/canary-router:0.1.0\n  pluginConfig:\n{indented}"
    )
}

/// `validate --json` halfway up the ramp: 50.5% when the ramp interpolates, 1% when
/// it steps.
fn validate_at_ten(input: &str) -> std::process::Output {
    run(
        &["validate", "-", "--json", "--at", "2026-12-01T10:00:00Z"],
        Some(input.as_bytes()),
    )
}

#[test]
fn interpolate_yes_means_to_the_cli_what_it_means_to_the_filter_behind_istio() {
    // The filter's own parser on what Istio sends: accepted, interpolating.
    let config = Config::from_json(ISTIO_JSON.as_bytes()).expect("the filter accepts it");
    let Weight::Scheduled(schedule) = &config.versions[1].weight else {
        panic!("canary is not scheduled");
    };
    assert!(schedule.interpolate);

    let from_istio = validate_at_ten(ISTIO_JSON);
    assert_eq!(code(&from_istio), 0, "{}", stderr(&from_istio));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&from_istio)).expect("JSON");
    assert_eq!(summary["versions"][1]["weight"], 50.5, "{summary}");

    for (what, yaml) in [
        ("plain YAML", PLUGIN_CONFIG.to_string()),
        ("WasmPlugin manifest", manifest(PLUGIN_CONFIG)),
    ] {
        let o = validate_at_ten(&yaml);
        assert_eq!(code(&o), 0, "{what}: {}", stderr(&o));
        assert_eq!(stdout(&o), stdout(&from_istio), "{what}");
    }
    // Other YAML 1.1 spellings of true, as kubectl reads them.
    for spelling in ["Yes", "YES", "on", "ON", "y", "True"] {
        let o = validate_at_ten(&PLUGIN_CONFIG.replace("yes", spelling));
        assert_eq!(stdout(&o), stdout(&from_istio), "{spelling}");
    }
    // And of false: the ramp steps, 1% at 10:00.
    let o = validate_at_ten(&manifest(&PLUGIN_CONFIG.replace("yes", "off")));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(summary["versions"][1]["weight"], 1.0, "{summary}");
}

#[test]
fn a_quoted_yes_stays_a_string_and_is_refused_with_the_field_named() {
    for quoted in ["\"yes\"", "'yes'"] {
        for yaml in [
            PLUGIN_CONFIG.replace("yes", quoted),
            manifest(&PLUGIN_CONFIG.replace("yes", quoted)),
        ] {
            let o = run(&["validate", "-"], Some(yaml.as_bytes()));
            assert_eq!(code(&o), 1, "{yaml}");
            let err = stderr(&o);
            assert!(
                err.starts_with("error: versions[1].schedule.interpolate: ")
                    && err.ends_with("<stdin>: config rejected (1 problem)\n"),
                "{err}"
            );
        }
    }
    // The filter refuses the same JSON with the same field.
    let errors = Config::from_json(ISTIO_JSON.replace("true", "\"yes\"").as_bytes())
        .expect_err("a string is no bool");
    assert_eq!(errors[0].field, "versions[1].schedule.interpolate");
}

#[test]
fn completions_for_every_shell_name_every_command_and_option() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(&["completions", shell], None);
        assert_eq!(code(&o), 0, "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for needle in [
            "validate",
            "explain",
            "simulate",
            "schema",
            "completions",
            "guard-tripped",
            "anonymous",
        ] {
            assert!(script.contains(needle), "{shell} lacks {needle}");
        }
    }
    // The bash script is valid bash.
    let script = stdout(&run(&["completions", "bash"], None));
    let dir =
        std::env::temp_dir().join(format!("canary-router-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("canary-router.bash");
    std::fs::write(&path, script).expect("write");
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash is needed for this test");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let o = run(&["completions", "tcsh"], None);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("invalid value 'tcsh'"),
        "{}",
        stderr(&o)
    );
}

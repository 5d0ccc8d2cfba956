//! Shared by the CLI's tests (`tests/cli.rs`, `tests/e2e_cli.rs`): the fixtures,
//! running the built `canary-router`, and what the filter itself receives for a
//! fixture.
//!
//! The tests run the binary at `$CANARY_ROUTER_BIN` (`make test` builds it in the
//! test profile and sets it), else the one `make cli` builds at
//! `target/release/canary-router`, as the end-to-end tests run the `.wasm` that
//! `make build` builds: a missing or stale binary is a failure, never a skip. (A
//! test in cli/ could use Cargo's `CARGO_BIN_EXE_`, but building the binary inside
//! `cargo test` builds the filter's library twice, with `panic = "abort"` and
//! without, into the same file name, since the library is also a `cdylib`.)
#![allow(dead_code)]

use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The newest modification time among the files under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut latest = SystemTime::UNIX_EPOCH;
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let time = if path.is_dir() {
                newest(&path)
            } else {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            latest = latest.max(time);
        }
    }
    latest
}

/// The built CLI: `$CANARY_ROUTER_BIN`, else the one `make cli` builds. Fails when
/// it is missing or older than the sources it is built from.
pub fn cli_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CANARY_ROUTER_BIN") {
        return PathBuf::from(path);
    }
    let root = repo_root();
    let path = root.join("target/release/canary-router");
    let built = fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} not found: run `make cli` (make test does). The CLI tests never skip.",
                path.display()
            )
        });
    // Cargo rebuilds when a source file is newer than its last build, so a binary
    // older than a source has not been rebuilt since that change.
    let newest_source = newest(&root.join("src")).max(newest(&root.join("cli/src")));
    assert!(
        built >= newest_source,
        "{} is older than its sources: run `make cli` (make test does)",
        path.display()
    );
    path
}

/// The config files of `tests/fixtures/configs/{kind}`, sorted.
pub fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("tests/fixtures/configs").join(kind);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "too few fixtures in {}", dir.display());
    paths
}

pub fn name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

pub fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Runs the built `canary-router` in the repository root.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(cli_binary())
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run canary-router");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for canary-router")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

/// What the filter itself receives for a fixture: a JSON file byte for byte; for
/// YAML, the JSON Istio makes of `pluginConfig` (a manifest's, or the whole file).
/// `None` when there is nothing a filter could receive (the YAML does not parse,
/// the manifest has no plugin config).
pub fn filter_input(path: &Path) -> Option<Vec<u8>> {
    let bytes = fs::read(path).expect("read fixture");
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        return Some(bytes);
    }
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_slice(&bytes) {
        let value: Value = serde::Deserialize::deserialize(document).ok()?;
        documents.push(value);
    }
    let config = match documents
        .iter()
        .find(|d| d["kind"] == "WasmPlugin")
        .map(|plugin| plugin["spec"].get("pluginConfig"))
    {
        Some(plugin_config) => plugin_config?.clone(),
        None => documents.first()?.clone(),
    };
    Some(serde_json::to_vec(&config).expect("JSON"))
}

/// Removes serde_json's ` at line L column C` wherever it occurs: positions in JSON
/// made from YAML mean nothing to the author, and the CLI leaves them out.
pub fn without_position(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find(" at line ") {
        let after = &rest[at + " at line ".len()..];
        let line_digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &after[line_digits..];
        let column_digits = tail
            .strip_prefix(" column ")
            .map_or(0, |t| t.bytes().take_while(u8::is_ascii_digit).count());
        if line_digits > 0 && column_digits > 0 {
            out.push_str(&rest[..at]);
            rest = &tail[" column ".len() + column_digits..];
        } else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

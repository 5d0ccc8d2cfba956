//! End-to-end: what a client sees when the Wasm VM cannot start or fails while
//! serving, under each `failure_policy` (Istio's `failStrategy` maps onto them:
//! FAIL_CLOSE -> FAIL_CLOSED, FAIL_OPEN -> FAIL_OPEN, FAIL_RELOAD -> FAIL_RELOAD).
//!
//! The failing modules are tiny proxy-wasm modules assembled here byte by byte:
//! one whose `proxy_on_vm_start` returns false, one that traps in
//! `proxy_on_configure`, one that traps on every request (what a panic in the
//! filter does); plus a file that is not a Wasm module and a path that does not
//! exist. Findings are written up in docs/reliability.md.

mod harness;

use harness::{wait_until, Envoy, EnvoyOptions};
use std::path::PathBuf;
use std::time::Duration;

// ---- A minimal proxy-wasm module, assembled by hand ---------------------------------

/// What a hand-made module does in each callback.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    /// Starts, configures, and routes every request to the canary (it sets
    /// `x-canary-version: canary`), so that a request the VM did not see is told
    /// apart by going to stable.
    Healthy,
    /// `proxy_on_vm_start` returns false.
    VmStartFails,
    /// `proxy_on_configure` traps (`unreachable`), as a panic there would.
    ConfigureTraps,
    /// Routes its first request, traps on its second (as a panic on some request
    /// would), routes the ones after that if it is still alive.
    SecondRequestTraps,
}

fn leb_u32(mut n: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
    out.push(id);
    leb_u32(body.len() as u32, out);
    out.extend(body);
}

fn vec_of(items: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    leb_u32(items.len() as u32, &mut out);
    for item in items {
        out.extend(item);
    }
    out
}

fn name(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    leb_u32(s.len() as u32, &mut out);
    out.extend_from_slice(s.as_bytes());
    out
}

const ROUTE_HEADER: &[u8] = b"x-canary-version";
const CANARY: &[u8] = b"canary";

/// A proxy-wasm ABI 0.2.1 module: the exports Envoy looks for, each a few
/// instructions, one host import to set the route header, one mutable global
/// counting requests.
fn module(behaviour: Behaviour) -> Vec<u8> {
    const I32: u8 = 0x7f;
    let functype = |params: &[u8], results: &[u8]| {
        let mut t = vec![0x60];
        leb_u32(params.len() as u32, &mut t);
        t.extend_from_slice(params);
        leb_u32(results.len() as u32, &mut t);
        t.extend_from_slice(results);
        t
    };
    let types = vec![
        functype(&[], &[]),                           // 0: () -> ()
        functype(&[I32, I32], &[]),                   // 1: (i32, i32) -> ()
        functype(&[I32, I32], &[I32]),                // 2: (i32, i32) -> i32
        functype(&[I32, I32, I32], &[I32]),           // 3: (i32, i32, i32) -> i32
        functype(&[I32], &[I32]),                     // 4: (i32) -> i32
        functype(&[I32], &[]),                        // 5: (i32) -> ()
        functype(&[I32, I32, I32, I32, I32], &[I32]), // 6: the header write
    ];
    let i32_const = |v: u8| vec![0x41, v, 0x0b];
    let trap = vec![0x00, 0x0b];
    let nothing = vec![0x0b];
    let mut on_request = Vec::new();
    if behaviour == Behaviour::SecondRequestTraps {
        on_request.extend_from_slice(&[
            0x23, 0x00, 0x41, 0x01, 0x6a, 0x24, 0x00, // requests += 1
            0x23, 0x00, 0x41, 0x02, 0x46, // requests == 2
            0x04, 0x40, 0x00, 0x0b, // if: unreachable
        ]);
    }
    // Where the two strings live in memory: 2048 and 2064, as signed LEB128.
    let (key_at, value_at) = ([0x80, 0x10], [0x90, 0x10]);
    on_request.extend_from_slice(&[0x41, 0x00]); // map: request headers
    on_request.extend_from_slice(&[0x41, key_at[0], key_at[1]]);
    on_request.extend_from_slice(&[0x41, ROUTE_HEADER.len() as u8]);
    on_request.extend_from_slice(&[0x41, value_at[0], value_at[1]]);
    on_request.extend_from_slice(&[0x41, CANARY.len() as u8]);
    on_request.extend_from_slice(&[0x10, 0x00, 0x1a]); // call the import, drop its status
    on_request.extend_from_slice(&[0x41, 0x00, 0x0b]); // Continue
                                                       // (export name, type, body); function 0 is the import.
    let functions: Vec<(&str, u8, Vec<u8>)> = vec![
        ("proxy_abi_version_0_2_1", 0, nothing.clone()),
        // Every allocation at 64 KiB: the host's writes may overlap; nothing reads them.
        (
            "proxy_on_memory_allocate",
            4,
            vec![0x41, 0x80, 0x80, 0x04, 0x0b],
        ),
        ("proxy_on_context_create", 1, nothing.clone()),
        (
            "proxy_on_vm_start",
            2,
            if behaviour == Behaviour::VmStartFails {
                i32_const(0)
            } else {
                i32_const(1)
            },
        ),
        (
            "proxy_on_configure",
            2,
            if behaviour == Behaviour::ConfigureTraps {
                trap
            } else {
                i32_const(1)
            },
        ),
        ("proxy_on_request_headers", 3, on_request),
        ("proxy_on_response_headers", 3, i32_const(0)),
        ("proxy_on_done", 4, i32_const(1)),
        ("proxy_on_log", 5, nothing.clone()),
        ("proxy_on_delete", 5, nothing),
    ];

    let mut out = b"\0asm\x01\0\0\0".to_vec();
    section(1, vec_of(types), &mut out);
    let mut import = name("env");
    import.extend(name("proxy_replace_header_map_value"));
    import.extend_from_slice(&[0x00, 6]);
    section(2, vec_of(vec![import]), &mut out);
    section(
        3,
        vec_of(functions.iter().map(|(_, t, _)| vec![*t]).collect()),
        &mut out,
    );
    // One memory of 2 pages, exported as `memory`.
    section(5, vec_of(vec![vec![0x00, 0x02]]), &mut out);
    // The request counter: a mutable i32 starting at 0.
    section(6, vec_of(vec![vec![I32, 0x01, 0x41, 0x00, 0x0b]]), &mut out);
    let mut exports: Vec<Vec<u8>> = functions
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| {
            let mut e = name(n);
            e.push(0x00);
            leb_u32(i as u32 + 1, &mut e);
            e
        })
        .collect();
    let mut memory = name("memory");
    memory.extend_from_slice(&[0x02, 0x00]);
    exports.push(memory);
    section(7, vec_of(exports), &mut out);
    let bodies = functions
        .into_iter()
        .map(|(_, _, body)| {
            let mut code = vec![0x00]; // no locals
            code.extend(body);
            let mut entry = Vec::new();
            leb_u32(code.len() as u32, &mut entry);
            entry.extend(code);
            entry
        })
        .collect();
    section(10, vec_of(bodies), &mut out);
    // The two strings, at 2048 and 2064.
    let data = |at: [u8; 2], bytes: &[u8]| {
        let mut d = vec![0x00, 0x41, at[0], at[1], 0x0b];
        leb_u32(bytes.len() as u32, &mut d);
        d.extend_from_slice(bytes);
        d
    };
    section(
        11,
        vec_of(vec![data(key_at, ROUTE_HEADER), data(value_at, CANARY)]),
        &mut out,
    );
    out
}

/// A module (or any bytes) in a file the Envoy under test can load; removed on drop.
struct Fixture(PathBuf);

impl Fixture {
    fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir); // only once the last one is gone
        }
    }
}

fn fixture(name: &str, bytes: &[u8]) -> Fixture {
    let dir = std::env::temp_dir().join(format!("canary-router-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fixture");
    Fixture(path)
}

const POLICIES: [&str; 3] = ["FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"];

fn options(policy: &str, wasm: PathBuf) -> EnvoyOptions {
    EnvoyOptions {
        failure_policy: Some(policy.to_string()),
        wasm_file: Some(wasm),
        ..EnvoyOptions::default()
    }
}

fn one_worker(options: EnvoyOptions) -> EnvoyOptions {
    EnvoyOptions {
        concurrency: 1,
        ..options
    }
}

#[test]
fn the_hand_made_healthy_module_loads_and_passes_requests_through() {
    // The control for the failing modules below: the same module, healthy, routes
    // every request to the canary.
    let healthy = fixture("healthy.wasm", &module(Behaviour::Healthy));
    let envoy = Envoy::start(options("FAIL_CLOSED", healthy.path()));
    let mut client = envoy.client();
    for _ in 0..10 {
        let r = client.get_with(&[]);
        assert_eq!((r.status, r.served_by().as_str()), (200, "canary"));
    }
    envoy.assert_vm_healthy();
}

#[test]
fn a_vm_that_cannot_start_makes_envoy_refuse_the_config_under_every_policy() {
    // failure_policy governs a VM that fails while serving; a module that cannot
    // be loaded, started or configured is a config error under every policy.
    let fixtures = [
        fixture("not-wasm.wasm", b"this is not a wasm module\n"),
        fixture("empty.wasm", b""),
        fixture("vm-start-fails.wasm", &module(Behaviour::VmStartFails)),
        fixture("configure-traps.wasm", &module(Behaviour::ConfigureTraps)),
    ];
    let cases = [
        (
            "not a Wasm module",
            fixtures[0].path(),
            "Plugin canary-router failed to load",
        ),
        (
            "an empty file",
            fixtures[1].path(),
            "Plugin canary-router failed to load",
        ),
        (
            "proxy_on_vm_start returns false",
            fixtures[2].path(),
            "Plugin canary-router failed to load",
        ),
        (
            "proxy_on_configure traps",
            fixtures[3].path(),
            "Plugin canary-router failed to load",
        ),
        (
            "a missing file",
            PathBuf::from("/nonexistent/canary_router.wasm"),
            "Invalid path: /nonexistent/canary_router.wasm",
        ),
    ];
    for (what, path, expected) in &cases {
        for policy in POLICIES {
            match Envoy::try_start(options(policy, path.clone())) {
                Ok(envoy) => panic!(
                    "{what} under {policy}: Envoy started; log:\n{}",
                    envoy.log()
                ),
                Err(failure) => {
                    assert_eq!(
                        failure.exit_code,
                        Some(1),
                        "{what} under {policy}:\n{}",
                        failure.log
                    );
                    assert!(
                        failure
                            .log
                            .lines()
                            .any(|l| l.contains("critical") && l.contains(expected)),
                        "{what} under {policy}: no critical line with {expected:?}:\n{}",
                        failure.log
                    );
                }
            }
        }
    }
    // The real filter with a bad plugin config and the refuse opt-in
    // (CANARY_ROUTER_ON_BAD_CONFIG=refuse): on_configure returns false.
    for policy in POLICIES {
        let bad = EnvoyOptions {
            plugin_config: Some(r#"{"versions":[]}"#.to_string()),
            refuse_bad_config: true,
            ..options(policy, harness::wasm_path())
        };
        match Envoy::try_start(bad) {
            Ok(envoy) => panic!(
                "a bad config under {policy}: Envoy started; log:\n{}",
                envoy.log()
            ),
            Err(failure) => {
                assert_eq!(failure.exit_code, Some(1), "a bad config under {policy}");
                assert!(
                    failure.log.contains(
                        "config rejected (1 problem): versions: needs at least one version"
                    ) && failure.log.contains("Plugin canary-router failed to load"),
                    "a bad config under {policy}:\n{}",
                    failure.log
                );
            }
        }
    }
}

/// Sends `n` requests and returns (status, body) of each.
fn answers(client: &mut harness::Client, n: usize) -> Vec<(u16, String)> {
    (0..n)
        .map(|_| {
            let r = client.get_with(&[]);
            (r.status, r.body_text().trim().to_string())
        })
        .collect()
}

fn reload_stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stats()
        .get(&format!("wasm.canary-router.{name}"))
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_vm_that_fails_while_serving_answers_503_then_per_policy() {
    // The module routes its first request to the canary and traps on its second.
    // One worker, so one VM, whatever connection a request comes on.
    let crashing = fixture(
        "second-request-traps.wasm",
        &module(Behaviour::SecondRequestTraps),
    );
    let ok = || (200, "canary".to_string());
    let bypassed = || (200, "stable".to_string());
    let failed = || (503, String::new());

    // FAIL_CLOSED: the failing request and every one after it get a 503 with an
    // empty body, until Envoy loads a new config or restarts.
    let envoy = Envoy::start(one_worker(options("FAIL_CLOSED", crashing.path())));
    let mut client = envoy.client();
    assert_eq!(
        answers(&mut client, 6),
        vec![ok(), failed(), failed(), failed(), failed(), failed()]
    );
    assert!(envoy
        .log()
        .contains("Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"));
    assert_eq!(reload_stat(&envoy, "vm_reload"), 0);
    drop(envoy);

    // FAIL_OPEN: the failing request gets a 503; after it the filter is skipped:
    // no route header, so the route table's default (stable), and no metrics.
    let envoy = Envoy::start(one_worker(options("FAIL_OPEN", crashing.path())));
    let mut client = envoy.client();
    assert_eq!(
        answers(&mut client, 6),
        vec![
            ok(),
            failed(),
            bypassed(),
            bypassed(),
            bypassed(),
            bypassed()
        ]
    );
    drop(envoy);

    // FAIL_RELOAD: the failing request and those within the back-off (1 s base)
    // get a 503; the next request after it starts a new VM, which serves it.
    let envoy = Envoy::start(one_worker(options("FAIL_RELOAD", crashing.path())));
    let mut client = envoy.client();
    assert_eq!(answers(&mut client, 3), vec![ok(), failed(), failed()]);
    assert!(reload_stat(&envoy, "vm_reload_backoff") >= 1);
    assert!(
        wait_until(Duration::from_secs(10), || client.get_with(&[]).status
            == 200),
        "no new VM after the back-off"
    );
    assert_eq!(reload_stat(&envoy, "vm_reload_success"), 1);
    // The new VM has served one request; its second traps again.
    assert_eq!(answers(&mut client, 1), vec![failed()]);
}

#[test]
fn a_listener_update_with_a_module_that_cannot_load_is_rejected_and_the_old_one_serves() {
    let envoy = Envoy::start(EnvoyOptions {
        listener_from_file: true,
        ..EnvoyOptions::with_config(
            r#"{"versions":[{"name":"stable"},{"name":"canary","weight":0}],"override":{"header":"x-canary"}}"#,
        )
    });
    let mut client = envoy.client();
    let check = |client: &mut harness::Client| {
        assert_eq!(
            client.get_with(&[("x-canary", "canary")]).served_by(),
            "canary"
        );
        assert_eq!(client.get_with(&[]).served_by(), "stable");
    };
    check(&mut client);
    for (what, bytes) in [
        ("not a module", b"not wasm".to_vec()),
        (
            "a module whose configure traps",
            module(Behaviour::ConfigureTraps),
        ),
    ] {
        let path = fixture(&format!("update-{}.wasm", what.len()), &bytes);
        let log = envoy
            .reload(|config| {
                config["vm_config"]["code"]["local"]["filename"] =
                    serde_yaml::Value::from(path.path().to_string_lossy().into_owned());
                config["failure_policy"] = serde_yaml::Value::from("FAIL_OPEN");
            })
            .expect_err("Envoy must reject a module that cannot load");
        assert!(
            log.contains("Filesystem config update rejected") && log.contains("canary-router"),
            "{what}: {log}"
        );
        check(&mut client);
        check(&mut envoy.client());
    }
    // (The trapping module logs its trap while Envoy tries it; the serving VM is untouched.)
    assert!(
        envoy.wasm_failures().is_empty(),
        "{:?}",
        envoy.wasm_failures()
    );
    assert_eq!(
        envoy.stats().get("listener_manager.lds.update_rejected"),
        Some(&2)
    );
}

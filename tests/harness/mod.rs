//! End-to-end harness: starts a real Envoy (the pinned one, from `.tools/bin/envoy`)
//! with `envoy/envoy.yaml` on free ports and the built `.wasm`, sends raw HTTP/1.1
//! requests, and reads `/stats/prometheus`. Every Envoy is killed when its handle
//! drops, so also when a test fails. A missing Envoy or `.wasm` is a failure, never
//! a skip: run `make build envoy` (`make test` does).
//!
//! Shared by the tests and by `examples/demo.rs`; not every user calls everything.
#![allow(dead_code)]

pub mod grpc;

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary: `$ENVOY_BIN`, else the one `make envoy` installs.
pub fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin/envoy"));
    assert!(
        path.exists(),
        "Envoy not found at {}: run `make envoy` (or set ENVOY_BIN). End-to-end tests never skip.",
        path.display()
    );
    path
}

/// The built filter: `make build` puts it here.
pub fn wasm_path() -> PathBuf {
    let path = repo_root().join("target/wasm32-wasip1/release/canary_router.wasm");
    assert!(
        path.exists(),
        "{} not found: run `make build`. End-to-end tests never skip.",
        path.display()
    );
    path
}

/// The plugin config that `envoy/envoy.yaml` ships with.
pub fn shipped_plugin_config() -> String {
    let yaml = load_envoy_yaml();
    ingress_wasm_config(&yaml)["configuration"]["value"]
        .as_str()
        .expect("envoy.yaml has a plugin configuration string")
        .to_string()
}

fn load_envoy_yaml() -> Value {
    load_bootstrap("envoy/envoy.yaml")
}

/// A bootstrap under the repository root, e.g. `envoy/weighted-clusters.yaml`.
fn load_bootstrap(relative: &str) -> Value {
    let path = repo_root().join(relative);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {relative}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{relative} is not YAML: {e}"))
}

fn listener_mut<'a>(yaml: &'a mut Value, name: &str) -> &'a mut Value {
    yaml["static_resources"]["listeners"]
        .as_sequence_mut()
        .expect("listeners")
        .iter_mut()
        .find(|l| l["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("envoy.yaml has no listener {name}"))
}

fn http_connection_manager(listener: &mut Value) -> &mut Value {
    &mut listener["filter_chains"][0]["filters"][0]["typed_config"]
}

fn ingress_wasm_config(yaml: &Value) -> &Value {
    let listener = yaml["static_resources"]["listeners"]
        .as_sequence()
        .expect("listeners")
        .iter()
        .find(|l| l["name"].as_str() == Some("ingress"))
        .expect("listener ingress");
    let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_sequence()
        .expect("http_filters");
    &filters
        .iter()
        .find(|f| f["name"].as_str() == Some("canary-router"))
        .expect("the canary-router filter")["typed_config"]["config"]
}

fn set_port(address: &mut Value, port: u16) {
    address["socket_address"]["port_value"] = Value::from(port);
}

/// A port that was free a moment ago, and not handed out before by this process:
/// the kernel may give the same ephemeral port to two binds in a row once the first
/// is closed, and one Envoy takes several ports at once.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

/// How to start one Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// The plugin configuration JSON; `None` keeps the one in envoy.yaml.
    pub plugin_config: Option<String>,
    pub concurrency: usize,
    /// Clusters (`stable`, `canary`) to point at a closed port, so that Envoy
    /// itself answers 503 (connection failure) for them.
    pub dead_upstreams: Vec<String>,
    /// Request headers the demo upstreams echo back as `x-echo-<name>`, to see
    /// what reached them.
    pub echo_request_headers: Vec<String>,
    /// Headers the demo upstreams add to every response (appended, so a name may
    /// repeat), such as an application's own `set-cookie`.
    pub upstream_response_headers: Vec<(String, String)>,
    /// Clusters (`stable`, `canary`) served by an HTTP/1.1 server on this machine
    /// instead of the demo upstreams: cluster name and port on 127.0.0.1.
    pub upstream_ports: Vec<(String, u16)>,
    /// Serve the ingress listener from a file that Envoy watches (LDS from a
    /// path) instead of from the bootstrap, so that [`Envoy::reload`] can change it.
    pub listener_from_file: bool,
    /// `--drain-time-s`: how long the connections of a replaced listener are drained.
    pub drain_time_s: Option<u32>,
    /// The filter's `failure_policy` (`FAIL_CLOSED`, `FAIL_OPEN`, `FAIL_RELOAD`);
    /// `None` keeps envoy.yaml's.
    pub failure_policy: Option<String>,
    /// Another `.wasm` to load instead of the built filter.
    pub wasm_file: Option<PathBuf>,
    /// Opt in to refusing bad configs (`CANARY_ROUTER_ON_BAD_CONFIG=refuse` in the
    /// VM's environment): Envoy then does not start with one, and NACKs one as an
    /// update. The default keeps the last good config, or runs in safe mode.
    pub refuse_bad_config: bool,
    /// Deliver the filter's config the way Istio does: the listener names the
    /// filter with `config_discovery` (no default config) and the config comes by
    /// ECDS from a file Envoy watches, which [`Envoy::push_ecds`] replaces.
    pub filter_from_ecds: bool,
    /// Clusters (`stable`, `canary`) served by an HTTP/2 server on this machine
    /// (a [`grpc::GrpcServer`]) instead of the demo upstreams: cluster name and
    /// port on 127.0.0.1. Envoy speaks HTTP/2 (prior knowledge) to them.
    pub h2_upstreams: Vec<(String, u16)>,
    /// Another bootstrap (relative to the repository root) with the same listeners
    /// and clusters as envoy/envoy.yaml, e.g. `envoy/weighted-clusters.yaml`.
    pub bootstrap: Option<String>,
    /// Serve the ingress route configuration from a file that Envoy watches (RDS
    /// from a path), so that [`Envoy::set_routes`] can change it, as a rollout
    /// controller changes weights through istiod.
    pub routes_from_file: bool,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            plugin_config: None,
            concurrency: 2,
            dead_upstreams: Vec::new(),
            echo_request_headers: Vec::new(),
            upstream_response_headers: Vec::new(),
            upstream_ports: Vec::new(),
            listener_from_file: false,
            drain_time_s: None,
            failure_policy: None,
            wasm_file: None,
            refuse_bad_config: false,
            filter_from_ecds: false,
            h2_upstreams: Vec::new(),
            bootstrap: None,
            routes_from_file: false,
        }
    }
}

impl EnvoyOptions {
    pub fn with_config(config: impl Into<String>) -> Self {
        EnvoyOptions {
            plugin_config: Some(config.into()),
            ..Self::default()
        }
    }
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// A running Envoy. Killed on drop.
pub struct Envoy {
    child: Option<Child>,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    /// With `listener_from_file`: the ingress listener as last written.
    lds: Option<Lds>,
    /// With `routes_from_file`: the ingress route configuration as last written.
    rds: Option<Rds>,
    /// With `filter_from_ecds`: the filter config resource Envoy watches.
    ecds: Option<Ecds>,
}

/// The ECDS file Envoy watches: a discovery response holding one
/// `TypedExtensionConfig`, the canary-router filter's.
struct Ecds {
    path: PathBuf,
    /// The filter's `typed_config` as last written.
    typed_config: Mutex<Value>,
    version: AtomicU64,
}

/// The name of the ECDS resource (the filter's name, which Envoy subscribes to).
pub const ECDS_RESOURCE: &str = "canary-router";

impl Ecds {
    /// Writes the filter config as a discovery response.
    fn write(&self, typed_config: &Value) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let mut resource = serde_yaml::Mapping::new();
        resource.insert(
            "@type".into(),
            "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".into(),
        );
        resource.insert("name".into(), ECDS_RESOURCE.into());
        resource.insert("typed_config".into(), typed_config.clone());
        write_discovery_response(&self.path, version, vec![Value::Mapping(resource)]);
    }
}

/// An xDS `ConfigSource` reading `path`, reloaded whenever a file is moved into its
/// directory (see [`write_discovery_response`]).
fn file_config_source(path: &Path) -> Value {
    let watched = path.parent().expect("xDS dir");
    serde_yaml::from_str(&format!(
        "resource_api_version: V3\npath_config_source:\n  path: {}\n  watched_directory: {{ path: {} }}\n",
        path.display(),
        watched.display()
    ))
    .expect("config_source")
}

/// xDS (also from a file) needs to know who this node is.
fn name_the_node(yaml: &mut Value) {
    if yaml["node"].is_null() {
        yaml["node"] =
            serde_yaml::from_str("{ id: canary-router-e2e, cluster: e2e }").expect("node");
    }
}

/// Writes an xDS file as a discovery response, atomically: to a temporary file
/// beside the watched directory, then renamed into it (Envoy reloads on the move).
fn write_discovery_response(path: &Path, version: u64, resources: Vec<Value>) {
    let mut response = serde_yaml::Mapping::new();
    response.insert("version_info".into(), Value::from(version.to_string()));
    response.insert("resources".into(), Value::Sequence(resources));
    let text = serde_yaml::to_string(&Value::Mapping(response)).expect("yaml");
    let name = path.file_name().expect("xDS file name").to_string_lossy();
    let dir = path.parent().and_then(Path::parent).expect("xDS dir");
    let temporary = dir.join(format!("{name}-{version}.tmp"));
    fs::write(&temporary, text).unwrap_or_else(|e| panic!("write {}: {e}", temporary.display()));
    fs::rename(&temporary, path)
        .unwrap_or_else(|e| panic!("move {} into place: {e}", path.display()));
}

/// The route configuration file Envoy watches, and what was last written to it.
struct Rds {
    path: PathBuf,
    routes: Mutex<Value>,
    version: AtomicU64,
}

impl Rds {
    /// Writes the route configuration as a discovery response.
    fn write(&self, routes: &Value) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let mut resource = routes.clone();
        resource["@type"] =
            Value::from("type.googleapis.com/envoy.config.route.v3.RouteConfiguration");
        write_discovery_response(&self.path, version, vec![resource]);
    }
}

/// The listener file Envoy watches, and what was last written to it.
struct Lds {
    path: PathBuf,
    listener: Mutex<Value>,
    version: AtomicU64,
    /// Listeners added by [`Envoy::add_listener`], written after the ingress one.
    extra: Mutex<Vec<Value>>,
}

impl Lds {
    /// Writes the listener, and those added since, as a discovery response.
    fn write(&self, listener: &Value) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let mut resource = listener.clone();
        resource["@type"] = Value::from("type.googleapis.com/envoy.config.listener.v3.Listener");
        let mut resources = vec![resource];
        for extra in self.extra.lock().expect("extra listeners").iter() {
            let mut extra = extra.clone();
            extra["@type"] = Value::from("type.googleapis.com/envoy.config.listener.v3.Listener");
            resources.push(extra);
        }
        write_discovery_response(&self.path, version, resources);
    }
}

/// Envoy did not come up; its log says why.
#[derive(Debug)]
pub struct StartFailure {
    pub log: String,
    pub exit_code: Option<i32>,
}

impl StartFailure {
    /// Envoy could not bind one of the ports it was given.
    pub fn is_port_clash(&self) -> bool {
        self.log.contains("Address already in use") || self.log.contains("has duplicate address")
    }
}

impl Envoy {
    /// Starts Envoy and waits until its admin reports it ready. Panics if it does not.
    pub fn start(options: EnvoyOptions) -> Envoy {
        let mut clashes = 0;
        loop {
            match Self::try_start(options.clone()) {
                Ok(envoy) => return envoy,
                // Another test process may bind a port between free_port() and
                // Envoy's own bind: start again on other ports, a few times.
                Err(failure) if clashes < 3 && failure.is_port_clash() => clashes += 1,
                Err(failure) => panic!(
                    "Envoy did not start (exit {:?}):\n{}",
                    failure.exit_code, failure.log
                ),
            }
        }
    }

    /// Starts Envoy; if it exits or never becomes ready, returns its log.
    pub fn try_start(options: EnvoyOptions) -> Result<Envoy, StartFailure> {
        let envoy_bin = envoy_binary();
        let wasm = wasm_path();
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("canary-router-e2e-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the Envoy work dir");

        let (listener_port, admin_port, stable_port, canary_port) =
            (free_port(), free_port(), free_port(), free_port());
        let mut yaml = match &options.bootstrap {
            Some(relative) => load_bootstrap(relative),
            None => load_envoy_yaml(),
        };
        set_port(&mut yaml["admin"]["address"], admin_port);
        set_port(
            &mut listener_mut(&mut yaml, "ingress")["address"],
            listener_port,
        );
        for (version, port) in [("stable", stable_port), ("canary", canary_port)] {
            let listener = listener_mut(&mut yaml, &format!("upstream_{version}"));
            set_port(&mut listener["address"], port);
            let routes = http_connection_manager(listener)["route_config"]["virtual_hosts"][0]
                ["routes"]
                .as_sequence_mut()
                .expect("upstream routes");
            for route in routes {
                let added = route["response_headers_to_add"]
                    .as_sequence_mut()
                    .expect("response_headers_to_add");
                for name in &options.echo_request_headers {
                    let echo: Value = serde_yaml::from_str(&format!(
                        "{{header: {{key: x-echo-{name}, value: '%REQ({name})%'}}}}"
                    ))
                    .expect("echo header yaml");
                    added.push(echo);
                }
                for (name, value) in &options.upstream_response_headers {
                    let mut header = serde_yaml::Mapping::new();
                    header.insert("key".into(), name.as_str().into());
                    header.insert("value".into(), value.as_str().into());
                    let mut entry = serde_yaml::Mapping::new();
                    entry.insert("header".into(), Value::Mapping(header));
                    entry.insert("append_action".into(), "APPEND_IF_EXISTS_OR_ADD".into());
                    added.push(Value::Mapping(entry));
                }
            }
        }
        for cluster in yaml["static_resources"]["clusters"]
            .as_sequence_mut()
            .expect("clusters")
        {
            let name = cluster["name"].as_str().unwrap_or_default().to_string();
            let h2_port = options
                .h2_upstreams
                .iter()
                .find(|(cluster, _)| *cluster == name)
                .map(|(_, port)| *port);
            if h2_port.is_some() {
                cluster["typed_extension_protocol_options"] = serde_yaml::from_str(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n  \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n  explicit_http_config: { http2_protocol_options: {} }\n",
                )
                .expect("HTTP/2 protocol options");
            }
            let local_port = options
                .upstream_ports
                .iter()
                .find(|(cluster, _)| *cluster == name)
                .map(|(_, port)| *port);
            let port = match name.as_str() {
                _ if options.dead_upstreams.contains(&name) => free_port(),
                _ if h2_port.is_some() => h2_port.unwrap_or_default(),
                _ if local_port.is_some() => local_port.unwrap_or_default(),
                "stable" => stable_port,
                "canary" => canary_port,
                other => panic!("unexpected cluster {other:?} in envoy.yaml"),
            };
            set_port(
                &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                    ["address"],
                port,
            );
        }
        {
            let ingress = listener_mut(&mut yaml, "ingress");
            let filters = http_connection_manager(ingress)["http_filters"]
                .as_sequence_mut()
                .expect("http_filters");
            let wasm_filter = filters
                .iter_mut()
                .find(|f| f["name"].as_str() == Some("canary-router"))
                .expect("canary-router filter");
            let config = &mut wasm_filter["typed_config"]["config"];
            let module = options.wasm_file.clone().unwrap_or(wasm);
            config["vm_config"]["code"]["local"]["filename"] =
                Value::from(module.to_string_lossy().into_owned());
            if let Some(policy) = &options.failure_policy {
                config["failure_policy"] = Value::from(policy.clone());
            }
            if let Some(plugin_config) = &options.plugin_config {
                config["configuration"]["value"] = Value::from(plugin_config.clone());
            }
            if options.refuse_bad_config {
                config["vm_config"]["environment_variables"]["key_values"]
                    ["CANARY_ROUTER_ON_BAD_CONFIG"] = Value::from("refuse");
            }
        }
        let ecds = options.filter_from_ecds.then(|| {
            let ingress = listener_mut(&mut yaml, "ingress");
            let filters = http_connection_manager(ingress)["http_filters"]
                .as_sequence_mut()
                .expect("http_filters");
            let wasm_filter = filters
                .iter_mut()
                .find(|f| f["name"].as_str() == Some("canary-router"))
                .expect("canary-router filter");
            let typed_config = wasm_filter["typed_config"].clone();
            let watched = dir.join("ecds");
            fs::create_dir_all(&watched).expect("create the ECDS dir");
            let ecds = Ecds {
                path: watched.join("canary-router.yaml"),
                typed_config: Mutex::new(typed_config.clone()),
                version: AtomicU64::new(0),
            };
            ecds.write(&typed_config);
            // As istiod sends it: no default_config, so a listener waits (warms)
            // until the resource has come.
            *wasm_filter = serde_yaml::from_str(&format!(
                "name: {ECDS_RESOURCE}\nconfig_discovery:\n  type_urls: [type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm]\n"
            ))
            .expect("config_discovery");
            wasm_filter["config_discovery"]["config_source"] = file_config_source(&ecds.path);
            name_the_node(&mut yaml);
            ecds
        });
        let rds = options.routes_from_file.then(|| {
            let hcm = http_connection_manager(listener_mut(&mut yaml, "ingress"));
            let routes = hcm
                .as_mapping_mut()
                .and_then(|m| m.remove("route_config"))
                .expect("the ingress has a route_config");
            let name = routes["name"]
                .as_str()
                .expect("route_config.name")
                .to_string();
            let watched = dir.join("rds");
            fs::create_dir_all(&watched).expect("create the RDS dir");
            let rds = Rds {
                path: watched.join("routes.yaml"),
                routes: Mutex::new(routes.clone()),
                version: AtomicU64::new(0),
            };
            rds.write(&routes);
            hcm["rds"] =
                serde_yaml::from_str(&format!("route_config_name: {name}\n")).expect("rds");
            hcm["rds"]["config_source"] = file_config_source(&rds.path);
            name_the_node(&mut yaml);
            rds
        });
        let lds = options.listener_from_file.then(|| {
            let listeners = yaml["static_resources"]["listeners"]
                .as_sequence_mut()
                .expect("listeners");
            let at = listeners
                .iter()
                .position(|l| l["name"].as_str() == Some("ingress"))
                .expect("listener ingress");
            let listener = listeners.remove(at);
            let watched = dir.join("lds");
            fs::create_dir_all(&watched).expect("create the LDS dir");
            let lds = Lds {
                path: watched.join("listeners.yaml"),
                listener: Mutex::new(listener.clone()),
                version: AtomicU64::new(0),
                extra: Mutex::new(Vec::new()),
            };
            lds.write(&listener);
            yaml["dynamic_resources"]["lds_config"] = file_config_source(&lds.path);
            name_the_node(&mut yaml);
            lds
        });
        let config_path = dir.join("envoy.yaml");
        fs::write(&config_path, serde_yaml::to_string(&yaml).expect("yaml"))
            .expect("write the Envoy config");
        let log_path = dir.join("envoy.log");
        let log_file = fs::File::create(&log_path).expect("create the Envoy log");

        let mut command = Command::new(&envoy_bin);
        if let Some(seconds) = options.drain_time_s {
            command.args(["--drain-time-s", &seconds.to_string()]);
        }
        let child = command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &options.concurrency.to_string()])
            .arg("--disable-hot-restart")
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .current_dir(repo_root())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", envoy_bin.display()));

        let mut envoy = Envoy {
            child: Some(child),
            listener: SocketAddr::from(([127, 0, 0, 1], listener_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
            log_path,
            lds,
            rds,
            ecds,
        };
        envoy.wait_ready(Duration::from_secs(60))?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, deadline: Duration) -> Result<(), StartFailure> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(StartFailure {
                        log: self.log(),
                        exit_code: status.code(),
                    });
                }
            }
            let ready = http_get(self.admin, "/ready")
                .map(|r| r.status == 200)
                .unwrap_or(false);
            // The listeners are up once the admin says ready; check ours accepts too.
            if ready && TcpStream::connect(self.listener).is_ok() {
                return Ok(());
            }
            if start.elapsed() > deadline {
                let log = self.log();
                self.kill();
                return Err(StartFailure {
                    log: format!("not ready after {deadline:?}\n{log}"),
                    exit_code: None,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A keep-alive client to the ingress listener.
    pub fn client(&self) -> Client {
        Client::new(self.listener)
    }

    pub fn admin_get(&self, path: &str) -> Response {
        http_get(self.admin, path).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// Sets a runtime key through the admin layer (`POST /runtime_modify`).
    pub fn set_runtime(&self, key: &str, value: &str) {
        let mut client = Client::new(self.admin);
        let response = client
            .request(
                "POST",
                &format!("/runtime_modify?{key}={value}"),
                &[("content-length", b"0")],
            )
            .unwrap_or_else(|e| panic!("runtime_modify {key}={value}: {e}"));
        assert_eq!(
            response.status,
            200,
            "runtime_modify: {}",
            response.body_text()
        );
    }

    pub fn prometheus(&self) -> Metrics {
        Metrics::parse(&self.admin_get("/stats/prometheus").body_text())
    }

    /// `/stats` as name -> value for counters and gauges (histograms skipped).
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.admin_get("/stats")
            .body_text()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Envoy {
    /// With `listener_from_file`: changes the ingress listener's canary-router
    /// filter config (`change` gets the filter's `typed_config.config`: `configuration`,
    /// `vm_config`, `failure_policy`), writes the listener file, and waits until
    /// Envoy has taken the update and warmed the new listener up, so that new
    /// connections get it (`Ok`), or rejected it (`Err` with the log lines since).
    /// Connections opened before keep the old config until Envoy drains them.
    /// Panics if neither happens within 30 s.
    pub fn reload(&self, change: impl FnOnce(&mut Value)) -> Result<(), String> {
        let lds = self
            .lds
            .as_ref()
            .expect("Envoy::reload needs EnvoyOptions::listener_from_file");
        let mut listener = lds.listener.lock().expect("listener");
        let mut candidate = listener.clone();
        {
            let filters = http_connection_manager(&mut candidate)["http_filters"]
                .as_sequence_mut()
                .expect("http_filters");
            let filter = filters
                .iter_mut()
                .find(|f| f["name"].as_str() == Some("canary-router"))
                .expect("canary-router filter");
            change(&mut filter["typed_config"]["config"]);
        }
        let counter = |name: &str| self.stats().get(name).copied().unwrap_or(0);
        let (accepted, rejected) = (
            counter("listener_manager.lds.update_success"),
            counter("listener_manager.lds.update_rejected"),
        );
        let log_before = self.log().len();
        lds.write(&candidate);
        self.await_update(
            "listener",
            log_before,
            // Taken, and warmed up: new connections now get the new config.
            || {
                counter("listener_manager.lds.update_success") > accepted
                    && counter("listener_manager.total_listeners_warming") == 0
            },
            || counter("listener_manager.lds.update_rejected") > rejected,
        )?;
        *listener = candidate;
        Ok(())
    }

    /// After an xDS file was written: waits until Envoy has taken the update (`Ok`)
    /// or rejected it (`Err` with the log lines since `log_before`). Panics if
    /// neither happens within 30 s.
    fn await_update(
        &self,
        what: &str,
        log_before: usize,
        taken: impl Fn() -> bool,
        rejected: impl Fn() -> bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if taken() {
                return Ok(());
            }
            if rejected() {
                let log = self.log();
                return Err(log.get(log_before..).unwrap_or(&log).to_string());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Envoy neither took nor rejected the {what} update:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// With `filter_from_ecds`: replaces the plugin configuration JSON in the ECDS
    /// resource and waits until Envoy has taken it (`Ok`: from now on new requests
    /// get the new filter config) or rejected it (`Err` with the log since).
    /// Panics if neither happens within 30 s.
    pub fn push_ecds(&self, plugin_config: &str) -> Result<(), String> {
        let ecds = self
            .ecds
            .as_ref()
            .expect("Envoy::push_ecds needs EnvoyOptions::filter_from_ecds");
        let mut typed_config = ecds.typed_config.lock().expect("typed_config");
        let mut candidate = typed_config.clone();
        candidate["config"]["configuration"]["value"] = Value::from(plugin_config.to_string());
        let stat = |what: &str| {
            self.stats()
                .get(&format!(
                    "extension_config_discovery.http_filter.{ECDS_RESOURCE}.{what}"
                ))
                .copied()
                .unwrap_or(0)
        };
        let (reloads, failures) = (stat("config_reload"), stat("config_fail"));
        let log_before = self.log().len();
        ecds.write(&candidate);
        self.await_update(
            "ECDS",
            log_before,
            || stat("config_reload") > reloads,
            || stat("config_fail") > failures,
        )?;
        *typed_config = candidate;
        Ok(())
    }

    /// With `listener_from_file`: adds a copy of the ingress listener (same filters,
    /// so with `filter_from_ecds` the same ECDS resource) named `name` on a new port,
    /// and waits until it accepts connections. Returns its address.
    pub fn add_listener(&self, name: &str) -> SocketAddr {
        let lds = self
            .lds
            .as_ref()
            .expect("Envoy::add_listener needs EnvoyOptions::listener_from_file");
        let port = free_port();
        let mut copy = lds.listener.lock().expect("listener").clone();
        copy["name"] = Value::from(name);
        set_port(&mut copy["address"], port);
        http_connection_manager(&mut copy)["stat_prefix"] = Value::from(name);
        let accepted = self
            .stats()
            .get("listener_manager.lds.update_success")
            .copied()
            .unwrap_or(0);
        lds.extra.lock().expect("extra listeners").push(copy);
        let ingress = lds.listener.lock().expect("listener").clone();
        lds.write(&ingress);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_until(Duration::from_secs(30), || {
                let stats = self.stats();
                stats
                    .get("listener_manager.lds.update_success")
                    .is_some_and(|n| *n > accepted)
                    && stats.get("listener_manager.total_listeners_warming") == Some(&0)
                    && TcpStream::connect(address).is_ok()
            }),
            "listener {name} never came up:\n{}",
            self.log()
        );
        address
    }

    /// With `routes_from_file`: changes the ingress route configuration (`change`
    /// gets the whole `RouteConfiguration`), writes the file and waits until Envoy
    /// has taken it (the RDS `update_success` counter rises; `Err` with the log if
    /// `update_rejected` does). Panics if neither happens within 30 s.
    pub fn set_routes(&self, change: impl FnOnce(&mut Value)) -> Result<(), String> {
        let rds = self
            .rds
            .as_ref()
            .expect("Envoy::set_routes needs EnvoyOptions::routes_from_file");
        let mut routes = rds.routes.lock().expect("routes");
        let mut candidate = routes.clone();
        change(&mut candidate);
        let name = candidate["name"]
            .as_str()
            .expect("route_config.name")
            .to_string();
        let stat = |what: &str| {
            self.stats()
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("http.") && k.ends_with(&format!(".rds.{name}.{what}"))
                })
                .map(|(_, v)| *v)
                .sum::<u64>()
        };
        let (accepted, rejected) = (stat("update_success"), stat("update_rejected"));
        let log_before = self.log().len();
        rds.write(&candidate);
        self.await_update(
            "route",
            log_before,
            || stat("update_success") > accepted,
            || stat("update_rejected") > rejected,
        )?;
        *routes = candidate;
        Ok(())
    }

    /// [`Envoy::reload`] with a new plugin configuration JSON.
    pub fn reload_plugin_config(&self, plugin_config: &str) -> Result<(), String> {
        self.reload(|config| {
            config["configuration"]["value"] = Value::from(plugin_config.to_string());
        })
    }

    /// Envoy's Wasm failure stats that are above zero (VM reloads and their
    /// failures); empty while every VM is healthy.
    pub fn wasm_failures(&self) -> Vec<(String, u64)> {
        self.stats()
            .into_iter()
            .filter(|(name, value)| {
                name.starts_with("wasm")
                    && (name.contains("fail")
                        || name.contains("crash")
                        || name.contains("vm_reload"))
                    && *value > 0
            })
            .collect()
    }

    /// The VM never failed: no Wasm failure stat moved, and the log has none of the
    /// signs a trapped VM leaves (a Rust panic logs `panicked at`; V8 logs
    /// `Uncaught RuntimeError`).
    pub fn assert_vm_healthy(&self) {
        let failures = self.wasm_failures();
        assert!(failures.is_empty(), "Wasm failure stats: {failures:?}");
        let log = self.log();
        for sign in ["panicked", "Uncaught", "RuntimeError"] {
            assert!(
                !log.contains(sign),
                "the Envoy log shows a VM failure ({sign}):\n{log}"
            );
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// An HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Which demo upstream answered: its body is the version name.
    pub fn served_by(&self) -> String {
        self.body_text().trim().to_string()
    }
}

/// A minimal HTTP/1.1 client that sends arbitrary header bytes (the point of
/// several tests) over one keep-alive connection, reconnecting when needed.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// TCP connections opened so far.
    pub connects: u64,
    /// Requests sent a second time because a kept-alive connection failed before
    /// the answer came (the server closed it meanwhile; RFC 9112 9.3.1).
    pub retries: u64,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            conn: None,
            connects: 0,
            retries: 0,
        }
    }

    pub fn get(&mut self, headers: &[(&str, &[u8])]) -> Response {
        self.request("GET", "/", headers)
            .unwrap_or_else(|e| panic!("GET / with {headers:?}: {e}"))
    }

    /// GET with text headers.
    pub fn get_with(&mut self, headers: &[(&str, &str)]) -> Response {
        let bytes: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        self.get(&bytes)
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> std::io::Result<Response> {
        let bytes: Vec<(&[u8], &[u8])> = headers.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        self.request_bytes(method, path, &bytes)
    }

    /// A request whose header names, too, are any bytes, written as given.
    pub fn request_bytes(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&[u8], &[u8])],
    ) -> std::io::Result<Response> {
        let mut raw = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
        // `host: test` unless the request names its own host (`:authority`).
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(b"host"))
        {
            raw.extend_from_slice(b"host: test\r\n");
        }
        for (name, value) in headers {
            raw.extend_from_slice(name);
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(value);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        // One retry on a fresh connection: a kept-alive one may have been closed.
        for attempt in 0..2 {
            if attempt == 1 {
                self.retries += 1;
            }
            if self.conn.is_none() {
                self.connects += 1;
                let stream = TcpStream::connect(self.addr)?;
                stream.set_read_timeout(Some(Duration::from_secs(20)))?;
                stream.set_nodelay(true)?;
                self.conn = Some(BufReader::new(stream));
            }
            let result = self.exchange(&raw);
            match result {
                Ok((response, keep_alive)) => {
                    if !keep_alive {
                        self.conn = None;
                    }
                    return Ok(response);
                }
                Err(e) => {
                    self.conn = None;
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!()
    }

    fn exchange(&mut self, raw: &[u8]) -> std::io::Result<(Response, bool)> {
        let conn = self.conn.as_mut().expect("connected");
        conn.get_mut().write_all(raw)?;
        read_response(conn)
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn read_response(conn: &mut BufReader<TcpStream>) -> std::io::Result<(Response, bool)> {
    let mut line = Vec::new();
    conn.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let status_line = String::from_utf8_lossy(&line).into_owned();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_until(b'\n', &mut line)?;
        let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
        if trimmed.is_empty() {
            break;
        }
        let colon = trimmed
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| invalid("header without colon"))?;
        let name = String::from_utf8_lossy(&trimmed[..colon]).to_ascii_lowercase();
        let value = trimmed[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    let keep_alive = get("connection").as_deref() != Some("close");
    let body = if get("transfer-encoding").as_deref() == Some("chunked") {
        let mut body = Vec::new();
        loop {
            line.clear();
            conn.read_until(b'\n', &mut line)?;
            let size_text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        body
    } else if let Some(len) = get("content-length") {
        let len: usize = len.trim().parse().map_err(|_| invalid("content-length"))?;
        let mut body = vec![0; len];
        conn.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        conn.read_to_end(&mut body)?;
        return Ok((
            Response {
                status,
                headers,
                body,
            },
            false,
        ));
    };
    Ok((
        Response {
            status,
            headers,
            body,
        },
        keep_alive,
    ))
}

/// One GET on a fresh connection.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut client = Client::new(addr);
    client.request("GET", path, &[])
}

/// Samples of a Prometheus text exposition.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Metrics { samples }
    }

    /// Values of the series `name` whose labels include all of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// The value of the series `name` whose labels include all of `labels`;
    /// 0 when absent. Panics if several series match (ask more precisely).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self.matching(name, labels).collect();
        assert!(
            matching.len() <= 1,
            "{name}{labels:?} matches {} series",
            matching.len()
        );
        matching.first().copied().unwrap_or(0.0)
    }

    /// Sum over every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    pub fn lines_for(&self, prefix: &str) -> Vec<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n.starts_with(prefix))
            .map(|(n, l, v)| {
                let labels: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                format!("{n}{{{}}} {v}", labels.join(","))
            })
            .collect()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        labels.insert(
            key.trim_start_matches(',').trim().to_string(),
            after[..end].to_string(),
        );
        rest = &after[end + 1..];
    }
    labels
}

/// Polls `check` until it returns true or `deadline` passes.
pub fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// `n` deterministic, distinct, UUID-shaped user IDs (36 bytes).
pub fn user_ids(seed: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let h = canary_router::bucket::hash_key(seed.as_bytes(), i.to_string().as_bytes());
            format!(
                "{h:08x}-{:04x}-4{:03x}-a{:03x}-{i:012}",
                i % 0xffff,
                i % 0xfff,
                h % 0xfff
            )
        })
        .collect()
}

/// What the pure core decides for a request carrying `headers` (as Envoy passes
/// them on): the answer the real Envoy must give. Anonymous draws use a fixed seed.
pub fn core_decision(
    config: &canary_router::config::Config,
    routing: &canary_router::decide::Routing,
    headers: &[(&[u8], &[u8])],
) -> canary_router::decide::Assignment {
    let map = canary_router::request::serialize_headers(headers);
    canary_router::decide::decide(
        config,
        routing,
        &canary_router::request::SerializedHeaders::new(&map),
        &mut canary_router::decide::Rng::new(0),
    )
}

/// The version name and reason the pure core gives a user ID sent in `x-user-id`,
/// with the split at time 0 (fixed weights).
pub fn expected_version(
    config: &canary_router::config::Config,
    user: &str,
) -> (String, canary_router::decide::Reason) {
    let routing = canary_router::decide::Routing::at(config, 0);
    let a = core_decision(config, &routing, &[(b"x-user-id", user.as_bytes())]);
    (config.versions[a.version].name.clone(), a.reason)
}

/// Binomial 4-sigma bound check.
pub fn assert_within_4_sigma(what: &str, hits: usize, n: usize, p: f64) {
    let expected = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (hits as f64 - expected).abs() <= 4.0 * sigma,
        "{what}: {hits} of {n}, expected {expected:.0} +- {:.0} (4 sigma)",
        4.0 * sigma
    );
}

/// How much load to drive, and for how long at most.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Keep-alive connections, one thread each.
    pub connections: usize,
    /// Requests per connection, at most.
    pub per_connection: u64,
    /// Stop after this long even if not done.
    pub max_time: Duration,
}

/// What a load run did.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    pub requests: u64,
    /// Requests with no HTTP answer (connection refused, reset, timeout).
    pub errors: u64,
    pub connects: u64,
    pub retries: u64,
    pub elapsed: Duration,
}

/// Drives keep-alive load at `addr` (only ever a local Envoy) from
/// `spec.connections` threads until each has sent `spec.per_connection` requests,
/// `stop` is set, or `spec.max_time` passes. `request(connection, i)` gives the
/// headers of request `i` of a connection; `observe` sees every outcome.
pub fn drive_load<R, O>(
    addr: SocketAddr,
    spec: &LoadSpec,
    stop: &std::sync::atomic::AtomicBool,
    request: R,
    observe: O,
) -> LoadStats
where
    R: Fn(usize, u64) -> Vec<(String, Vec<u8>)> + Sync,
    O: Fn(usize, u64, Result<&Response, &std::io::Error>) + Sync,
{
    assert!(addr.ip().is_loopback(), "load goes to this machine only");
    let start = Instant::now();
    let totals = Mutex::new(LoadStats::default());
    std::thread::scope(|scope| {
        for connection in 0..spec.connections {
            let (request, observe, totals) = (&request, &observe, &totals);
            scope.spawn(move || {
                let mut client = Client::new(addr);
                let mut stats = LoadStats::default();
                for i in 0..spec.per_connection {
                    if stop.load(Ordering::Relaxed) || start.elapsed() > spec.max_time {
                        break;
                    }
                    let headers = request(connection, i);
                    let refs: Vec<(&[u8], &[u8])> = headers
                        .iter()
                        .map(|(k, v)| (k.as_bytes(), v.as_slice()))
                        .collect();
                    let outcome = client.request_bytes("GET", "/", &refs);
                    stats.requests += 1;
                    if outcome.is_err() {
                        stats.errors += 1;
                    }
                    observe(connection, i, outcome.as_ref());
                }
                let mut totals = totals.lock().expect("totals");
                totals.requests += stats.requests;
                totals.errors += stats.errors;
                totals.connects += client.connects;
                totals.retries += client.retries;
            });
        }
    });
    let mut totals = totals.into_inner().expect("totals");
    totals.elapsed = start.elapsed();
    totals
}

/// Resident memory of a process in KiB (`VmRSS` in /proc), if it is running.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

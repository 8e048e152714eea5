# stackline — build, generate, test, bench, lint.
# sudo often resets PATH (secure_path): fall back to the standard Go install.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/stackline
# Container images: podman where installed, else docker.
CONTAINER_TOOL ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE   ?= stackline:$(VERSION)
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: all build run generate check-generated test test-race bench bench-agent bench-agent-offcpu soak lint clean image image-files check-image

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/stackline

# Profile this machine to ./stackline-profiles (needs root).
run: build
	./$(BIN) $(ARGS)

# Debian and Ubuntu keep the kernel's <asm/...> headers in a multiarch
# directory, which clang does not search for the BPF target. Its name comes
# from the C compiler (gcc; clang has no -print-multiarch) or dpkg; it is
# empty, and not needed, where neither knows one.
MULTIARCH ?= $(shell { $(CC) -print-multiarch || dpkg-architecture -qDEB_HOST_MULTIARCH; } 2>/dev/null)

# Rebuild the eBPF objects and their Go bindings with the pinned clang.
generate:
	cd support/ebpf && MULTIARCH=$(MULTIARCH) $(GO) generate ./...

# Fail when the committed eBPF objects differ from what the sources build.
check-generated: generate
	@git diff --exit-code --stat -- support/ebpf || \
		(echo "support/ebpf: committed objects are stale; run 'make generate' and commit" >&2; exit 1)

# The whole test suite; eBPF tests need root.
test:
	$(GO) test -count=1 -p 1 -timeout 15m ./...

# The race detector over every package's tests but the end-to-end ones
# (which run the agent binary, not built with it). As root, the eBPF tests
# run too: the tracer's, which read its state while Run changes it. -short
# keeps one JDK and one node version in the runtime tests (make test runs
# them all). GORACE: a race-built program sleeps a second at exit by
# default (atexit_sleep_ms) for other threads to report; a test binary's
# goroutines are stopped by then, and the 37 packages' seconds add up.
RACE_PKGS = $(shell $(GO) list ./... | grep -v /e2e)
test-race:
	GORACE=atexit_sleep_ms=100 $(GO) test -race -short -count=1 -p 1 -timeout 20m $(RACE_PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(or $(BENCHTIME),1s) ./...

# go vet, then staticcheck (pinned as a go.mod tool) for what vet misses.
lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:" $$out >&2; exit 1; fi

clean:
	rm -rf bin stackline-profiles

# The whole-agent benchmark (root): 60 s under a fixed workload mix; writes
# bench/results.json and fails when a figure is over bench/budgets.json.
bench-agent:
	$(GO) run ./bench/agentbench -duration $(or $(BENCH_DURATION),60s) -out $(or $(BENCH_OUT),bench/results.json)

# The same with off-CPU profiling on (--off-cpu, default threshold and
# fraction), against the same budgets; writes bench/results-offcpu.json.
bench-agent-offcpu:
	$(GO) run ./bench/agentbench -off-cpu -duration $(or $(BENCH_DURATION),60s) -out $(or $(BENCH_OUT),bench/results-offcpu.json)

# The soak (root; not run in CI): 10 min of the benchmark's mix with 200
# short-lived processes a second, churn stopped for the last quarter; checks
# RSS is flat after warm-up and tables, maps and caches return to their
# baseline. Writes bench/soak.json and bench/soak.md.
soak:
	$(GO) run ./bench/agentbench -soak -short-lived 200 -duration $(or $(SOAK_DURATION),10m) -out $(or $(SOAK_OUT),bench/soak.json)

# The container image from a static binary built here (Dockerfile target
# from-host: no registry needed). `docker build .` builds the same image from
# source instead.
# --no-cache: podman 4.3 (buildah 1.28) reuses a cached LABEL layer whose
# ${VERSION} differs; the build is one COPY, so caching saves nothing.
image: image-files
	$(CONTAINER_TOOL) build --no-cache --target from-host --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# bin/image/: the static binary and the CA bundle, laid out as in the image
# (the Dockerfile's build stage runs this too).
image-files:
	rm -rf bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/image/usr/local/bin/stackline ./cmd/stackline
	install -D -m 0644 $(CA_BUNDLE) bin/image/etc/ssl/certs/ca-certificates.crt

# Check the image without running it: entrypoint, labels, and that its binary
# is static and runs here.
check-image:
	deploy/check-image.sh $(CONTAINER_TOOL) $(IMAGE) $(VERSION)

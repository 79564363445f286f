# securetrain — see README.md.
SHELL := /bin/bash
GO ?= go
BIN := bin/securetrain
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/securetrain/securetrain/cmd/securetrain/app.Version=$(VERSION)
# urfave_cli_no_docs: no man-page/markdown generator (and its markdown
# library), which securetrain never calls: ~5 ms less package init at every start.
TAGS := urfave_cli_no_docs
TOOLS_DIR ?= /var/cache/securetrain/tools
export SECURETRAIN_TOOLS := $(TOOLS_DIR)

.PHONY: all build runsc vault setup setup-runtime test test-unit demo bench gpu-acceptance install clean

all: build

build:
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/securetrain

# The pinned, static runsc (CGO_ENABLED=0), cached in $(TOOLS_DIR) and linked at bin/runsc.
# The pinned versions are internal/versions/versions.env's, which the scripts source.
runsc:
	@mkdir -p bin && ln -sf "$$(scripts/build-runsc.sh)" bin/runsc && echo "bin/runsc -> $$(readlink bin/runsc)"

# The pinned Vault (MPL-2.0) for the tests, cached in $(TOOLS_DIR).
vault:
	@scripts/build-vault.sh

setup-runtime:
	scripts/setup.sh runtime

setup:
	scripts/setup.sh test

# Everything CI runs: setup (apt packages, runsc, Vault), build, all tests.
# Each attack case's measured figure is printed at the end (docs/attacks.md).
test: setup build runsc
	@rm -f .attack-report.txt
	SECURETRAIN_BIN=$(CURDIR)/$(BIN) SECURETRAIN_RUNSC=$(CURDIR)/bin/runsc \
	  SECURETRAIN_ATTACK_REPORT=$(CURDIR)/.attack-report.txt \
	  $(GO) test -count=1 -p 1 -timeout 60m ./...
	@touch .attack-report.txt; echo "attack suite: $$(grep -c . .attack-report.txt) figures"; sort .attack-report.txt

# Unit tests only (no root, no runsc).
test-unit:
	$(GO) test -count=1 -short ./...

# The sample training job under the default profile.
demo: setup-runtime build runsc
	SECURETRAIN_RUNSC=$(CURDIR)/bin/runsc scripts/demo.sh

bench: setup-runtime build runsc
	SECURETRAIN_BIN=$(CURDIR)/$(BIN) SECURETRAIN_RUNSC=$(CURDIR)/bin/runsc scripts/bench.sh

# The GPU acceptance run (a host with an NVIDIA GPU; results in $(OUT)).
# DRY=1 runs the parts that need no GPU.
OUT ?= gpu-acceptance-results
gpu-acceptance: build runsc
	SECURETRAIN=$(CURDIR)/$(BIN) RUNSC=$(CURDIR)/bin/runsc scripts/gpu-acceptance.sh $(if $(DRY),--dry-run) $(OUT)

install: build runsc
	install -m 0755 $(BIN) /usr/local/bin/securetrain
	install -m 0755 "$$(readlink bin/runsc)" /usr/local/bin/runsc

clean:
	rm -rf bin .bench

# gim-export: the README's two commands are `make demo` and `make test`; CI runs `make test`.
CARGO ?= cargo
# Where cargo puts its builds (CARGO_TARGET_DIR or a config may move it): asked of cargo itself.
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR := $(if $(TARGET_DIR),$(TARGET_DIR),target)
BIN := $(TARGET_DIR)/debug/gim-export
DEMO_DIR := demo

.PHONY: all build build-deps demo test check fmt clippy bench services clean hostile-fixtures soak

all: build

## build-deps: OpenSSL's headers and pkg-config (installed if missing).
build-deps:
	./scripts/ensure-build-deps.sh

build: build-deps
	$(CARGO) build --locked

## demo: simulate three days into the embedded SQLite Info Mart, export them all, verify, load into
## the embedded SQLite target, and compare row counts.
demo: build
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && $(abspath $(BIN)) -q simulate --source sqlite://infomart.db --days 3 --seed 7
	cd $(DEMO_DIR) && $(abspath $(BIN)) -q export --source sqlite://infomart.db --output output --catch-up
	cd $(DEMO_DIR) && $(abspath $(BIN)) -q verify --input output
	cd $(DEMO_DIR) && $(abspath $(BIN)) -q load --input output --target sqlite://target.db
	./scripts/demo-summary.sh $(DEMO_DIR)

services: build-deps
	./scripts/ensure-services.sh

## test: the whole suite, PostgreSQL included (started or installed if needed).
test: services
	$(CARGO) test --locked

## soak: the chain model test at length: SOAK_ROUNDS random walks of SOAK_STEPS steps each (every kind
## of export, deletions, kills, three receivers), from SOAK_SEED; prints the rows compared.
SOAK_ROUNDS ?= 40
SOAK_STEPS ?= 30
SOAK_SEED ?= 1
soak: services
	GIM_EXPORT_SOAK_ROUNDS=$(SOAK_ROUNDS) GIM_EXPORT_SOAK_STEPS=$(SOAK_STEPS) GIM_EXPORT_SOAK_SEED=$(SOAK_SEED) \
	  $(CARGO) test --locked --test integration chain_model -- --nocapture

fmt:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

check: fmt clippy test

## hostile-fixtures: the crafted folders of fixtures/hostile, written out to look at (the tests build
## their own copy from the same script).
hostile-fixtures:
	python3 fixtures/hostile/craft.py fixtures/hostile/folders

bench: services
	$(CARGO) build --release --locked
	GIM_EXPORT_BENCH_BIN=$(abspath $(TARGET_DIR))/release/gim-export python3 scripts/bench.py

clean:
	rm -rf $(DEMO_DIR)
	$(CARGO) clean

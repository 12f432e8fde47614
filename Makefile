# fairqueue developer tasks. `make` (or `make help`) lists them.
# Everything runs in .venv, created on first use; CI runs .ci/run instead.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST := $(VENV)/bin/pytest
export PYO3_PYTHON := $(abspath $(PY))

.DEFAULT_GOAL := help
.PHONY: help install build test test-rust test-python lint bench bench-rust demo simulate ci clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip "maturin>=1.9.4,<2"

install: $(PY) ## Build the wheel and install it with the test extras into .venv
	$(PIP) install ".[test]"

build: $(PY) ## Build a release wheel into dist/
	$(VENV)/bin/maturin build --release --out dist

test: test-rust test-python ## Run every test (Rust, then Python against the installed wheel)

test-rust: ## Rust unit, property and reference-semantics tests
	cargo test --workspace

test-python: install ## Python tests against the installed wheel (not the source tree)
	$(PYTEST)

lint: install ## rustfmt, clippy -D warnings, stubtest of fairqueue._core, mypy --strict, ruff
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --features python -- -D warnings
	cd / && $(abspath $(PY)) -m mypy.stubtest fairqueue._core --allowlist $(CURDIR)/.ci/stubtest-allowlist.txt
	cd / && $(abspath $(PY)) -m mypy --strict -p fairqueue
	$(VENV)/bin/ruff check python tests benches

bench: install ## Python benchmarks (Rust core vs pure Python; runtime throughput)
	$(PYTEST) benches --benchmark-enable --benchmark-only

bench-rust: ## Criterion benchmarks of the Rust core, no Python
	cargo bench -p fairqueue-core --bench dispatcher

simulate: install ## Simulate the noisy-neighbour scenario under both policies
	$(VENV)/bin/fairqueue simulate noisy

demo: install ## Live demo: a real worker drains a flood and quiet orgs from SQLite
	$(VENV)/bin/fairqueue demo

ci: ## Run the CI script (what CI runs on a clean clone)
	bash .ci/run

clean: ## Remove build outputs, caches and .venv
	cargo clean
	rm -rf $(VENV) dist .pytest_cache .hypothesis .benchmarks .mypy_cache fairqueue-demo.db*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

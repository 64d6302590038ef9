# Tandem developer tasks. Needs only Python 3.11+, Node.js and npm: the Solidity compiler,
# anvil and forge all come from npm (see package.json), everything else from PyPI.
#
#   make setup      create .venv, install the Python and npm dependencies (when they changed), build the dApp
#   make up         the whole platform on a local chain (anvil, masters with weeks of history, keeper,
#                   indexer, API and dApp) until Ctrl-C
#   make test       compile, static analysis, the forge tests (ci profile), the Python tests and the
#                   dApp's browser tests (installs Debian's chromium when missing)
#   make slither    static analysis of contracts/ (fails on any untriaged high or medium finding)
#   make demo       run the copy-trading demo on a fresh local chain
#   make bench-gas  gas benchmark of the protocol against plain Uniswap swaps
#   make bench-keeper  one keeper exits 1,000 breached followers: reaction time, blocks, gas, RPC calls
#   make bench-rankings  recompute the rankings of 10,000 masters; top-50 query latency on PostgreSQL
#   make bench-indexer  backfill from anvil; decode-and-store of 1,000,000 recorded events into PostgreSQL
#   make bench-notifications  block-to-webhook latency of notifications (p50, p99; the node's share)
#   make bench-bridge  one master trade copied to 500 followers over the four stand-ins, then their 500 exits at once
#   make bench-stream  1,000 WebSocket subscribers on two API workers: time until the last has an event
#   make bench-api  rankings over 10,000 masters in PostgreSQL at 50 concurrent clients (p50, p99) next to a trivial endpoint
#   make fuzz-long  the vault invariants at 10,000 runs of depth 100 (tens of minutes)
#   make brownie    Brownie in its own .venv-brownie: compile with the project's solc, deploy, trade
#   make lint       ruff and mypy
#   make clean      remove build outputs and caches (distclean: also .venv and node_modules)
#
# PYTHON=python3.12 make setup picks the interpreter that creates .venv.

PYTHON ?= python3
NPM ?= npm
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.tandem-installed
NPM_STAMP := node_modules/.tandem-installed
# The dApp's static files, built from api/web by esbuild (see api/web/build.mjs).
WEB_STAMP := api/web/dist/index.html
WEB_SOURCES := $(wildcard api/web/src/*) api/web/index.html api/web/build.mjs

.DEFAULT_GOAL := help
# Brownie pins packages that Ape cannot share an environment with: it gets its own.
BROWNIE_VENV := .venv-brownie
BROWNIE_STAMP := $(BROWNIE_VENV)/.tandem-installed
BROWNIE_SPEC := eth-brownie>=1.22,<1.23
BROWNIE_HOME := $(CURDIR)/$(BROWNIE_VENV)/home

.PHONY: help setup up demo test browser slither brownie bench-gas bench-keeper bench-rankings bench-indexer bench-notifications bench-stream bench-api bench-bridge fuzz-long lint clean distclean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

setup: $(PY_STAMP) $(NPM_STAMP) $(WEB_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: $(PYTHON) is older than Python 3.11; run e.g. make setup PYTHON=python3.12" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes (or the stamp is missing).
$(PY_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev,ape]'
	@touch $@

# `npm ci` empties node_modules first, so the stamp is written after it.
$(NPM_STAMP): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund
	@touch $@

$(WEB_STAMP): $(NPM_STAMP) $(WEB_SOURCES)
	node api/web/build.mjs

demo: setup
	$(BIN)/tandem demo

up: setup
	$(BIN)/tandem up

test: setup
	$(BIN)/tandem compile
	$(MAKE) --no-print-directory slither
	FOUNDRY_PROFILE=ci bin/forge test
	$(MAKE) --no-print-directory brownie
	$(BIN)/pytest -q --ignore=tests/python/browser
	$(MAKE) --no-print-directory browser

# The dApp in a real browser: Debian's chromium driven by Playwright (which cannot download a
# browser of its own here). Installed with apt when missing, as root; otherwise it says how.
browser: setup
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the browser tests"; \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
		else \
			echo "error: the browser tests need chromium at /usr/bin/chromium: run 'sudo apt-get install chromium' (Debian/Ubuntu) or set TANDEM_CHROMIUM to a Chromium binary" >&2; exit 1; \
		fi; }
	$(BIN)/pytest -q tests/python/browser
# Slither drives forge, so bin/ (forge as its native binary) goes first on PATH; see
# contracts/slither-triage.md.
slither: setup
	FOUNDRY_PROFILE=slither PATH="$(CURDIR)/bin:$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/slither .

$(BROWNIE_VENV)/bin/python:
	$(PYTHON) -m venv $(BROWNIE_VENV)

# eth-brownie alone: it pins packages this project's own need newer (python-dotenv for
# pydantic-settings), so the brownie script uses nothing of the tandem package.
$(BROWNIE_STAMP): | $(BROWNIE_VENV)/bin/python
	$(BROWNIE_VENV)/bin/python -m pip install --disable-pip-version-check -q '$(BROWNIE_SPEC)'
	@touch $@

# `tandem compile` links bin/solc where Brownie's py-solc-x looks (build/ape/solcx). Brownie
# keeps its network settings in ~/.brownie: HOME points into .venv-brownie, so the port chosen
# here (a free one) stays there. Brownie starts anvil from node_modules/.bin on it for the run
# and stops it after.
# Brownie compiles every source under contracts/, hidden folders too: Ape's copies of its
# dependencies in contracts/.cache (which Ape makes again when it needs them) go first.
brownie: setup $(BROWNIE_STAMP)
	$(BIN)/tandem compile
	rm -rf contracts/.cache
	@mkdir -p $(BROWNIE_HOME)
	export HOME="$(BROWNIE_HOME)" SOLCX_BINARY_PATH="$(CURDIR)/build/ape/solcx" \
		PATH="$(CURDIR)/node_modules/.bin:$$PATH" && \
	$(BROWNIE_VENV)/bin/brownie networks modify development gas_limit=30000000 \
		port=$$($(BIN)/python -c 'from tandem.node import free_port; print(free_port())') \
		> /dev/null && \
	$(BROWNIE_VENV)/bin/brownie run deploy_and_trade

bench-gas: setup
	$(BIN)/python benchmarks/gas.py

bench-keeper: setup
	$(BIN)/tandem compile
	$(BIN)/python benchmarks/keeper.py

bench-rankings: setup
	$(BIN)/python benchmarks/rankings.py

bench-indexer: setup
	$(BIN)/python benchmarks/indexing.py

bench-notifications: setup
	$(BIN)/python benchmarks/notifications.py

bench-bridge: setup
	$(BIN)/python benchmarks/cex_bridge.py

# The API checks the interfaces' ABIs at start: compiled first.
bench-stream: setup
	$(BIN)/tandem compile
	$(BIN)/python benchmarks/stream.py

bench-api: setup
	$(BIN)/tandem compile
	$(BIN)/python benchmarks/api_load.py

# The invariant tests far beyond the ci profile's 256 runs, before a release or after a change
# to the vault's accounting.
fuzz-long: setup
	FOUNDRY_INVARIANT_RUNS=10000 FOUNDRY_INVARIANT_DEPTH=100 bin/forge test --match-path 'tests/forge/invariant/*'

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	node_modules/.bin/tsc -p api/web

clean:
	rm -rf build .build contracts/.cache .pytest_cache .ruff_cache .mypy_cache
	find . -path ./node_modules -prune -o -path ./$(VENV) -prune -o \
		-name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(BROWNIE_VENV) node_modules *.egg-info

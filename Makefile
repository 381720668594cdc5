# Set-up and entry points. `make run` / `make test` create .venv in the checkout when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= conf/default.yaml

.PHONY: run precompute sweep table test test-fast bench bench-train clean head submit stop-head docs

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -e '.[test]'
	@# byte-compiled here on every core (pip compiles one file at a time: 101 s against 55 + 28 s measured), and
	@# paric's own sources too (an editable install's are never compiled by pip, and where PYTHONDONTWRITEBYTECODE
	@# is set no process caches them); a few vendored files that no Python 3 compiles are skipped, as pip skips them,
	@# and so are the dependencies' own test suites (a sixth of the files, never imported here: 20.5 s against ~28 s)
	$(BIN)/python -m compileall -q -q -j 0 -x '/tests?/' $(VENV)/lib paric pipelines > /dev/null || true
	touch $@

# The main job: every stage (cached) on the embedded default; QUICK=1 for the smoke profile.
run: $(BIN)/.installed
	$(BIN)/python pipelines/full.py --config $(CONFIG) $(if $(QUICK),--quick)

precompute: $(BIN)/.installed
	$(BIN)/python pipelines/precompute.py --config $(CONFIG)

sweep: $(BIN)/.installed
	$(BIN)/python pipelines/sweep.py --config $(CONFIG)

# The README's methods table: every method in train.compare over train.seeds.
table: $(BIN)/.installed
	$(BIN)/python pipelines/train.py --config $(CONFIG) --methods compare --seeds all

test: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The unit tier: every test that needs neither the Ray cluster nor whole stages.
test-fast: $(BIN)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

# The docs site into site/ (the reference pages regenerated from the code first); the tests build it strictly.
docs: $(BIN)/.installed
	$(BIN)/python -m paric.reference_docs docs/reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_maps.py

bench-train: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_train_io.py --config $(CONFIG)

# `ray job submit` against a local head, as on a cluster (README "Under ray job submit"). The head is
# started with this venv first on PATH, so the job's `python` is the venv's; Ray >= 2.59 turns on token
# auth for local clusters and the job CLI sends the token only with RAY_AUTH_MODE=token.
RAY_PORT ?= 6379
DASHBOARD_PORT ?= 8265
HEAD_FLAGS ?=
ARGS ?= --quick run.output_dir=$(CURDIR)/outputs/quick
RAY_ENV := PATH="$(CURDIR)/$(BIN):$$PATH" RAY_AUTH_MODE=token

head: $(BIN)/.installed
	$(RAY_ENV) $(BIN)/ray start --head --port=$(RAY_PORT) --dashboard-port=$(DASHBOARD_PORT) \
		--include-dashboard=true --disable-usage-stats $(HEAD_FLAGS)

submit: $(BIN)/.installed
	@chmod 600 $(HOME)/.ray/auth_token 2>/dev/null || true  # Ray writes the token world-readable
	$(RAY_ENV) $(BIN)/ray job submit --address http://127.0.0.1:$(DASHBOARD_PORT) --working-dir . -- \
		python pipelines/full.py $(ARGS)

# Stops every Ray process of this user on this machine (Ray's own `ray stop`).
stop-head:
	$(BIN)/ray stop

clean:
	rm -rf outputs

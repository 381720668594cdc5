# Set-up and entry points. `make run` / `make test` create .venv in the checkout when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= conf/default.yaml

.PHONY: run precompute sweep table test test-fast bench bench-train clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
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

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_maps.py

bench-train: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_train_io.py --config $(CONFIG)

clean:
	rm -rf outputs

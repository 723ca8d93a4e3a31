PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
STAMP := $(VENV)/.installed

.PHONY: install demo test bench docs lint clean results

# the suite alone: what `make demo` needs (a newcomer's first minutes install no test tooling)
$(BASE): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $(BASE)

# and the test, lint and Ray extras with FMN's reference implementation: tests, benches, studies
$(STAMP): $(BASE)
	$(BIN)/pip install -q -c constraints.txt -e '.[test,dev,ray]'
	# FMN's reference for tests and bench/; its torchvision and visdom serve attacks never loaded
	$(BIN)/pip install -q --no-deps adv-lib==0.2.8
	touch $(STAMP)

install: $(STAMP)

demo: $(BASE)
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/suite run manifests/quick.toml
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/suite report quick

# one pytest worker per core, one torch thread each (two threads per core spin against each other)
test: $(STAMP)
	OMP_NUM_THREADS=1 MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q -n auto

bench: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/train_throughput.py
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/attack_throughput.py --quick
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/scaling.py
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/distill_quality.py --quick

# docs/benchmarks.md, regenerated from what the quick benchmarks measure on this machine (each run
# recorded as bench/results/NAME.json); the slower ones record the same way by hand:
# python bench/record.py NAME -- python bench/attack_vs_foolbox.py, then make docs-render
docs: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/record.py train_throughput -- $(BIN)/python bench/train_throughput.py
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/record.py attack_throughput -- $(BIN)/python bench/attack_throughput.py --quick
	$(MAKE) docs-render

docs-render:
	$(BIN)/python bench/render_docs.py

# The published answers (results/<study> and the README's Results blocks), regenerated, never
# hand-edited: each study's manifest is run, then published. STUDY=<name> picks one. Resumable:
# finished models and attacks are reused from the store. On a machine with its own CUDA torch:
# make results SUITE=/path/to/venv/bin/suite STUDY=seed-replication (see bench/gpu_env.sh).
SUITE ?= $(BIN)/suite
STUDIES := defensive-distillation dataset-distillation exact
STUDY ?= $(STUDIES)
results: $(if $(filter $(BIN)/suite,$(SUITE)),$(STAMP))
	$(SUITE) data download mnist --root data
	set -e; for study in $(STUDY); do \
	  MLFLOW_DISABLE_TELEMETRY=true $(SUITE) run manifests/$$study.toml; \
	  MLFLOW_DISABLE_TELEMETRY=true $(SUITE) publish manifests/$$study.toml; \
	done

lint: $(STAMP)
	$(BIN)/ruff check suite tests bench
	$(BIN)/ruff format --check suite tests bench

clean:
	rm -rf $(VENV) .pytest_cache

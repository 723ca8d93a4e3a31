PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/suite run manifests/quick.toml
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/suite report quick

test: $(STAMP)
	OMP_NUM_THREADS=1 MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python -m pytest -q

bench: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/train_throughput.py
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/attack_throughput.py --quick
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/scaling.py
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/python bench/distill_quality.py --quick

lint: $(STAMP)
	$(BIN)/ruff check suite tests bench
	$(BIN)/ruff format --check suite tests bench

clean:
	rm -rf $(VENV) .pytest_cache

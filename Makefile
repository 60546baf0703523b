# The two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS ?= cpu,dev
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: venv install test unit integration lint format demo plan-quickstart clean-results

venv: $(STAMP)

# torch goes first and pinned: a looser requirement would pull a multi-GB CUDA build on a CPU machine.
# DS_BUILD_OPS=0 builds DeepSpeed as pure Python; its C++ ops compile on first use.
# The registry builds of torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers`.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	-$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

# ruff, and the layering contracts of .importlinter (stages never import each other, launchers import no stage,
# the core imports no stage): checked by a tool, not by review.
lint: $(STAMP)
	$(BIN)/ruff check framework launchers tests benchmarks
	$(BIN)/ruff format --check framework launchers tests benchmarks
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format framework launchers tests benchmarks
	$(BIN)/ruff check --fix framework launchers tests benchmarks

# The quickstart sweep end to end on CPU: tiny model, ZeRO-3 over 2 processes, vLLM, MLflow, report.
demo: $(STAMP)
	$(BIN)/ablate run ablations/quickstart.yaml
	@echo ""
	@echo "Report:        results/quickstart/report.md  (tables as CSV and plots as PNG beside it)"
	@echo "MLflow store:  sqlite:///results/mlflow.db"
	@echo "Browse it:     .venv/bin/ablate ui ablations/quickstart.yaml   (then open http://127.0.0.1:5000)"

# Re-pin constraints.txt to what is installed now (after a green `make test`).
freeze: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

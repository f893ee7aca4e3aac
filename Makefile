# dltrack: one command per task. `make` alone lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 5000
# Notebook 03's model: the Hub model by default; on machines with the shared folder beside the
# project (no Hub access), the local stand-in. An explicit DLTRACK_SENTIMENT_MODEL wins.
SHARED_SENTIMENT_MODEL := ../shared/models/sentiment-minilm
ifneq ($(wildcard $(SHARED_SENTIMENT_MODEL)/config.json),)
export DLTRACK_SENTIMENT_MODEL ?= $(SHARED_SENTIMENT_MODEL)
export HF_HUB_OFFLINE ?= 1
endif
LAB_PORT ?= 8888
# Links the notebooks print point at the UI `make ui` starts.
export DLTRACK_UI_URL ?= http://127.0.0.1:$(PORT)
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -c requirements/constraints.txt

.DEFAULT_GOAL := help
AZ_VENV ?= .venv-azureml
.PHONY: help setup setup-venv setup-azure-server setup-browser setup-postgres server server-stop server-status server-user server-env demo test test-unit lint ui lab bench-train bench-autolog bench-accuracy bench-team bench-serve clean clean-runs

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

setup: setup-venv setup-azure-server ## Create .venv (dltrack with every extra, at the pinned versions) and .venv-azureml

setup-venv: ## Create .venv and install dltrack with every extra, at the pinned versions
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".[all]"
	$(PY) tools/install_kernel.py
	@$(PY) -c "import dltrack, mlflow; print('dltrack', dltrack.__version__, '| mlflow', mlflow.__version__, '| ready')"

setup-azure-server: ## Create .venv-azureml with Azure ML's inference server (for the local Azure contract test)
	$(PYTHON) -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/python -m pip install --disable-pip-version-check --upgrade pip
	$(AZ_VENV)/bin/python -m pip install --disable-pip-version-check -r requirements/azureml-server.txt

demo: ## Run the notebooks headless on the shipped subset and report their runs, models and aliases (PROFILE=course: the course's values)
	$(if $(PROFILE),DLTRACK_PROFILE=$(PROFILE) )$(PY) tools/notebooks.py

test: ## Unit tests, serving, browser and team-mode tests, every notebook end to end twice on one store (shipped subset)
	$(PY) -m pytest

test-unit: ## Only the fast unit tests (no notebooks, no servers)
	$(PY) -m pytest tests -m "not notebook and not serving and not team and not browser" -o addopts="-ra"

lint: ## ruff on the package and the tests
	$(VENV)/bin/ruff check src tests tools benchmarks

ui: ## MLflow UI on the project's store at 127.0.0.1, port PORT=5000; prints the links to open
	$(PY) tools/ui.py --port $(PORT)

lab: ## JupyterLab on 127.0.0.1, port LAB_PORT=8888, in notebooks/ (token authentication), same environment as make demo
	$(PY) -m jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

setup-browser: ## Install Debian's Chromium for the browser tests (apt-get, as root) unless one is installed
	@if command -v chromium >/dev/null 2>&1; then chromium --version; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium && chromium --version; \
	else echo "Chromium is missing: run 'sudo make setup-browser' (Debian, Ubuntu), or install it and set DLTRACK_CHROMIUM=/path/to/chromium"; exit 1; fi

server: ## Team mode: PostgreSQL + MLflow tracking server with authentication on 127.0.0.1 (state in .team/)
	$(PY) -m dltrack.team start

server-stop: ## Team mode: stop the MLflow server and PostgreSQL (the data stays)
	$(PY) -m dltrack.team stop

server-status: ## Team mode: what runs where
	$(PY) -m dltrack.team status

server-user: ## Team mode: create the account NAME=<user>; its password goes to a 0600 file in .team/
	$(PY) -m dltrack.team add-user -- "$$NAME"

server-env: ## Team mode: shell lines that point clients at the server as NAME: eval "$(make -s server-env NAME=alice)"
	@$(PY) -m dltrack.team env -- "$$NAME"

setup-postgres: ## Install Debian's PostgreSQL server (apt-get, as root) unless its binaries are found
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
	  echo "PostgreSQL server: $$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null || dirname $$(command -v initdb))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else echo "The PostgreSQL server is missing: 'sudo apt-get install postgresql' (Debian, Ubuntu) or 'brew install postgresql@15' (macOS)"; exit 1; fi

bench-train: ## Benchmark: train the notebook models on the full data set, with and without MLflow, epochs interleaved (about 25 min)
	$(PY) benchmarks/train_bench.py --data $(or $(DLTRACK_FASHION_MNIST_DIR),../shared/data/fashion-mnist)

bench-autolog: ## Benchmark: what MLflow autolog costs, tracked and untracked fits alternating in one process (about 2 min)
	$(PY) benchmarks/autolog_overhead.py --data $(or $(DLTRACK_FASHION_MNIST_DIR),../shared/data/fashion-mnist)

bench-accuracy: ## Benchmark: test accuracy of notebooks 01 and 02 with their defaults on the full data, 3 seeds (about 30 min)
	$(PY) benchmarks/accuracy_seeds.py --data $(or $(DLTRACK_FASHION_MNIST_DIR),../shared/data/fashion-mnist)

bench-team: ## Benchmark: notebooks 01 and 02 against the team server and the local store, side by side (about 10 min)
	$(PY) benchmarks/team_bench.py

bench-serve: ## Benchmark: REST latency by model (flavor, fast, MLflow floor) and body (JSON, Parquet), in turns, with the target ratios (about 4 min)
	$(PY) benchmarks/serve_bench.py

clean: ## Remove executed notebooks, caches and build output (keeps the MLflow store)
	rm -rf build .pytest_cache data/.cache
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
	find notebooks -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +

clean-runs: ## Delete the project's default MLflow store in mlruns/ (not one MLFLOW_TRACKING_URI points elsewhere)
	rm -rf mlruns/mlflow.db mlruns/artifacts

# --- lessons: the executed notebooks as a static site, and both profiles' accuracy (issue 19)
.PHONY: docs bench-profiles

docs: ## The notebooks as make demo executed them (build/executed/) and the guides in docs/, rendered to build/site/index.html
	$(PY) tools/site_builder.py --executed $(or $(EXECUTED),build/executed) --out build/site

bench-profiles: ## Benchmark: test accuracy of notebooks 01 and 02, default and course profiles, full data, 3 seeds (about 1 h)
	$(PY) benchmarks/accuracy_seeds.py --profiles default,course --data $(or $(DLTRACK_FASHION_MNIST_DIR),../shared/data/fashion-mnist)

# Notebook 05: training beyond one machine (DDP)
.PHONY: bench-ddp
BENCH_DDP_ARGS ?=
bench-ddp: ## Benchmark: 2-process DDP, and DDP with fp16-compressed gradients, against 1 process on the full data, same epochs and global batch, 3 seeds; BENCH_DDP_ARGS="--epochs 1 --seeds 42" for a quick look
	$(PY) benchmarks/ddp_bench.py --data $(or $(DLTRACK_FASHION_MNIST_DIR),../shared/data/fashion-mnist) $(BENCH_DDP_ARGS)

# Notebook 06's sweep workers (issue 18)
.PHONY: bench-sweep
bench-sweep: ## Benchmark: the same sweep trials with 1 worker and with 2 (threads split), wall-time ratio, best accuracy vs notebook 02's defaults (about 5 min on the subset; TRIALS=, EPOCHS=)
	$(PY) benchmarks/sweep_bench.py --data "$(DLTRACK_FASHION_MNIST_DIR)" --trials $(or $(TRIALS),4) --epochs $(or $(EPOCHS),2)

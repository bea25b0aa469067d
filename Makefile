# The README's two commands: `make run` (the whole pipeline) and `make test`.
# Both create .venv, install the lock file and the project, and make sure the
# data can be had offline before they start.

# Any supported Python (3.11 to 3.13): make run PYTHON=python3.13. VENV: another virtualenv
# beside the default one, e.g. .ci/run's VENV=.venv/py3.13 (inside .venv, which every tool skips).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(CURDIR)/$(VENV)/bin
# Jobs call `fashion-mlp`, `snakemake` and `dvc` from the virtualenv.
export PATH := $(BIN):$(PATH)

DEBIAN_DATA := /usr/share/datasets/fashion-mnist

.PHONY: run repro test test-fast lint bench install data tcmalloc ui mlflow-server serve dockerfile lock clean help

help:
	@echo "make run      install, then run the whole pipeline (snakemake --cores all)"
	@echo "make repro    dvc repro, its jobs forked from one process that imported TensorFlow (docs/speed.md)"
	@echo "make test     install, then run the test suite (what CI runs)"
	@echo "make test-fast  the unit tests, about a minute: tiny seeded models, no Snakemake/DVC/MLflow subprocess"
	@echo "make lint     ruff (lint + format check), snakefmt --check, snakemake --lint"
	@echo "make bench    project train vs plain Keras, and no-op reruns (after make run)"
	@echo "make ui       MLflow UI on http://127.0.0.1:5000"
	@echo "make mlflow-server  team tracking server on http://127.0.0.1:5000 (PostgreSQL store, served artifacts)"
	@echo "make serve    the champion over REST on http://127.0.0.1:5001/invocations (docs/serving.md)"
	@echo "make dockerfile  the champion's Docker build context in build/docker/ (no network; docs/serving.md)"
	@echo "make lock     regenerate requirements.lock (one lock for Python 3.11 to 3.13) from pyproject.toml"
	@echo "make docs     regenerate docs/parameters.md (params.yaml, schema) and the results blocks of the docs (reports/)"
	@echo "make dag      redraw docs/dag.svg, the README's picture of the pipeline (needs Graphviz)"

run: install data tcmalloc
	snakemake --cores all

# DVC has no onstart: the fork server (which the Snakefile starts for `make run`) wraps the command.
repro: install data tcmalloc
	python -m fashion_mlp.forkserver -- dvc repro

# pytest-xdist: a worker per core, and two more that mostly wait for the DVC smoke run before their
# tests (tests/smoke_runs.py orders and groups the tests: loadgroup keeps the tests of one smoke copy,
# or of one module, on one worker and in order; no reorder keeps that order).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
test: install data tcmalloc
	python -m pytest --numprocesses $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# After every edit: leaves out the tests marked slow (training, engine subprocesses) and e2e.
test-fast: install data
	python -m pytest -m "not slow and not e2e" --numprocesses auto --dist loadgroup

# Settings in pyproject.toml ([tool.ruff], [tool.snakefmt]). `ruff format .` and `snakefmt .` fix layout.
lint: install
	ruff check .
	ruff format --check .
	snakefmt --check .
	snakemake --lint

# Needs the prepared data and an up-to-date pipeline (make run) for the no-op rerun timings.
bench: install
	python benchmarks/speed.py --repeats 3

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Offline fallback: Debian's dataset-fashion-mnist, where apt-get can run as root.
# Elsewhere the download stage fetches from the official mirrors.
data:
	@if [ ! -d $(DEBIAN_DATA) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's dataset-fashion-mnist (offline copy of the data)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

# Optional speed: Snakemake's jobs allocate with Debian's tcmalloc where it is installed (the same
# bytes, ~5 % less CPU: docs/speed.md; forkserver.with_tcmalloc). Installed where apt-get can run as root.
tcmalloc:
	@if ! ldconfig -p | grep -q libtcmalloc_minimal.so.4 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's libtcmalloc-minimal4 (a faster allocator for the jobs)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4; \
	fi

# MLflow 3's UI opens on its GenAI overview; the link printed first opens the experiment's runs in its
# "Model training" view (checked in headless Chromium; clicking "Model training" once is what the browser remembers).
ui: install
	@python -c 'import mlflow, yaml; mlflow.set_tracking_uri("sqlite:///$(CURDIR)/mlflow.db"); \
		e = mlflow.get_experiment_by_name(yaml.safe_load(open("params.yaml"))["mlflow"]["experiment"]); \
		print("The runs:", f"http://127.0.0.1:5000/#/experiments/{e.experiment_id}?workflowType=machine_learning" \
		if e else "none yet (make run first)")' 2>/dev/null || true
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# A team tracking server: PostgreSQL (Debian's, started here) as the store, artifacts served
# from .mlflow-server/artifacts; settings in the script's docstring (TRACKING_SERVER_* variables).
mlflow-server: install
	python workflow/scripts/mlflow_server.py

# The registered champion, whichever version the alias points at (docs/serving.md). The store is
# the pipeline's unless MLFLOW_TRACKING_URI is set; SERVE_PORT and SERVE_HOST change the address.
# Both are shell text, expanded when a recipe runs: the name comes from params.yaml.
SERVE_STORE  = MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"
CHAMPION_URI = models:/$$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["mlflow"]["registered_model"])')@champion
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 5001
serve: install
	$(SERVE_STORE) mlflow models serve -m "$(CHAMPION_URI)" --env-manager local --host $(SERVE_HOST) --port $(SERVE_PORT)

# The champion's Docker build context: a Dockerfile serving it on port 8080, the model and its pinned
# requirements. Only files are written (no network, no Docker); build and run it where Docker is
# (docs/serving.md). The old context goes first, so no file of a former champion is copied in.
DOCKER_DIR ?= build/docker
dockerfile: install
	rm -rf "$(DOCKER_DIR)/model_dir" "$(DOCKER_DIR)/Dockerfile"
	$(SERVE_STORE) mlflow models generate-dockerfile -m "$(CHAMPION_URI)" -d "$(DOCKER_DIR)" --env-manager local

# One universal lock (environment markers) for every Python that requires-python allows, resolved
# from 3.11 up; the pins already in requirements.lock are kept where they still fit.
lock: install
	uv pip compile --quiet --universal --python-version 3.11 --extra test --extra dev --extra lint \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

clean:
	rm -rf .snakemake logs benchmarks/stages

.PHONY: docs dag

# The parameter reference, and every result the README and docs/ quote (the blocks between
# `<!-- results:NAME -->` and `<!-- /results -->`, from the git-tracked reports), are generated,
# never typed: tests/documents/test_docs.py fails when either is stale. Run it after a run changes reports/.
docs: install
	python workflow/scripts/params_doc.py
	python workflow/scripts/results_doc.py

# Every job of a full run of the committed params.yaml (`all` left out: its inputs are these two files'
# ancestors; tests/documents/test_docs.py checks the picture against Snakemake's DAG). Needs Graphviz (apt-get).
dag: install
	snakemake reports/summary.md reports/model_card.md --forceall --dag dot > docs/dag.dot.tmp
	dot -Tsvg docs/dag.dot.tmp -o docs/dag.svg.tmp && mv docs/dag.svg.tmp docs/dag.svg
	rm -f docs/dag.dot.tmp

# airflow-mlops: `make demo` runs the whole model lifecycle for real; `make test` runs every check.
# Both install what they need first (a virtualenv in .venv from the pinned requirement files).

PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV       := .venv
PY         := $(VENV)/bin/python
UV_VERSION := 0.13.9
STAMP      := $(VENV)/.installed
REQS       := requirements.txt requirements-task.txt serving/requirements.txt requirements-dev.txt \
              constraints.txt pyproject.toml

.PHONY: install demo up down train test lint format typecheck pytest mlflow mlflow-stop serve \
        register-webhook bench bench-training bench-validate bench-serving bench-monitoring \
        bench-batch clean lock scan

install: $(STAMP)

$(STAMP): $(REQS) provider/pyproject.toml
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install --python $(PY) --quiet \
		-r requirements.txt -r requirements-task.txt -r serving/requirements.txt \
		-r requirements-dev.txt -c constraints.txt
	$(VENV)/bin/uv pip install --python $(PY) --quiet --no-deps -e . -e provider
	touch $(STAMP)

# The policy scanner lives in its own virtualenv: its pins conflict with Airflow's
# (requirements-scan.txt says which).
SCAN_VENV  := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed

$(SCAN_STAMP): requirements-scan.txt
	test -x $(SCAN_VENV)/bin/python || $(PYTHON_BIN) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(SCAN_VENV)/bin/uv pip install --python $(SCAN_VENV)/bin/python --quiet -r requirements-scan.txt
	touch $(SCAN_STAMP)

## The main job: MLflow, Airflow and the model service on loopback; train, approve, canary,
## promote, a rejected drifted model, drift detected in served traffic, retraining; then stop.
## Then, in the same Airflow, a second model onboarded from a real dataset (breast cancer) is
## trained and released. `make demo MODEL=<name>` tells the story of one model in models/.
MODEL ?= churn
# The model named on the command line (or in the environment); empty for the two-model demo.
DEMO_MODEL := $(if $(filter file,$(origin MODEL)),,$(MODEL))

## PROFILE=distributed: the same story on PostgreSQL, Celery (Redis) with two schedulers and two
## workers, MLflow on PostgreSQL + S3, and an S3 data plane (moto's server; PostgreSQL and Redis
## must be running on 127.0.0.1).
PROFILE ?= embedded

demo: install
	MLOPS_DEMO_MODEL=$(DEMO_MODEL) MLOPS_DEMO_PROFILE=$(PROFILE) $(PY) scripts/lifecycle.py $(ARGS)

## The same, left running to explore the UIs; `make down` stops it.
up: install
	MLOPS_DEMO_MODEL=$(DEMO_MODEL) MLOPS_DEMO_PROFILE=$(PROFILE) $(PY) scripts/lifecycle.py \
		--keep-running $(ARGS)

down:
	$(PY) scripts/lifecycle.py --stop

## Only the training DAG, through dag.test() (no scheduler): ~1 minute.
train: install
	$(PY) scripts/run_training.py --model $(MODEL) $(ARGS)

## Every check CI runs: the policy scan, lint, format, package contracts (import-linter), types,
## then the tests.
test: install scan lint typecheck pytest

## Policy scan, offline (no API key, no policy download, no version check): checkov's Kubernetes
## and Dockerfile checks over the repository. Any failed check or unparsable file fails; each
## deliberate exception is a skip annotation with its reason in the manifest or Dockerfile.
scan: $(SCAN_STAMP)
	BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true CKV_PARSE_ERROR_FAIL=true \
		$(SCAN_VENV)/bin/checkov --directory . --framework kubernetes dockerfile \
		--skip-download --skip-results-upload --compact --quiet

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck:
	$(VENV)/bin/mypy

## The monitoring and canary-analysis tests run a real Prometheus and promtool (Debian's
## prometheus package); installed only where either is missing.
PROMETHEUS_STAMP := $(VENV)/.prometheus-installed
PROMETHEUS_HINT  := install the prometheus package (2.x) of your system as root, or put the \
                    prometheus and promtool binaries on PATH

$(PROMETHEUS_STAMP):
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends prometheus; } || \
		{ echo "apt-get could not install prometheus: $(PROMETHEUS_HINT)" >&2; exit 1; }; \
	else \
		echo "no prometheus/promtool and no apt-get: $(PROMETHEUS_HINT)" >&2; exit 1; \
	fi
	mkdir -p $(VENV) && touch $@

## Two workers (pytest-xdist), a test module at a time on each: most of the suite's wall time is
## live stacks waiting on heartbeats, retry delays and polls, which overlap well on two cores.
## Modules are handed out in collection order (live ones first, tests/conftest.py), not xdist's
## default of the most tests first. PYTEST_WORKERS=0 runs in one process (for a debugger).
## The 20 slowest tests are listed at the end: where a slow run's minutes went.
PYTEST_WORKERS ?= 2

pytest: $(PROMETHEUS_STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20 \
		$(PYTEST_ARGS)

mlflow: install
	$(PY) scripts/mlflow_server.py start --home .mlops/mlflow

mlflow-stop:
	$(PY) scripts/mlflow_server.py stop --home .mlops/mlflow

## The model service on 127.0.0.1:8000 in dev mode, loading local bundles from the model store.
serve: install
	SERVING_DEV_MODE=true SERVING_MODEL_NAME=$(MODEL) SERVING_MODEL_STORE=.mlops/model-store/$(MODEL) \
	SERVING_PREDICTION_LOG=.mlops/predictions MLFLOW_TRACKING_URI=http://127.0.0.1:5000 \
	$(VENV)/bin/uvicorn --factory mlops_serving.app:create_app --host 127.0.0.1 --port 8000

## Point MLflow's registry webhooks at the Airflow API server (secret from MLOPS_WEBHOOK_SECRET).
register-webhook: install
	$(PY) scripts/register_webhook.py --mlflow-url $${MLFLOW_URL:-http://127.0.0.1:5000} \
		--airflow-url $${AIRFLOW_URL:-http://127.0.0.1:8080} --secret-env MLOPS_WEBHOOK_SECRET

## Every data-size benchmark in one run (about 45 minutes; tables in the README's Benchmarks):
## the training steps at 100k/1M/10M and the DAG at 100k/10M (BENCH_BASELINE=REV measures an
## earlier revision's steps in the same run), validate vs a plain pass, monitoring at 1M/10M,
## batch scoring vs a bare Booster.predict loop. Each also runs alone, with ARGS.
bench: install
	$(PY) bench/bench_training.py $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))
	$(PY) bench/bench_validate.py $(BENCH_ROWS)
	$(PY) bench/bench_monitoring.py
	$(PY) bench/bench_batch_scoring.py --rows 1000000 10000000

BENCH_ROWS := --rows 100000 1000000 10000000

## The training steps and DAG; ARGS e.g. "--rows 100000 --dag-rows 100000 --baseline REV".
bench-training: install
	$(PY) bench/bench_training.py $(ARGS)

## validate vs a plain pandas/scipy pass of the same checks (and GX's own run up to 1M rows).
bench-validate: install
	$(PY) bench/bench_validate.py $(ARGS)

## Monitoring: the drift decision on 1M/10M served rows x 20 features, with and without the read.
bench-monitoring: install
	$(PY) bench/bench_monitoring.py $(ARGS)

## Batch scoring: score-batch end to end vs a bare Booster.predict loop (ARGS="--rows 10000000").
bench-batch: install
	$(PY) bench/bench_batch_scoring.py $(ARGS)

## Serving: this service vs `mlflow models serve` vs a bare endpoint (load from wrk).
bench-serving: install
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(PY) bench/bench_serving.py $(ARGS)

## Re-resolve constraints.txt after editing a requirements file.
lock: install
	$(VENV)/bin/uv pip compile --python-version 3.11 --no-header --annotation-style line \
		requirements.txt requirements-task.txt serving/requirements.txt requirements-dev.txt \
		-o constraints.txt

clean:
	rm -rf .mlops .pytest_cache .mypy_cache .ruff_cache

"""The whole model lifecycle on the embedded default, for real, in one command (``make demo``).

1. Start a local MLflow server (SQLite, local artifacts, webhooks allowed on loopback), Airflow
   (API server, scheduler, DAG processor, triggerer: what ``airflow standalone`` starts) with
   ``airflow_settings.yaml`` applied, and the model service; MLflow's registry webhook points at
   Airflow's webhook bridge.
2. The training DAG trains and registers a challenger; the deployment DAG wakes from the registry
   event, waits for approval (given here through Airflow's REST API, as the UI's button does,
   after printing the UI link), builds the local bundle, runs the canary, analyses it, promotes.
3. A training run on drifted data produces a worse model: the gate rejects it, the champion keeps
   serving and the aliases do not move.
4. The drifted customers reach the service and, later, their outcomes land as delayed labels; the
   monitoring DAG sees the drift and the champion's drop in what was served and emits the drift
   asset event, which retrains on the served, labelled customers (mixed with the champion's
   training rows); the retrained version must beat the first on the drifted hold-out by a clear
   margin, and is approved and released.
5. Without ``MODEL`` (``make demo``): a second model from a real dataset in the same Airflow
   (scikit-learn's breast cancer table: contract infer, a hard limit set, contract check, its own
   service and serving connection, its DAGs, training, approval and release; see
   lifecycle_second.py). ``make demo MODEL=<name>`` tells one model's story.
6. A summary (versions, aliases, ledger, reports, UI URLs); then every process is stopped by its own
   PID, unless ``--keep-running`` (``make up``; ``make down`` stops it later).

All state lives under ``.mlops/lifecycle/`` and starts fresh on every run (a previous run's
processes, found by the PIDs it recorded, are stopped first), so re-running is safe. Every process
reads the demo's own models directory (``.mlops/lifecycle/models``: a copy of models/ plus the
onboarded contract), so the repository's models/ is never changed.

This module is the command line; the stack is started in lifecycle_stack.py, the acts are in
lifecycle_story.py (driving DAG runs through lifecycle_runs.py), the summary in
lifecycle_report.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from distributed_stack import ServiceDown
from lifecycle_report import summary
from lifecycle_second import second_model
from lifecycle_stack import (
    ACTS,
    PIDS_FILE,
    SECOND_MODEL,
    STATE,
    say,
    stage,
    start_stack,
    stop_previous,
)
from lifecycle_story import story


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave MLflow, Airflow and the service up to explore (make down)",
    )
    parser.add_argument("--stop", action="store_true", help="stop a kept-running stack and exit")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per training partition")
    parser.add_argument(
        "--traffic-rows",
        type=int,
        default=10_000,
        help="drifted customers served, then labelled: what the retraining learns from",
    )
    parser.add_argument(
        "--min-margin",
        type=float,
        default=0.05,
        help="the retrained version must beat the first on the drifted hold-out by this much",
    )
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=100.0,
        help="the gate's per-row p95 latency limit on this shared machine",
    )
    parser.add_argument(
        "--profile",
        choices=["embedded", "distributed"],
        default=os.environ.get("MLOPS_DEMO_PROFILE") or "embedded",
        help="embedded: SQLite, LocalExecutor, local data; distributed: PostgreSQL, Celery "
        "(Redis), two schedulers and workers, MLflow on PostgreSQL + S3, an S3 data plane",
    )
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--service-port", type=int, default=8000)
    args = parser.parse_args(argv)  # fmt: skip

    STATE.mkdir(parents=True, exist_ok=True)
    stop_previous()
    if args.stop:
        say("==> Nothing left running")
        return 0
    for leftover in ("mlflow", "airflow", "mlops", "models", "datasets", "distributed"):
        shutil.rmtree(STATE / leftover, ignore_errors=True)
    started = time.monotonic()
    stage(f"1/{ACTS}  Start MLflow, Airflow and the model service (all on loopback)", started)
    try:
        stack = start_stack(args)
    except ServiceDown as down:  # PostgreSQL or Redis of the distributed profile: say which
        say(f"\n!!  {down}")
        return 1
    except BaseException:
        stop_previous()  # whatever had started, by the PIDs recorded so far
        raise
    code = 1
    try:
        facts = story(stack, started, args)
        if SECOND_MODEL:
            stage(f"5/{ACTS}  A second model from a real dataset, in the same Airflow: "
                  f"{SECOND_MODEL} (onboard, train, release)", started)  # fmt: skip
            facts["second"] = second_model(stack, SECOND_MODEL)
        summary(stack, facts, started)
        code = 0
    except (RuntimeError, TimeoutError) as exc:
        say(f"\n!!  {exc}")
        say(f"    process logs: {stack.airflow.logs}")
    finally:
        if args.keep_running:
            say(f"\n==> Still running (PIDs in {PIDS_FILE}); stop everything with: make down")
        else:
            stack.stop()
            took = time.monotonic() - started
            say(f"\n==> Stopped MLflow, Airflow and the service  [{took:.0f} s]")
    return code


if __name__ == "__main__":
    sys.exit(main())

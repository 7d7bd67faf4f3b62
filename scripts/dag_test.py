"""``airflow dags test`` for this project's DAGs, without their DeadlineAlerts.

Airflow 3.3.2's ``dag.test()`` (which ``airflow dags test`` runs) crashes when a run of a DAG
with DeadlineAlerts *succeeds*: ``DagRun.update_state`` looks the in-memory serialized alerts up
as database ids ("'dict' object has no attribute 'hex'"). A scheduler is not affected (it reads
the alert ids the DAG processor stored), and the deadlines are tested under a live scheduler and
triggerer (tests/e2e/test_alerts_live.py). This driver runs the same ``dag.test()`` with the
alerts taken off the in-memory DAG, and exits 0 only when the run succeeded.

Usage: ``python scripts/dag_test.py DAG_ID LOGICAL_DATE [--conf JSON]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def without_deadlines(dag: Any) -> Any:
    """The DAG with its DeadlineAlerts removed (in memory only), for ``dag.test()``."""
    dag.deadline = None
    return dag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("logical_date")
    parser.add_argument("--conf", default="{}", help="run conf as a JSON object")
    args = parser.parse_args(argv)

    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            sys.stderr.write(f"import error in {path}:\n{error}\n")
        return 1
    if args.dag_id not in bag.dags:
        sys.stderr.write(f"no DAG {args.dag_id!r}; DAGs: {', '.join(sorted(bag.dags))}\n")
        return 2
    run = without_deadlines(bag.dags[args.dag_id]).test(
        logical_date=pendulum.parse(args.logical_date), run_conf=json.loads(args.conf)
    )
    print(f"dag run {run.run_id}: {run.state}", flush=True)
    return 0 if str(run.state) == "success" else 1


if __name__ == "__main__":
    sys.exit(main())

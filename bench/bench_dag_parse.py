"""Benchmark: how long the DAG processor takes to parse each DAG file, with 1 and 10 models.

The DAG processor parses every file of ``dags/`` in a fresh child process, with Airflow itself
already imported (the DAG files import only ``mlops_provider``, which Airflow does not
pre-import), so a file's parse pays: importing the provider's pipeline modules and the contract
loader (PyYAML, jsonschema), reading and checking every contract in ``$MLOPS_MODELS_DIR``, and
building one DAG per model. That is what is timed here, per file, in a fresh interpreter each
time (``DagBag`` on the one file, as the processor's child runs it; the interpreter start and
Airflow's own import are outside the timing). The 10-model directory holds churn's contract and
9 copies under other names.

Goal (issue 14): at most 0.3 s per DAG file with 10 models. Results go to
bench/results/dag_parse.json; the printed table is ready for the README.

Usage: python bench/bench_dag_parse.py [--repeats 7] [--models 1 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_support import write_churn_contract

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
RESULTS = REPO / "bench" / "results" / "dag_parse.json"
GOAL_S = 0.3
CHILD = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag  # the processor has Airflow imported
import airflow.sdk
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
took = time.perf_counter() - started
print(json.dumps({"s": took, "dags": len(bag.dags), "errors": len(bag.import_errors)}))
"""


def write_models(directory: Path, count: int) -> Path:
    """churn's contract and ``count - 1`` copies named model_01, model_02 ..."""
    for name in ["churn", *(f"model_{i:02d}" for i in range(1, count))]:
        write_churn_contract(directory, name)
    return directory


def parse_once(path: Path, models: Path) -> dict[str, float]:
    env = {**os.environ, "MLOPS_MODELS_DIR": str(models), "MLOPS_RUNNER": "local",
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    files = sorted(DAGS.glob("*.py"))
    rows = []
    for count in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            models = write_models(Path(tmp), count)
            for path in files:
                runs = [parse_once(path, models) for _ in range(args.repeats)]
                if any(run["errors"] for run in runs):
                    raise SystemExit(f"{path.name}: import errors with {count} models")
                seconds = sorted(run["s"] for run in runs)
                rows.append({
                    "models": count,
                    "file": path.name,
                    "dags": int(runs[0]["dags"]),
                    "median_s": statistics.median(seconds),
                    "max_s": seconds[-1],
                })  # fmt: skip
                took = rows[-1]["median_s"]
                print(f"{count:>3} models  {path.name:<24} {took:.3f} s", flush=True)
    worst = max(r["median_s"] for r in rows if r["models"] == max(args.models))
    RESULTS.write_text(
        json.dumps({"goal_s": GOAL_S, "repeats": args.repeats, "rows": rows}, indent=2) + "\n"
    )
    print(f"\n| DAG file | DAGs ({' / '.join(map(str, args.models))} models) | "
          + " | ".join(f"median s, {c} models" for c in args.models) + " |")  # fmt: skip
    print("|---|---|" + "---|" * len(args.models))
    for path in files:
        mine = [r for r in rows if r["file"] == path.name]
        print(f"| {path.name} | {' / '.join(str(r['dags']) for r in mine)} | "
              + " | ".join(f"{r['median_s']:.3f}" for r in mine) + " |")  # fmt: skip
    verdict = "within" if worst <= GOAL_S else "OVER"
    print(
        f"\nworst median with {max(args.models)} models: {worst:.3f} s ({verdict} the "
        f"{GOAL_S} s goal); results in {RESULTS.relative_to(REPO)}"
    )
    return 0 if worst <= GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())

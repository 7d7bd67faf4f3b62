"""Benchmark: the training DAG end to end, and where its time goes; DAG file parse time.

For each row count, on the same machine in one run:

1. ``process``: each ``mlops-step <verb>`` run alone as a process (the step without Airflow):
   wall time and peak RSS (``wait4``'s ``ru_maxrss`` of the step's process);
2. with ``--baseline REV``: the same processes with the step package of git revision ``REV``
   (a worktree, first on ``PYTHONPATH``), for row counts up to ``--baseline-max-rows``: the
   before/after anchor measured in the same run;
3. for the row counts in ``--dag-rows`` only: ``dag``, the wall time of ``airflow dags test``
   (``scripts/dag_test.py``) of the real training DAG (local runner) with each task's wall
   time from Airflow's task start/end log lines, and up to ``--compute-max-rows``
   ``compute``, each step called in an already-warm Python process (imports done), i.e. the
   work itself;
4. at ``--importtime-rows`` (100k): each verb's process under ``-X importtime``, its seconds of
   imports (and the baseline's): what lazy imports save.

Above 1M rows ``train`` is capped at 50 boosting rounds (the phase's contract says so, which the
DAG honours too): memory does not depend on the number of rounds, and uncapped early stopping
runs for hundreds of rounds of seconds each.

From these: start-up = process - compute (interpreter + library imports per step), and
orchestration = dag - process (Airflow: DAG run set-up, task scheduling, the task runner).
Each phase uses its own MLflow experiment and model name so no step reuses another's result.

Usage: python bench/bench_training.py [--rows 100000 1000000 10000000]
       [--dag-rows 100000 10000000] [--compute-max-rows 1000000]
       [--importtime-rows 100000] [--baseline REV] [--baseline-max-rows 1000000]
       [--parse-repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# `mlops-step` of this interpreter (its venv need not be on PATH)
MLOPS_STEP = (sys.executable, "-m", "mlops_steps")
sys.path.insert(0, str(REPO / "scripts"))

from bench_support import write_churn_contract  # noqa: E402
from local_airflow import local_airflow_env  # noqa: E402
from mlflow_server import free_port, start_server, stop_pid  # noqa: E402

VERBS = ("ingest", "validate", "train", "evaluate", "gate", "register")
_TASK_LINE = re.compile(r"^(\S+Z) .*\[DAG TEST\] (starting|end task) task_id=(\w+)")


#: Above this many rows ``train`` is capped at this many boosting rounds: at 10M rows
#: a round takes seconds on two cores and early stopping runs for hundreds of them (> 20 min);
#: memory does not depend on the number of rounds, and the wall time is reported per round too.
BIG_ROWS = 1_000_000
BIG_TRAIN_ROUNDS = 50


def _env(home: Path, mlflow_url: str, tag: str, rows: int, code: Path = REPO) -> dict[str, str]:
    """The environment of one phase: its own model (a copy of ``code``'s churn contract named
    ``bench_<tag>``, so no phase reuses another's partitions, runs or versions) and experiment."""
    # The DAG passes no round cap: above BIG_ROWS the contract's training policy carries it.
    cap = f"\ntraining: {{max_rounds: {BIG_TRAIN_ROUNDS}}}\n" if rows > BIG_ROWS else ""
    models = write_churn_contract(home / "models", f"bench_{tag}", repo=code, extra=cap)
    return {
        **local_airflow_env(home, mlflow_url),
        "MLFLOW_TRACKING_URI": mlflow_url,  # for the steps run without Airflow
        "MLOPS_MODELS_DIR": str(models),
        "MLOPS_MODEL_NAME": f"bench_{tag}",
        "MLOPS_EXPERIMENT": f"bench-{tag}",
        # The gate's single-row latency bound judges a model, not this bench: on a shared 2-core
        # machine a busy second can fail it, and a failed gate would end the run before register.
        "MLOPS_GATE_MAX_LATENCY_MS": "1000",
    }


def _step_args(verb: str, rows: int, partition: str) -> list[str]:
    args = ["--partition", partition]
    if verb == "ingest":
        args += ["--rows", str(rows), "--seed", "42"]
    return args


def measure_dag(home: Path, mlflow_url: str, rows: int) -> dict[str, Any]:
    env = _env(home, mlflow_url, f"dag_{rows}", rows)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
    )
    dag_id = f"mlops_training__bench_dag_{rows}"
    # `airflow dags test` without the DAG's DeadlineAlerts (its dag.test() crashes on them)
    command = [sys.executable, str(REPO / "scripts" / "dag_test.py"), dag_id,
               "2026-11-16T00:00:00+00:00", "--conf", json.dumps({"rows": rows})]  # fmt: skip
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"DAG run failed:\n{(completed.stdout + completed.stderr)[-4000:]}")
    marks: dict[str, dict[str, float]] = {}
    for line in (completed.stdout + completed.stderr).splitlines():
        match = _TASK_LINE.match(line)
        if match:
            stamp = dt.datetime.fromisoformat(match[1]).timestamp()
            marks.setdefault(match[3], {})[match[2]] = stamp
    tasks = {task: round(m["end task"] - m["starting"], 2) for task, m in marks.items()}
    return {"wall_s": round(wall, 2), "tasks_s": tasks}


def run_measured(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``command``'s process (``wait4``: that child alone)."""
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode != 0:
        raise RuntimeError(f"{command} exited {process.returncode}:\n{log.read_text()[-3000:]}")
    return round(wall, 2), round(usage.ru_maxrss / 1024, 1)


def measure_processes(
    home: Path, mlflow_url: str, rows: int, code: Path | None = None, *, imports: bool = False
) -> dict[str, dict[str, float]]:
    """Each verb as its own process; ``code``: another checkout's step package to run.
    ``imports``: under ``-X importtime`` (``PYTHONPROFILEIMPORTTIME``), each verb's import
    seconds instead of its wall time (the profiling slows the imports it measures)."""
    tag = f"{'imports' if imports else 'process'}_{rows}" + ("_baseline" if code else "")
    env = _env(home, mlflow_url, tag, rows, code or REPO)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code / "include"), env.get("PYTHONPATH", "")])
    if imports:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    home.mkdir(parents=True, exist_ok=True)
    measured: dict[str, dict[str, float]] = {}
    for verb in VERBS:
        command = [*MLOPS_STEP, "--log-level", "WARNING", verb, *_step_args(verb, rows, "process")]
        wall, rss = run_measured(command, env, home / f"{verb}.log")
        if imports:
            measured[verb] = {"imports_s": import_seconds(home / f"{verb}.log")}
        else:
            measured[verb] = {"wall_s": wall, "peak_rss_mb": rss}
    return measured


def import_seconds(log: Path) -> float:
    """Seconds of imports in a ``-X importtime`` log: the cumulative times of the top-level
    imports (one space before the module name; nested ones are indented further)."""
    total_us = 0
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:"):
            continue
        _, cumulative, name = line.split("|", 2)
        if name.startswith(" ") and not name.startswith("  ") and cumulative.strip().isdigit():
            total_us += int(cumulative)
    return round(total_us / 1e6, 2)


def compute_in_this_process(rows: int) -> dict[str, float]:
    """Run every step in this (warmed-up) process; the environment comes from the caller."""
    import contextlib
    import io

    import great_expectations  # noqa: F401  (imports are start-up, not compute)
    import lightgbm  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import mlflow  # noqa: F401
    import sklearn.metrics  # noqa: F401

    from mlops_steps.cli import main as cli
    from mlops_steps.training import (
        validate,  # noqa: F401
    )

    timings: dict[str, float] = {}
    for verb in VERBS:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["--log-level", "WARNING", verb, *_step_args(verb, rows, "compute")])
        if code != 0:
            raise RuntimeError(f"{verb} exited {code}")
        timings[verb] = round(time.perf_counter() - started, 2)
    return timings


def measure_compute(home: Path, mlflow_url: str, rows: int) -> dict[str, float]:
    env = _env(home, mlflow_url, f"compute_{rows}", rows)
    completed = subprocess.run(
        [sys.executable, __file__, "--compute-only", str(rows)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_parse(repeats: int) -> dict[str, Any]:
    """Per DAG file: Airflow's own parse duration (DagBag file stats) in a fresh interpreter."""
    code = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO / "dags")!r})
print(json.dumps({{s.file: s.duration.total_seconds() for s in bag.dagbag_stats}}))
"""
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLOPS_RUNNER": "local"}
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        completed = subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        )
        for file, seconds in json.loads(completed.stdout.strip().splitlines()[-1]).items():
            runs.setdefault(file, []).append(seconds)
    return {file: round(statistics.median(values), 4) for file, values in runs.items()}


def _baseline_checkout(revision: str, into: Path) -> Path:
    """A worktree of ``revision`` (its step package and models) under ``into``."""
    path = into / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision],
        check=True,
        capture_output=True,
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--dag-rows", type=int, nargs="*", default=[100_000, 10_000_000])
    parser.add_argument("--compute-max-rows", type=int, default=1_000_000)
    parser.add_argument("--importtime-rows", type=int, nargs="*", default=[100_000])
    parser.add_argument("--baseline", help="git revision to measure the step processes of too")
    parser.add_argument("--baseline-max-rows", type=int, default=1_000_000)
    parser.add_argument("--parse-repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "training.json")
    parser.add_argument("--compute-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="print the tables of --output")
    args = parser.parse_args()
    if args.render:
        print(_markdown(json.loads(args.output.read_text())))
        return 0
    if args.compute_only:
        print(json.dumps(compute_in_this_process(args.compute_only)))
        return 0

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "baseline": args.baseline,
        "training": {},
    }
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        home = Path(tmp)
        baseline = _baseline_checkout(args.baseline, home) if args.baseline else None
        server = start_server(home / "mlflow", free_port())
        try:
            for rows in args.rows:
                print(f"== {rows:,} rows", flush=True)
                entry: dict[str, Any] = {}
                entry["process"] = measure_processes(home / f"process-{rows}", server.url, rows)
                print(f"   process  {entry['process']}", flush=True)
                if baseline is not None and rows <= args.baseline_max_rows:
                    entry["baseline_process"] = measure_processes(
                        home / f"baseline-{rows}", server.url, rows, baseline
                    )
                    print(f"   baseline {entry['baseline_process']}", flush=True)
                if rows in args.importtime_rows:
                    entry["imports"] = measure_processes(
                        home / f"imports-{rows}", server.url, rows, imports=True
                    )
                    if baseline is not None:
                        entry["baseline_imports"] = measure_processes(
                            home / f"baseline-imports-{rows}",
                            server.url,
                            rows,
                            baseline,
                            imports=True,
                        )
                    print(f"   imports  {entry['imports']} / {entry.get('baseline_imports')}")
                if rows in args.dag_rows:
                    compute = rows <= args.compute_max_rows
                    entry |= _dag_and_compute(home, server.url, rows, entry["process"], compute)
                report["training"][str(rows)] = entry
        finally:
            stop_pid(server.pid)
            if baseline is not None:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
                    check=False,
                )
    report["parse_s"] = measure_parse(args.parse_repeats)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(_markdown(report))
    return 0


def _dag_and_compute(
    home: Path, mlflow_url: str, rows: int, process: dict[str, dict[str, float]], compute: bool
) -> dict[str, Any]:
    dag = measure_dag(home / f"dag-{rows}", mlflow_url, rows)
    print(f"   dag      {dag}", flush=True)
    process_total = sum(p["wall_s"] for p in process.values())
    summary: dict[str, Any] = {
        "dag_wall_s": dag["wall_s"],
        "orchestration_s": round(dag["wall_s"] - process_total, 2),
        "plain_chain_s": round(process_total, 2),
        "dag_vs_plain_chain": round(dag["wall_s"] / process_total, 2),
    }
    entry: dict[str, Any] = {"dag": dag, "summary": summary}
    if compute:
        entry["compute_s"] = measure_compute(home / f"compute-{rows}", mlflow_url, rows)
        print(f"   compute  {entry['compute_s']}", flush=True)
        compute_total = sum(entry["compute_s"].values())
        summary |= {
            "compute_s": round(compute_total, 2),
            "startup_s": round(process_total - compute_total, 2),
            "compute_share": round(compute_total / dag["wall_s"], 3),
        }
    return entry


def _markdown(report: dict[str, Any]) -> str:
    entries = report["training"]
    lines = [
        "| rows | DAG wall (s) | plain step chain (s) | DAG / plain chain | step compute (s) "
        "| step start-up (s) | orchestration (s) | compute share |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, entry in entries.items():
        if "summary" not in entry:
            continue
        s = entry["summary"]
        share = f"{s['compute_share']:.0%}" if "compute_share" in s else "-"
        lines.append(
            f"| {int(rows):,} | {s['dag_wall_s']} | {s['plain_chain_s']} "
            f"| {s['dag_vs_plain_chain']:.2f}x | {s.get('compute_s', '-')} "
            f"| {s.get('startup_s', '-')} | {s['orchestration_s']} | {share} |"
        )
    baseline = report.get("baseline") or "baseline"
    lines += [
        "",
        "| rows | step | wall (s) | peak RSS (MB) | compute in a warm process (s) "
        f"| {baseline}: wall (s) | {baseline}: peak RSS (MB) | wall vs {baseline} "
        f"| RSS vs {baseline} |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, entry in entries.items():
        for verb in VERBS:
            now = entry["process"][verb]
            before = (entry.get("baseline_process") or {}).get(verb)
            compute = (entry.get("compute_s") or {}).get(verb, "-")
            cells = [
                f"{int(rows):,}",
                verb,
                str(now["wall_s"]),
                str(now["peak_rss_mb"]),
                str(compute),
            ]
            if before:
                cells += [
                    str(before["wall_s"]),
                    str(before["peak_rss_mb"]),
                    f"{now['wall_s'] / before['wall_s']:.2f}x",
                    f"{now['peak_rss_mb'] / before['peak_rss_mb']:.2f}x",
                ]
            else:
                cells += ["-"] * 4
            lines.append("| " + " | ".join(cells) + " |")
    lines += _imports_markdown(entries, baseline)
    lines += ["", "| DAG file | parse time (s, median) |", "|---|---:|"]
    lines += [f"| {file} | {seconds} |" for file, seconds in report["parse_s"].items()]
    return "\n".join(lines)


def _imports_markdown(entries: dict[str, Any], baseline: str) -> list[str]:
    lines = ["", f"| rows | step | imports (s, -X importtime) | {baseline} (s) | vs {baseline} |",
             "|---:|---|---:|---:|---:|"]  # fmt: skip
    for rows, entry in entries.items():
        for verb, now in (entry.get("imports") or {}).items():
            before = (entry.get("baseline_imports") or {}).get(verb)
            then = f"{before['imports_s']} | {now['imports_s'] / before['imports_s']:.2f}x" if (
                before and before["imports_s"]) else "- | -"  # fmt: skip
            lines.append(f"| {int(rows):,} | {verb} | {now['imports_s']} | {then} |")
    return lines if len(lines) > 3 else []


if __name__ == "__main__":
    sys.exit(main())

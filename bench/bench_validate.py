"""Benchmark: the validate step vs a plain pandas/pyarrow pass computing the same checks.

For each row count, on one partition written by ``mlops-step ingest --rows N`` under a temporary
MLOPS_HOME, in one run:

* ``plain``: what a person would write without the step: ``pd.read_parquet`` and the contract's
  checks as pandas column operations (columns, row count, unique ids, nulls, kinds, limits,
  categories, label values), deciding pass/fail per check over every row; with a champion, also
  the label rate and each feature's drift test (normed Wasserstein / Jensen-Shannon with scipy,
  Evidently's default choice) against the champion's partition. Timed inside its own process
  (imports not counted);
* ``step``: ``mlops-step validate`` as a child process, as a DAG task runs it (imports, GX
  result objects, Data Docs, result files, the champion lookup in MLflow and the shift report);
* ``in_process``: ``run_validate`` in a process whose imports are done (the step's own work);
* ``gx_full`` (up to ``--gx-full-max-rows``): Great Expectations' own pandas execution of the
  same suite over the whole frame (the step before it computed the checks itself).

Two scenarios: no champion (the checks alone), and a champion whose training partition (another
N-row partition) the step compares the new one with. Peak RSS is each child's own
``ru_maxrss`` (``os.wait4``); this parent imports nothing heavy, so what a forked child inherits
stays small. A local MLflow server holds the stand-in champion (a version naming its partition).

Usage: python bench/bench_validate.py [--rows 100000 1000000] [--repeats 1]
Results: bench/results/validate.json (``--render`` prints its table)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "scripts"), str(SCRIPT.parent)]
RESULTS = REPO / "bench" / "results" / "validate.json"
MODEL = "churn"
MIN_ROWS = 1_000


# --- the children ------------------------------------------------------------------------------


def _partition_file(key: str) -> Path:
    from mlops_steps.common.storage import Partition
    from mlops_steps.core.settings import load_settings

    return Partition.of(load_settings().dataset_root, key).data


def role_plain(key: str, champion_key: str | None) -> dict[str, Any]:
    import numpy  # noqa: F401
    import pandas as pd
    import scipy.stats  # noqa: F401

    from mlops_steps.contract.loader import load_contract
    from plain_validate import plain_checks, plain_shift

    contract = load_contract(MODEL)
    started = time.perf_counter()
    frame = pd.read_parquet(_partition_file(key))
    passed = plain_checks(frame, contract, MIN_ROWS)
    checks_s = time.perf_counter() - started
    out = {"checks_s": checks_s, "all_passed": all(passed.values()), "checks": len(passed)}
    if champion_key:
        started = time.perf_counter()
        reference = pd.read_parquet(_partition_file(champion_key))
        out["label_shift"] = plain_shift(reference, frame, contract)["label_shift"]
        out["shift_s"] = time.perf_counter() - started
    out["wall_s"] = checks_s + out.get("shift_s", 0.0)
    return out


def role_in_process(key: str) -> dict[str, Any]:
    import evidently  # noqa: F401  (imports are start-up, not the step's work)
    import mlflow  # noqa: F401

    from mlops_steps.core.policies import ValidationPolicy
    from mlops_steps.core.settings import load_settings
    from mlops_steps.training import validate

    validate._import_gx()
    started = time.perf_counter()
    summary = validate.run_validate(load_settings(), key, ValidationPolicy(min_rows=MIN_ROWS))
    wall = time.perf_counter() - started
    shift = summary["shift"]["status"]
    return {
        "wall_s": wall,
        "seconds": summary["seconds"],
        "success": summary["success"],
        "shift": shift,
    }


def role_gx_full(key: str) -> dict[str, Any]:
    """The suite run by GX's own pandas engine over the whole frame (text as Python objects,
    which GX judges value by value; it refuses category and Arrow dtypes)."""
    import pandas as pd

    from mlops_steps.common.storage import Partition, load_partition_frame
    from mlops_steps.contract.loader import load_contract
    from mlops_steps.core.settings import load_settings
    from mlops_steps.training import validate

    gx = validate._import_gx()
    contract = load_contract(MODEL)
    started = time.perf_counter()
    frame, _ = load_partition_frame(Partition.of(load_settings().dataset_root, key))
    lean = [
        c for c, t in frame.dtypes.items() if isinstance(t, pd.CategoricalDtype | pd.StringDtype)
    ]
    frame = frame.assign(**{str(c): frame[c].astype(object) for c in lean})
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas(name=MODEL)
        .add_dataframe_asset(name="frame")
        .add_batch_definition_whole_dataframe(name="whole")
    )
    suite = gx.ExpectationSuite(name="contract")
    for expectation in validate.build_expectations(contract, MIN_ROWS):
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="whole", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame})
    return {"wall_s": time.perf_counter() - started, "success": bool(result.success)}


def role_champion(champion_key: str | None) -> dict[str, Any]:
    """Point ``@champion`` at a stand-in version naming ``champion_key`` (None: remove it)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlops_steps.common.storage import Partition
    from mlops_steps.core.settings import load_settings

    client = MlflowClient()
    if champion_key is None:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model_alias(MODEL, "champion")
        return {}
    settings = load_settings()
    partition = Partition.of(settings.dataset_root, champion_key)
    manifest = json.loads(partition.manifest.read_text())
    mlflow.set_experiment(settings.experiment_name)
    with mlflow.start_run() as run:
        mlflow.log_dict({"stand-in": True}, "model/MLmodel.json")
    with contextlib.suppress(MlflowException):  # registered by an earlier row count
        client.create_registered_model(MODEL)
    version = client.create_model_version(
        MODEL,
        f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        tags={"mlops.partition": champion_key, "mlops.data_sha256": manifest["data_sha256"]},
    )
    client.set_registered_model_alias(MODEL, "champion", version.version)
    return {"version": version.version}


# --- the parent --------------------------------------------------------------------------------


def _child(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``argv``; (wall s, its own peak RSS MB from wait4, its stdout)."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.PIPE)
        assert process.stderr is not None
        errors = process.stderr.read()  # drained while it runs (a full pipe would block it)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        stdout = out.read().decode()
    if process.returncode != 0:
        raise SystemExit(f"{argv[2:5]} exited {process.returncode}:\n{errors.decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout


def _role(role: str, env: dict[str, str], *args: str) -> tuple[float, float, dict[str, Any]]:
    wall, rss, stdout = _child([sys.executable, str(SCRIPT), "--role", role, *args], env)
    return wall, rss, json.loads(stdout.strip().splitlines()[-1])


def _step(env: dict[str, str], verb: str, *args: str) -> tuple[float, float]:
    argv = [sys.executable, "-m", "mlops_steps", "--log-level", "WARNING", verb, *args]
    wall, rss, _ = _child(argv, env)
    return wall, rss


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def measure(env: dict[str, str], rows: int, repeats: int, gx_full: bool) -> dict[str, Any]:
    key, champion_key = f"bench-{rows}", f"champion-{rows}"
    ingest = {}
    for partition, seed in ((key, "42"), (champion_key, "7")):
        wall, rss = _step(
            env, "ingest", "--partition", partition, "--rows", str(rows), "--seed", seed
        )
        ingest[partition] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss)}
    entry: dict[str, Any] = {"ingest": ingest}
    for scenario, champion in (("no_champion", None), ("champion", champion_key)):
        _role("champion", env, *(["--partition", champion] if champion else []))
        runs: list[dict[str, float]] = []
        for _ in range(repeats):
            _, plain_rss, plain = _role(
                "plain",
                env,
                "--partition",
                key,
                *(["--champion-partition", champion] if champion else []),
            )
            step_wall, step_rss = _step(env, "validate", "--partition", key)
            _, in_rss, inside = _role("in-process", env, "--partition", key)
            if (
                inside["shift"] != ("compared" if champion else "no_champion")
                or not inside["success"]
            ):
                raise SystemExit(f"validate did not do what {scenario} means: {inside}")
            runs.append(
                {
                    "plain_s": plain["wall_s"],
                    "plain_rss_mb": plain_rss,
                    "step_process_s": step_wall,
                    "step_rss_mb": step_rss,
                    "step_in_process_s": inside["wall_s"],
                    "in_process_rss_mb": in_rss,
                    **{f"phase_{k}_s": v for k, v in inside["seconds"].items()},
                }
            )
        result = _median(runs)
        result["ratio_in_process"] = round(result["step_in_process_s"] / result["plain_s"], 2)
        result["ratio_process"] = round(result["step_process_s"] / result["plain_s"], 2)
        entry[scenario] = result
        print(f"   {scenario:12s} {json.dumps(result)}", flush=True)
    _role("champion", env)
    if gx_full:
        wall, rss, full = _role("gx-full", env, "--partition", key)
        entry["gx_full"] = {"wall_s": round(full["wall_s"], 2), "process_s": round(wall, 2),
                            "peak_rss_mb": round(rss), "success": full["success"]}  # fmt: skip
        print(f"   gx_full      {json.dumps(entry['gx_full'])}", flush=True)
    return entry


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "| rows | champion | plain pass s | validate in-process s (x plain) | validate process s "
        "(x plain) | peak RSS MB plain / step | GX's own pandas run s / MB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for rows, entry in report["validate"].items():
        full = entry.get("gx_full")
        for scenario in ("no_champion", "champion"):
            r = entry[scenario]
            gx = (
                f"{full['wall_s']:.1f} / {full['peak_rss_mb']}"
                if full and scenario == "no_champion"
                else ""
            )
            champion = "yes" if scenario == "champion" else "no"
            lines.append(
                f"| {int(rows):,} | {champion} | {r['plain_s']:.2f} "
                f"| {r['step_in_process_s']:.2f} ({r['ratio_in_process']:.1f}x) "
                f"| {r['step_process_s']:.2f} ({r['ratio_process']:.1f}x) "
                f"| {r['plain_rss_mb']:.0f} / {r['step_rss_mb']:.0f} | {gx} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement (median)")
    parser.add_argument("--gx-full-max-rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--render", action="store_true", help="print the table of --output")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--partition", help=argparse.SUPPRESS)
    parser.add_argument("--champion-partition", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        print(_markdown(json.loads(args.output.read_text())))
        return 0
    if args.role:
        roles = {
            "plain": lambda: role_plain(args.partition, args.champion_partition),
            "in-process": lambda: role_in_process(args.partition),
            "gx-full": lambda: role_gx_full(args.partition),
            "champion": lambda: role_champion(args.partition),
        }
        print(json.dumps(roles[args.role]()))
        return 0

    from mlflow_server import free_port, start_server, stop_pid

    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "validate": {}}
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        root = Path(tmp)
        server = start_server(root / "mlflow", free_port())
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "GX_ANALYTICS_ENABLED": "False",
            "MLOPS_HOME": str(root / "home"),
            "MLOPS_MODEL_NAME": MODEL,
            "MLOPS_EXPERIMENT": "bench-validate",
            "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)]),
        }
        env.pop("MLOPS_DATA_ROOT", None)
        try:
            for rows in args.rows:
                print(f"== {rows:,} rows", flush=True)
                gx_full = rows <= args.gx_full_max_rows
                report["validate"][str(rows)] = measure(env, rows, args.repeats, gx_full)
        finally:
            stop_pid(server.pid)
    import resource

    report["parent_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

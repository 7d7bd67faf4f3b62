"""Benchmark: judging a monitoring window of 1M and 10M served rows x 20 features, reading the
prediction log as Parquet and as JSON lines, and without the read.

For each size, in one run:

* the window is written by the service's own ``PredictionLog`` in both formats (1,000-row
  requests; Parquet in files of 262,144 rows, as the writer rolls them; JSON lines in files of
  at most 1M lines, as that many writer processes would append them), with the reference
  (the champion's training data, as many rows) and the window's rows in plain Parquet files;
* each judgement runs in a fresh process (its peak RSS is its own), phase by phase:
  ``import`` (Evidently: every ``mlops-step monitor`` pays it), ``read_log`` (the reader as
  ``monitor`` calls it: the champion's rows, its scores and features only), ``check`` (the
  fail-closed feature checks of both sides), ``decision`` (every test on every row),
  ``prediction`` (the score test on every row), ``report`` (Evidently's DataDriftPreset and
  ValueDrift on a 100k-row sample per side, written as HTML and JSON);
  ``parquet`` and ``jsonl`` read the log, ``frames`` starts from the window's rows already in
  memory (loaded untimed) and also times a plain numpy pass (PSI on 10 reference-quantile bins
  for every column, K-S for numbers): the floor any implementation pays.
* at 1M only (``--full-report-rows``), Evidently's DataDriftPreset on every row: the
  alternative to a sampled report plus a vectorised decision.

Data: the churn generator's 16 features plus 4 numeric extras; the window has drift 0.5 (what
the step would flag). Results: bench/results/monitoring.json; ``--render`` prints the README's
tables from it.

Usage: python bench/bench_monitoring.py [--rows 1000000 10000000] [--full-report-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "serving"), str(REPO / "bench")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench_support import peak_rss_mb  # noqa: E402
from monitoring_report import render_markdown  # noqa: E402

EXTRAS = 4
REQUEST_ROWS = 1_000
JSONL_FILE_ROWS = 1_000_000
VERSION = "1"
FORMATS = ("parquet", "jsonl")
MODES = (*FORMATS, "frames")


class Clock:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.times[name] = round(time.perf_counter() - started, 2)
        print(f"    {name:<22} {self.times[name]:>7.2f} s", flush=True)
        return result


def kinds_of() -> dict[str, Any]:
    from mlops_steps.common.window import FeatureKind
    from mlops_steps.contract.loader import load_contract

    kinds = {f.name: FeatureKind(f.name, f.kind) for f in load_contract("churn").features}
    return kinds | {f"extra_{i}": FeatureKind(f"extra_{i}", "float") for i in range(EXTRAS)}


def _chunks(rows: int, seed: int, drift: float) -> Any:
    """The generator's table in chunks, with the extra columns (small sub-threshold shifts)."""
    from mlops_steps.contract.synthetic import generate_churn_chunks

    rng = np.random.default_rng(seed + 100)
    for chunk in generate_churn_chunks(rows, seed, drift):
        for i in range(EXTRAS):
            chunk[f"extra_{i}"] = rng.normal(0.02 * i * (drift > 0), 1.0, len(chunk))
        yield chunk


# --- the data, written once per size ------------------------------------------------------------


def _write_frames(rows: int, directory: Path, names: list[str]) -> None:
    """The reference and the window's rows as plain Parquet (the partition; ``frames``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for side, seed, drift in (("reference", 1, 0.0), ("current", 2, 0.5)):
        writer = None
        for chunk in _chunks(rows, seed, drift):
            table = pa.Table.from_pandas(chunk.loc[:, names], preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(directory / f"{side}.parquet", table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()


def _rename_jsonl(directory: Path, written: int) -> None:
    """This process's JSON lines so far become another writer's file (as replicas append)."""
    mine = f"predictions-{socket.gethostname()}-{os.getpid()}.jsonl"
    for path in directory.glob(f"date=*/{mine}"):
        path.rename(path.with_name(f"{path.stem}-{written}.jsonl"))


def _write_logs(rows: int, directory: Path, kinds: dict[str, Any], now: float) -> dict[str, float]:
    """The window as the service logs it, both formats; seconds each writer took."""
    from types import SimpleNamespace

    from mlops_serving.predlog import PredictionLog
    from mlops_serving.predlog_parquet import FILE_ROWS

    names = list(kinds)
    spec = [SimpleNamespace(name=n, kind=k.kind) for n, k in kinds.items()]
    scores = np.random.default_rng(3).beta(2, 4, rows)
    logs = {f: PredictionLog(str(directory / f"log-{f}"), log_format=f) for f in FORMATS}
    seconds = dict.fromkeys(logs, 0.0)
    for log in logs.values():
        log.declare(VERSION, spec)
    written = pending = 0  # rows logged; rows the Parquet writer holds (it rolls at FILE_ROWS)
    for chunk in _chunks(rows, 2, 0.5):
        records = chunk.loc[:, names].to_dict("records")
        ids = chunk["customer_id"].astype(str).tolist()
        for log_format, log in logs.items():
            started = time.perf_counter()
            for first in range(0, len(records), REQUEST_ROWS):
                part, at = slice(first, first + REQUEST_ROWS), written + first
                log.record(request_id=f"r{at}", entity_ids=ids[part], variant="stable",
                           version=VERSION, features=records[part],
                           scores=scores[at : at + len(records[part])], timestamp=now)  # fmt: skip
                if log_format == "parquet":
                    pending += len(records[part])
                    if pending >= FILE_ROWS or at + REQUEST_ROWS >= rows:
                        log.flush()  # the thread writer writes a file per flush
                        pending = 0
            if log_format == "jsonl":
                log.flush()  # appended to this writer's file
            seconds[log_format] += time.perf_counter() - started
        written += len(records)
        if written % JSONL_FILE_ROWS == 0:
            _rename_jsonl(directory / "log-jsonl", written)
    return {f: round(s, 1) for f, s in seconds.items()}


def prepare(rows: int, directory: Path) -> dict[str, Any]:
    """Reference and window as Parquet frames, the window as the service logs it (both
    formats); returns when it was logged, the writers' seconds, files and bytes."""
    kinds = kinds_of()
    _write_frames(rows, directory, list(kinds))
    now = time.time()
    write_s = _write_logs(rows, directory, kinds, now)
    paths = {f: list((directory / f"log-{f}").rglob(f"*.{f}")) for f in FORMATS}
    files = {f: len(p) for f, p in paths.items()}
    size = {f: sum(path.stat().st_size for path in p) for f, p in paths.items()}
    print(f"  log written: {files} files, {size} bytes, {write_s} s", flush=True)
    return {"now": now, "write_s": write_s, "files": files, "bytes": size}


# --- one judgement, in its own process ---------------------------------------------------------


def numpy_pass(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, Any]) -> None:
    """PSI (10 quantile bins of the reference; categories by value) and KS for numbers."""
    eps = 1e-4
    for name, spec in kinds.items():
        if spec.numeric:
            ref = reference[name].to_numpy(dtype="float64")
            cur = current[name].to_numpy(dtype="float64")
            edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
            ref_counts = np.bincount(np.searchsorted(edges, ref), minlength=len(edges) + 1)
            cur_counts = np.bincount(np.searchsorted(edges, cur), minlength=len(edges) + 1)
            ref_sorted, cur_sorted = np.sort(ref), np.sort(cur)
            grid = np.concatenate([ref_sorted, cur_sorted])
            below_ref = np.searchsorted(ref_sorted, grid, side="right") / len(ref)
            below_cur = np.searchsorted(cur_sorted, grid, side="right") / len(cur)
            np.max(np.abs(below_ref - below_cur))
        else:
            categories = reference[name].cat.categories.union(current[name].cat.categories)
            ref_counts = reference[name].value_counts().reindex(categories, fill_value=0).to_numpy()
            cur_counts = current[name].value_counts().reindex(categories, fill_value=0).to_numpy()
        p = np.maximum(ref_counts / ref_counts.sum(), eps)
        q = np.maximum(cur_counts / cur_counts.sum(), eps)
        float(np.sum((q - p) * np.log(q / p)))


def judge(mode: str, directory: Path, rows: int, sample_rows: int, full_report: bool) -> dict:
    """One monitoring judgement of the window, phase by phase (see the module docstring)."""
    import datetime as dt

    from mlops_steps.common.window import Window

    clock = Clock()
    clock("import", __import__, "evidently.presets")
    from mlops_steps.common import drift, drift_report
    from mlops_steps.common.predictions import check_features, read_window
    from mlops_steps.core.policies import DriftPolicy

    kinds = kinds_of()
    info = json.loads((directory / "info.json").read_text())
    stamp = dt.datetime.fromtimestamp(info["now"], dt.UTC)
    window = Window(stamp - dt.timedelta(minutes=1), stamp + dt.timedelta(minutes=1))
    reference_raw = pd.read_parquet(directory / "reference.parquet")  # the partition: untimed
    if mode == "frames":
        current_raw = pd.read_parquet(directory / "current.parquet")
        served_scores = np.random.default_rng(3).beta(2, 4, rows)
    else:
        served = clock("read_log", read_window, str(directory / f"log-{mode}"), window, kinds,
                       meta=("score", "class"), only_version=VERSION, categorical=True)  # fmt: skip
        assert len(served.meta) == rows, len(served.meta)
        current_raw, served_scores = served.features, served.meta["score"].to_numpy()
        del served
    reference = clock("check", check_features, reference_raw, kinds, source="reference",
                      max_null_share=0.0)  # fmt: skip
    checked_reference = clock.times["check"]
    current = clock("check", check_features, current_raw, kinds, source="window",
                    max_null_share=0.0)  # fmt: skip
    clock.times["check"] = round(clock.times["check"] + checked_reference, 2)
    del reference_raw, current_raw
    policy = DriftPolicy(report_sample_rows=sample_rows)
    drift.check_policy(policy, kinds)
    decision = clock("decision", drift.data_drift, reference, current, kinds, policy)
    ref_scores = np.random.default_rng(5).beta(2, 5, max(rows * 15 // 100, 1))
    prediction = clock("prediction", drift.prediction_drift, ref_scores, served_scores, policy)
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-reports-") as reports_dir:
        reports = clock("report", drift_report.write_reports, Path(reports_dir),
                        reference=reference, current=current, reference_scores=ref_scores,
                        current_scores=served_scores, features=kinds, policy=policy)  # fmt: skip
        html_mb = round(Path(reports["data_drift_html"]).stat().st_size / 1e6, 1)
    if mode == "frames":
        clock("numpy_floor", numpy_pass, reference, current, kinds)
        if full_report:
            from evidently import Report
            from evidently.presets import DataDriftPreset

            numeric = [n for n, s in kinds.items() if s.numeric]
            categorical = [n for n, s in kinds.items() if not s.numeric]
            clock("evidently_full_report", lambda: Report([DataDriftPreset()]).run(
                reference_data=drift_report._dataset(reference, numeric, categorical),
                current_data=drift_report._dataset(current, numeric, categorical)))  # fmt: skip
    t = clock.times
    phases = ("import", "read_log", "check", "decision", "prediction", "report")
    return {
        "seconds": t,
        "total_s": round(sum(t.get(p, 0.0) for p in phases), 2),
        "peak_rss_mb": round(peak_rss_mb()),  # its own, not the forking parent's
        "outcome": {
            "drifted_columns": decision["drifted_columns"],
            "share": round(decision["share"], 4),
            "methods": sorted({c["method"] for c in decision["columns"]}),
            "prediction_drift": {k: prediction[k] for k in ("method", "score", "detected")},
            "report_sampled": reports["sampled"],
            "report_html_mb": html_mb,
        },
    }


def _child(mode: str, directory: Path, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--data", str(directory), "--rows",
               str(rows), "--report-sample-rows", str(args.report_sample_rows)]  # fmt: skip
    if rows <= args.full_report_rows:
        command.append("--full-report")
    print(f"  {mode}:", flush=True)
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    return dict(json.loads(lines[-1]))


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios(size: dict[str, Any]) -> dict[str, Any]:
    """The run's ratios at one size (see the README's table)."""
    parquet, jsonl, frames = (size["modes"][m] for m in MODES)
    return {
        "jsonl_vs_parquet_total": _ratio(jsonl["total_s"], parquet["total_s"]),
        "jsonl_vs_parquet_read": _ratio(
            jsonl["seconds"]["read_log"], parquet["seconds"]["read_log"]
        ),
        "parquet_with_vs_without_read": _ratio(parquet["total_s"], frames["total_s"]),
        "jsonl_with_vs_without_read": _ratio(jsonl["total_s"], frames["total_s"]),
        "decision_vs_numpy_floor": _ratio(
            frames["seconds"]["decision"], frames["seconds"]["numpy_floor"]
        ),
        **(
            {
                "full_report_vs_decision_and_sampled_report": _ratio(
                    frames["seconds"]["evidently_full_report"],
                    frames["seconds"]["decision"] + frames["seconds"]["report"],
                )
            }
            if "evidently_full_report" in frames["seconds"]
            else {}
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--report-sample-rows", type=int, default=100_000)
    parser.add_argument("--full-report-rows", type=int, default=1_000_000,
                        help="run Evidently's full report up to this many rows")  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results" / "monitoring.json"
    )
    parser.add_argument("--render", action="store_true", help="only print the tables of --output")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--full-report", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        print(render_markdown(json.loads(args.output.read_text())))
        return 0
    if args.child:
        result = judge(args.child, args.data, args.rows[0], args.report_sample_rows,
                       args.full_report)  # fmt: skip
        print(json.dumps(result))
        return 0
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "columns": len(kinds_of()),
        "report_sample_rows": args.report_sample_rows,
        "sizes": {},
    }
    for rows in args.rows:
        print(f"{rows:,} reference + {rows:,} window rows, 16 + {EXTRAS} columns", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
            directory = Path(tmp)
            started = time.perf_counter()
            info = prepare(rows, directory)
            (directory / "info.json").write_text(json.dumps(info))
            print(f"  prepared in {time.perf_counter() - started:.0f} s", flush=True)
            size = {"log": info, "modes": {m: _child(m, directory, rows, args) for m in MODES}}
        size["ratios"] = ratios(size)
        results["sizes"][str(rows)] = size
        print(json.dumps(size["ratios"], indent=2), flush=True)
    results["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {args.output}\n")
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: drift monitoring of 1M served rows against 1M reference rows, 20 columns.

One run, one process, each phase timed on its own (medians are not worth the minutes here):

* ``import``: importing Evidently (every ``mlops-step monitor`` pays it once);
* ``read_log``: reading the window back from the prediction log the service writes (JSON lines,
  written here by the service's own ``PredictionLog``);
* ``check``: the fail-closed feature checks and conversion (types, nulls, categories);
* ``decision``: Evidently's per-column tests on every row (what decides drift);
* ``prediction``: the score test (1M served scores vs a 150k hold-out);
* ``report``: Evidently's DataDriftPreset + score ValueDrift on a 100k-row sample per side,
  written as HTML and JSON (what the step stores);
* ``numpy``: a plain numpy pass over the same data (PSI on 10 reference-quantile bins for every
  column, two-sample KS for numeric ones), the floor any implementation pays;
* ``evidently_full_report``: DataDriftPreset on all 1M x 20 rows, the alternative to sampling.

Data: the churn generator's 16 features plus 4 numeric extras; the current side has drift 0.5
(what the step would flag). Results go to bench/results/monitoring.json.

Usage: python bench/bench_monitoring.py [--rows 1000000] [--skip-full-report] [--skip-log]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "serving")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlops_steps.common.predictions import check_features, read_window  # noqa: E402
from mlops_steps.common.window import FeatureKind, Window  # noqa: E402
from mlops_steps.contract.loader import load_contract  # noqa: E402
from mlops_steps.contract.synthetic import generate_churn  # noqa: E402

EXTRAS = 4


class Clock:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.times[name] = round(time.perf_counter() - started, 2)
        print(f"  {name:<24} {self.times[name]:>7.2f} s", flush=True)
        return result


def frames(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, FeatureKind]]:
    """Reference (fresh) and current (drift 0.5) frames with 16 + 4 feature columns."""
    rng = np.random.default_rng(7)
    reference = generate_churn(rows, seed=1)
    current = generate_churn(rows, seed=2, drift=0.5)
    for i in range(EXTRAS):
        reference[f"extra_{i}"] = rng.normal(0.0, 1.0, rows)
        current[f"extra_{i}"] = rng.normal(0.02 * i, 1.0, rows)  # small, sub-threshold shifts
    kinds = {f.name: FeatureKind(f.name, f.kind) for f in load_contract("churn").features}
    kinds |= {f"extra_{i}": FeatureKind(f"extra_{i}", "float") for i in range(EXTRAS)}
    return reference, current, kinds


def numpy_pass(
    reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, FeatureKind]
) -> dict[str, dict[str, float]]:
    """PSI (10 quantile bins of the reference; categories by value) and KS for numbers."""
    out: dict[str, dict[str, float]] = {}
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
            ks = np.max(
                np.abs(
                    np.searchsorted(ref_sorted, grid, side="right") / len(ref)
                    - np.searchsorted(cur_sorted, grid, side="right") / len(cur)
                )
            )
        else:
            categories = reference[name].cat.categories.union(current[name].cat.categories)
            ref_counts = reference[name].value_counts().reindex(categories, fill_value=0)
            cur_counts = current[name].value_counts().reindex(categories, fill_value=0)
            ref_counts, cur_counts = ref_counts.to_numpy(), cur_counts.to_numpy()
            ks = float("nan")
        p = np.maximum(ref_counts / ref_counts.sum(), eps)
        q = np.maximum(cur_counts / cur_counts.sum(), eps)
        out[name] = {"psi": float(np.sum((q - p) * np.log(q / p))), "ks": float(ks)}
    return out


def write_log(directory: Path, frame: pd.DataFrame, kinds: dict[str, FeatureKind]) -> Window:
    """The window as the service logs it: its own PredictionLog, 1,000-row batches."""
    from mlops_serving.predlog import PredictionLog

    log = PredictionLog(str(directory))
    records = frame.loc[:, list(kinds)].to_dict("records")
    ids = frame["customer_id"].tolist()
    scores = np.random.default_rng(3).beta(2, 5, len(frame))
    now = time.time()
    for start in range(0, len(frame), 1000):
        part = slice(start, start + 1000)
        log.record(request_id=f"r{start}", entity_ids=ids[part], variant="stable", version="1",
                   features=records[part], scores=scores[part], timestamp=now)  # fmt: skip
    log.flush()
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(now, dt.UTC)
    return Window(stamp - dt.timedelta(minutes=1), stamp + dt.timedelta(minutes=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--report-sample-rows", type=int, default=100_000)
    parser.add_argument("--skip-full-report", action="store_true")
    parser.add_argument("--skip-log", action="store_true")
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results" / "monitoring.json"
    )
    args = parser.parse_args()
    clock = Clock()

    print(f"data: {args.rows:,} reference + {args.rows:,} current rows, 16 + {EXTRAS} columns")
    reference_raw, current_raw, kinds = frames(args.rows)

    print("monitor step phases:")
    clock("import", __import__, "evidently.presets")
    from mlops_steps.common import drift
    from mlops_steps.core.policies import DriftPolicy

    policy = DriftPolicy(report_sample_rows=args.report_sample_rows)
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        if not args.skip_log:
            window = clock("write_log (service)", write_log, Path(tmp) / "log", current_raw, kinds)
            served = clock("read_log", read_window, str(Path(tmp) / "log"), window, kinds)
            assert len(served.meta) == args.rows
            del served
        reference, current = clock(
            "check",
            lambda: tuple(
                check_features(frame, kinds, source=side, max_null_share=0.0)
                for side, frame in (("reference", reference_raw), ("current", current_raw))
            ),
        )
        clock("check_policy", drift.check_policy, policy, kinds)
        decision = clock("decision", drift.data_drift, reference, current, kinds, policy)
        rng = np.random.default_rng(5)
        ref_scores, cur_scores = rng.beta(2, 5, args.rows * 15 // 100), rng.beta(2, 4, args.rows)
        prediction = clock("prediction", drift.prediction_drift, ref_scores, cur_scores, policy)
        reports = clock(
            "report",
            drift.write_reports,
            Path(tmp) / "reports",
            reference=reference,
            current=current,
            reference_scores=ref_scores,
            current_scores=cur_scores,
            features=kinds,
            policy=policy,
        )
        html_mb = round(Path(reports["data_drift_html"]).stat().st_size / 1e6, 1)

        print("baselines:")
        baseline = clock("numpy (PSI + KS)", numpy_pass, reference, current, kinds)
        if not args.skip_full_report:
            from evidently import Report
            from evidently.presets import DataDriftPreset

            numeric = [n for n, s in kinds.items() if s.numeric]
            categorical = [n for n, s in kinds.items() if not s.numeric]
            clock(
                "evidently_full_report",
                lambda: Report([DataDriftPreset()]).run(
                    reference_data=drift._dataset(reference, numeric, categorical),
                    current_data=drift._dataset(current, numeric, categorical),
                ),
            )

    t = clock.times
    stage = t["check"] + t["check_policy"] + t["decision"] + t["prediction"] + t["report"]
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "rows": {"reference": args.rows, "current": args.rows},
        "columns": len(kinds),
        "report_sample_rows": args.report_sample_rows,
        "seconds": t,
        "totals": {
            "drift_stage_s": round(stage, 2),
            "with_import_s": round(stage + t["import"], 2),
            "with_import_and_log_s": round(stage + t["import"] + t.get("read_log", 0.0), 2),
        },
        "ratios": {
            "decision_vs_numpy": round(t["decision"] / t["numpy (PSI + KS)"], 2),
            "drift_stage_vs_numpy": round(stage / t["numpy (PSI + KS)"], 2),
            **(
                {
                    "full_report_vs_sampled_report": round(
                        t["evidently_full_report"] / t["report"], 2
                    )
                }
                if "evidently_full_report" in t
                else {}
            ),
        },
        "outcome": {
            "drifted_columns": decision["drifted_columns"],
            "share": round(decision["share"], 4),
            "dataset_drift": decision["detected"],
            "prediction_drift": {k: prediction[k] for k in ("method", "score", "detected")},
            "numpy_psi_over_0.1": sorted(n for n, v in baseline.items() if v["psi"] >= 0.1),
            "report_html_mb": html_mb,
            "report_sampled": reports["sampled"],
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["totals"] | results["ratios"], indent=2))
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

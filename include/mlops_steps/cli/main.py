"""``mlops-step <verb>``: the one command line every pipeline step runs through.

Both runners execute exactly this: the local runner as a subprocess, the Kubernetes runner as the
task pod's command. A step prints its result as the last stdout line (``MLOPS_RESULT {json}``) and,
inside a pod that has the Airflow XCom volume, also writes it where the XCom sidecar reads it.
Exit codes: 0 done, 1 crash (retry may help), 2 rejected input or decision (a retry repeats it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlops_steps.core.errors import (
    EXIT_CRASH,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SKIPPED,
    NothingToDo,
    StepError,
)
from mlops_steps.core.settings import ConfigError, GateThresholds, Settings, load_settings

RESULT_MARKER = "MLOPS_RESULT "
# Mounted by the KubernetesPodOperator's XCom sidecar when do_xcom_push is on.
KUBERNETES_XCOM_DIR = Path("/airflow/xcom")
log = logging.getLogger("mlops_steps")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _cmd_ingest(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.ingest import run_ingest
    from mlops_steps.training.sources import SourceRequest

    request = SourceRequest(uri=args.source, rows=args.rows, seed=args.seed, drift=args.drift)
    return run_ingest(settings, args.partition, request)


def _cmd_validate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.validate import run_validate

    return run_validate(settings, args.partition, args.min_rows)


def _cmd_train(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.train import TrainParams, run_train

    params = TrainParams(
        seed=args.seed,
        learning_rate=args.learning_rate,
        num_leaves=args.num_leaves,
        max_rounds=args.max_rounds,
    )
    return run_train(settings, args.partition, params)


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.evaluate import run_evaluate

    return run_evaluate(settings, args.partition, args.bootstrap_resamples)


def _cmd_gate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.gate import run_gate

    thresholds = GateThresholds(
        min_auc=args.min_auc,
        min_accuracy=args.min_accuracy,
        max_latency_ms=args.max_latency_ms,
        max_auc_drop=args.max_auc_drop,
    )
    return run_gate(settings, args.partition, thresholds)


def _cmd_register(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.register import run_register

    return run_register(settings, args.partition)


def _release(args: argparse.Namespace, settings: Settings) -> Any:
    from mlops_steps.release.targets.base import Release

    return Release(
        model_name=settings.model_name,
        version=args.version,
        image_ref=args.image_ref,
        bundle_path=args.bundle_path or None,
    )


def _cmd_resolve(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_resolve

    return run_resolve(settings, args.version or None)


def _cmd_build_image(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.imagebuild import run_build_image

    return run_build_image(settings, args.version)


def _cmd_canary(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_canary

    return run_canary(settings, _release(args, settings), args.weight)


def _cmd_analyze(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.analysis import AnalysisPolicy, run_analysis

    policy = AnalysisPolicy(
        rounds=args.rounds,
        requests_per_round=args.requests_per_round,
        interval_s=args.interval_s,
        max_failures=args.max_failures,
        max_error_rate=args.max_error_rate,
        max_p99_ms=args.max_p99_ms,
        max_psi=args.max_psi,
        max_accuracy_drop=args.max_accuracy_drop,
        min_accuracy=args.min_accuracy,
    )
    return run_analysis(settings, args.version, args.data_partition, policy)


def _cmd_promote(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_promote

    return run_promote(
        settings, _release(args, settings), args.expected_champion or None, args.approved_by
    )


def _cmd_rollback(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_rollback

    return run_rollback(settings, args.version, args.reason, args.approved_by, args.status)


def _cmd_restore(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_restore_previous

    return run_restore_previous(settings, args.requested_by, args.reason)


def _method(text: str) -> str | None:
    """An Evidently stattest name; ``auto`` (or empty) lets Evidently choose per column."""
    return None if text.strip() in {"", "auto"} else text.strip()


def _optional_threshold(text: str) -> float | None:
    return None if text.strip() in {"", "auto", "None", "none"} else _positive_float(text)


def _column_setting(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=VALUE")
    return column.strip(), value.strip()


def _cmd_monitor(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    import datetime as dt

    from mlops_steps.monitoring.drift import DriftPolicy
    from mlops_steps.monitoring.monitor import MonitorRequest, PerformancePolicy, run_monitor
    from mlops_steps.monitoring.predictions import Window, parse_time

    if args.window_start or args.window_end:
        if not (args.window_start and args.window_end) or args.window_hours is not None:
            raise StepError(
                "give both --window-start and --window-end, or --window-hours [--until]",
                subject="window",
            )
        window = Window(
            parse_time(args.window_start, "--window-start"),
            parse_time(args.window_end, "--window-end"),
        )
    else:
        until = parse_time(args.until, "--until") if args.until else dt.datetime.now(dt.UTC)
        window = Window.ending(until, args.window_hours or 1.0)
    thresholds = {}
    for column, value in args.column_threshold:
        try:
            thresholds[column] = float(value)
        except ValueError:
            raise StepError(
                f"{value!r} is not a number", subject=f"--column-threshold {column}"
            ) from None
    drift = DriftPolicy(
        stattest=_method(args.stattest),
        num_stattest=_method(args.num_stattest),
        cat_stattest=_method(args.cat_stattest),
        threshold=args.stattest_threshold,
        per_column_stattest=dict(args.column_stattest),
        per_column_threshold=thresholds,
        drift_share=args.drift_share,
        prediction_stattest=_method(args.prediction_stattest),
        prediction_threshold=args.prediction_threshold,
        report_sample_rows=args.report_sample_rows,
    )
    request = MonitorRequest(
        window=window,
        prediction_log=args.prediction_log or settings.prediction_log,
        labels_dir=Path(args.labels) if args.labels else settings.labels_dir,
        drift=drift,
        performance=PerformancePolicy(
            max_auc_drop=args.max_auc_drop,
            max_accuracy_drop=args.max_accuracy_drop,
            min_labeled_rows=args.min_labeled_rows,
        ),
        min_rows=args.min_rows,
        max_null_share=args.max_null_share,
    )
    return run_monitor(settings, request)


def _add_monitor_verb(verb: Callable[..., Any]) -> None:
    """The monitoring pipeline's verb: it acts on a time window of served predictions."""
    monitor = verb(
        "monitor",
        _cmd_monitor,
        "Judge a window of served predictions for data drift, prediction drift and "
        "performance against the champion's training data.",
        partition=False,
    )
    window = monitor.add_argument_group("window (either start and end, or hours until a time)")
    window.add_argument("--window-start", default="", help="ISO 8601 (no zone = UTC)")
    window.add_argument("--window-end", default="", help="ISO 8601, exclusive")
    window.add_argument("--window-hours", type=_positive_float, default=None, help="default 1")
    window.add_argument("--until", default="", help="end of an --window-hours window; now")
    inputs = monitor.add_argument_group("inputs")
    inputs.add_argument("--prediction-log", default="", help="dir or s3:// prefix; "
                        "default MLOPS_PREDICTION_LOG")  # fmt: skip
    inputs.add_argument("--labels", default="", help="labels dir; default $MLOPS_DATA_ROOT/labels")
    inputs.add_argument("--min-rows", type=_positive_int, default=200,
                        help="fewer champion rows in the window fail the step")  # fmt: skip
    inputs.add_argument("--max-null-share", type=_fraction, default=0.0)
    drift = monitor.add_argument_group("drift (Evidently stattest names, or auto)")
    drift.add_argument("--stattest", default="auto", help="all features")
    drift.add_argument("--num-stattest", default="auto", help="numeric features")
    drift.add_argument("--cat-stattest", default="auto", help="categorical features")
    drift.add_argument("--stattest-threshold", type=_optional_threshold, default=None,
                       help="all features; default: each method's own")  # fmt: skip
    drift.add_argument("--column-stattest", type=_column_setting, action="append", default=[],
                       metavar="COLUMN=METHOD")  # fmt: skip
    drift.add_argument("--column-threshold", type=_column_setting, action="append", default=[],
                       metavar="COLUMN=VALUE")  # fmt: skip
    drift.add_argument("--drift-share", type=_fraction, default=0.1,
                       help="dataset drift when this share of features drifted")  # fmt: skip
    drift.add_argument("--prediction-stattest", default="psi", help="for the score")
    drift.add_argument("--prediction-threshold", type=_optional_threshold, default=None)
    drift.add_argument("--report-sample-rows", type=_positive_int, default=100_000,
                       help="rows per side in the HTML report; the decision uses all")  # fmt: skip
    perf = monitor.add_argument_group("performance (where delayed labels exist)")
    perf.add_argument("--max-auc-drop", type=_fraction, default=0.05)
    perf.add_argument("--max-accuracy-drop", type=_fraction, default=0.05)
    perf.add_argument("--min-labeled-rows", type=_positive_int, default=200)


def _add_release_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--image-ref", required=True, help="the image built for the version")
    sub.add_argument("--bundle-path", default="", help="its local model-store bundle, if any")


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-step", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str,
        handler: Callable[..., dict[str, Any]],
        help_text: str,
        *,
        partition: bool = True,
    ) -> Any:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        if partition:
            sub.add_argument("--partition", required=True, help="partition key of the logical run")
        sub.set_defaults(handler=handler)
        return sub

    ingest = verb("ingest", _cmd_ingest, "Read the source and write the checksummed partition.")
    ingest.add_argument(
        "--source",
        default="synthetic://churn",
        help="synthetic://churn, path, "
        "file://, s3:// or https:// URI of a .csv, .csv.gz or .parquet file",
    )
    ingest.add_argument("--rows", type=_positive_int, default=settings.default_rows)
    ingest.add_argument("--seed", type=int, default=settings.default_seed)
    ingest.add_argument("--drift", type=_fraction, default=0.0, help="synthetic drift, 0..1")

    validate = verb("validate", _cmd_validate, "Validate the partition (Great Expectations).")
    validate.add_argument("--min-rows", type=_positive_int, default=settings.min_rows)

    train = verb("train", _cmd_train, "Train LightGBM and log the run to MLflow.")
    train.add_argument("--seed", type=int, default=settings.default_seed)
    train.add_argument("--learning-rate", type=_positive_float, default=0.05)
    train.add_argument("--num-leaves", type=_positive_int, default=31)
    train.add_argument("--max-rounds", type=_positive_int, default=1000)

    evaluate = verb("evaluate", _cmd_evaluate, "Compare challenger and champion on the hold-out.")
    evaluate.add_argument("--bootstrap-resamples", type=_positive_int, default=1000)

    gate = verb("gate", _cmd_gate, "Apply the quality gate to the evaluation.")
    gate.add_argument("--min-auc", type=_fraction, default=settings.gate.min_auc)
    gate.add_argument("--min-accuracy", type=_fraction, default=settings.gate.min_accuracy)
    gate.add_argument(
        "--max-latency-ms", type=_positive_float, default=settings.gate.max_latency_ms
    )
    gate.add_argument("--max-auc-drop", type=_fraction, default=settings.gate.max_auc_drop)

    verb("register", _cmd_register, "Register the gated model and alias it 'challenger'.")

    _add_release_verbs(verb, settings)
    _add_monitor_verb(verb)
    return parser


def _add_release_verbs(verb: Callable[..., Any], settings: Settings) -> None:
    """The deployment pipeline's verbs: they act on a model version, not a data partition."""

    def release_verb(name: str, handler: Callable[..., dict[str, Any]], help_text: str) -> Any:
        sub = verb(name, handler, help_text, partition=False)
        sub.add_argument("--version", required=True, help="the model version being released")
        return sub

    resolve = verb(
        "resolve",
        _cmd_resolve,
        "Pick the candidate (a version, else the challenger) and re-check its gate.",
        partition=False,
    )
    resolve.add_argument("--version", default="", help="a version number; empty = challenger")
    release_verb("build-image", _cmd_build_image, "Build (or find) the version's serving image.")
    canary = release_verb("canary", _cmd_canary, "Put the version live as the canary.")
    _add_release_args(canary)
    canary.add_argument("--weight", type=_fraction, default=settings.deploy.canary_weight)
    analyze = release_verb("analyze", _cmd_analyze, "Replay traffic and judge the canary.")
    analyze.add_argument("--data-partition", required=True, help="the version's data partition")
    analyze.add_argument("--rounds", type=_positive_int, default=3)
    analyze.add_argument("--requests-per-round", type=_positive_int, default=300)
    analyze.add_argument("--interval-s", type=float, default=5.0)
    analyze.add_argument("--max-failures", type=_positive_int, default=2)
    analyze.add_argument("--max-error-rate", type=_fraction, default=0.01)
    analyze.add_argument("--max-p99-ms", type=_positive_float, default=100.0)
    analyze.add_argument("--max-psi", type=_positive_float, default=0.25)
    analyze.add_argument("--max-accuracy-drop", type=_fraction, default=0.05)
    analyze.add_argument("--min-accuracy", type=_fraction, default=settings.gate.min_accuracy)
    promote = release_verb("promote", _cmd_promote, "Make the canary the champion.")
    _add_release_args(promote)
    promote.add_argument("--expected-champion", default="", help="champion at evaluation time")
    promote.add_argument("--approved-by", default="", help="who approved, for the ledger")
    rollback = release_verb("rollback", _cmd_rollback, "Retire the canary; aliases untouched.")
    rollback.add_argument("--reason", required=True)
    rollback.add_argument("--approved-by", default="")
    rollback.add_argument("--status", choices=["rejected", "rolled_back"], default="rejected")
    restore = verb(
        "restore",
        _cmd_restore,
        "Manual rollback: previous_champion becomes champion again.",
        partition=False,
    )
    restore.add_argument("--requested-by", default="")
    restore.add_argument("--reason", default="")


def strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None: XComs go through Airflow's API server (and the
    pod's return.json through the KPO sidecar) as strict JSON, which has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def emit_result(result: dict[str, Any]) -> None:
    payload = json.dumps(strict_json(result), sort_keys=True, default=str, allow_nan=False)
    if KUBERNETES_XCOM_DIR.is_dir():
        (KUBERNETES_XCOM_DIR / "return.json").write_text(payload)
    sys.stdout.write(f"{RESULT_MARKER}{payload}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return EXIT_REJECTED
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.info("mlops-step %s %s", args.verb, getattr(args, "partition", "") or "")
    try:
        result = args.handler(args, settings)
    except NothingToDo as exc:
        log.warning("nothing to do: %s", exc.render())
        emit_result({"skipped": True, "reason": exc.render()})
        return EXIT_SKIPPED
    except StepError as exc:
        log.error("%s", exc.render())
        return EXIT_REJECTED
    except Exception:
        log.exception("step %s crashed", args.verb)
        return EXIT_CRASH
    emit_result(result)
    return EXIT_OK

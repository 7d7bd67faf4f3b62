"""The monitoring pipeline's verb: it acts on a time window of served predictions."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from typing import Any

from mlops_steps.cli.base import AddVerb
from mlops_steps.cli.release import policy_for_model
from mlops_steps.core.errors import StepError
from mlops_steps.core.options import add_cli_options
from mlops_steps.core.policies import DriftPolicy, PerformancePolicy, ServedWindowPolicy
from mlops_steps.core.settings import Settings


def _column_setting(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=VALUE")
    return column.strip(), value.strip()


def _window(args: argparse.Namespace, window_hours: float) -> Any:
    from mlops_steps.common.window import Window, parse_time

    if args.window_start or args.window_end:
        if not (args.window_start and args.window_end) or args.window_hours is not None:
            raise StepError(
                "give both --window-start and --window-end, or --window-hours [--until]",
                subject="window",
            )
        return Window(
            parse_time(args.window_start, "--window-start"),
            parse_time(args.window_end, "--window-end"),
        )
    until = parse_time(args.until, "--until") if args.until else dt.datetime.now(dt.UTC)
    return Window.ending(until, args.window_hours or window_hours)


def _drift_policy(args: argparse.Namespace, settings: Settings) -> DriftPolicy:
    thresholds = {}
    for column, value in args.column_threshold:
        try:
            thresholds[column] = float(value)
        except ValueError:
            raise StepError(
                f"{value!r} is not a number", subject=f"--column-threshold {column}"
            ) from None
    model = policy_for_model(DriftPolicy, args, settings.drift, "monitoring", settings)
    return dataclasses.replace(
        model,
        per_column_stattest={**model.per_column_stattest, **dict(args.column_stattest)},
        per_column_threshold={**model.per_column_threshold, **thresholds},
    )


def _monitor(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.monitoring.monitor import MonitorRequest, run_monitor

    # The deployment's defaults, the model contract's monitoring section, then the flags.
    # --window-hours is unset (None) unless given: then it is not a flag's value.
    window_flags = {k: v for k, v in vars(args).items() if k != "window_hours" or v is not None}
    served = policy_for_model(
        ServedWindowPolicy,
        argparse.Namespace(**window_flags),
        settings.served_window,
        "monitoring",
        settings,
    )
    request = MonitorRequest(
        window=_window(args, served.window_hours),
        prediction_log=args.prediction_log or settings.prediction_log,
        labels_location=args.labels or settings.labels_location,
        drift=_drift_policy(args, settings),
        performance=policy_for_model(
            PerformancePolicy, args, settings.performance, "monitoring", settings
        ),
        min_rows=served.min_rows,
        max_null_share=served.max_null_share,
    )
    return run_monitor(settings, request)


def add_verbs(verb: AddVerb, settings: Settings) -> None:
    monitor = verb(
        "monitor",
        _monitor,
        "Judge a window of served predictions for data drift, prediction drift and "
        "performance against the champion's training data.",
        partition=False,
    )
    window = monitor.add_argument_group("window (either start and end, or hours until a time)")
    window.add_argument("--window-start", default="", help="ISO 8601 (no zone = UTC)")
    window.add_argument("--window-end", default="", help="ISO 8601, exclusive")
    window.add_argument("--until", default="", help="end of an --window-hours window; now")
    inputs = monitor.add_argument_group("inputs")
    inputs.add_argument(
        "--prediction-log", default="", help="dir or s3:// prefix; default MLOPS_PREDICTION_LOG"
    )
    inputs.add_argument(
        "--labels",
        default="",
        help="label landing place, dir or s3:// prefix; default MLOPS_LABELS, else "
        "$MLOPS_DATA_ROOT/labels/<model> (or $MLOPS_DATA_ROOT/labels)",
    )
    add_cli_options(inputs, ServedWindowPolicy, settings.served_window)
    # Unset tells "--window-hours given" apart from its default, which a start/end window forbids.
    monitor.set_defaults(window_hours=None)
    drift = monitor.add_argument_group("drift (Evidently stattest names, or auto)")
    add_cli_options(drift, DriftPolicy, settings.drift)
    drift.add_argument("--column-stattest", type=_column_setting, action="append", default=[],
                       metavar="COLUMN=METHOD")  # fmt: skip
    drift.add_argument("--column-threshold", type=_column_setting, action="append", default=[],
                       metavar="COLUMN=VALUE")  # fmt: skip
    perf = monitor.add_argument_group("performance (where delayed labels exist)")
    add_cli_options(perf, PerformancePolicy, settings.performance)

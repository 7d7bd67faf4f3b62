"""The training pipeline's verbs: each acts on one data partition (a logical run).

A policy's value, lowest precedence first: the class default, the deployment's environment
(``settings``), the model contract's section (``training``, ``validation``, ``gate``), then a flag
the run sets. The flags are registered without a default (None) so the step can tell a flag the
run set from one it left to the contract; their help shows the deployment's default.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

from mlops_steps.cli.base import AddVerb
from mlops_steps.core.feedback import ServedDataRequest
from mlops_steps.core.options import add_cli_options, declared, from_args, from_env
from mlops_steps.core.policies import (
    EvaluationPolicy,
    GateThresholds,
    SourceRequest,
    TrainParams,
    ValidationPolicy,
)
from mlops_steps.core.settings import Settings

_Policy = TypeVar("_Policy")


def _add_overridable(parser: argparse.ArgumentParser, policy_cls: type, defaults: Any) -> None:
    """The policy's flags, defaulting to None (unset: the contract's value, else ``defaults``)."""
    add_cli_options(parser, policy_cls, defaults)
    parser.set_defaults(**{item.name: None for item in declared(policy_cls)})


def resolved_policy(
    policy_cls: type[_Policy],
    args: argparse.Namespace,
    settings: Settings,
    section: str,
    base: _Policy,
) -> _Policy:
    """``base`` (the deployment's defaults) with the model contract's ``section`` applied, then
    every flag the run set."""
    from mlops_steps.contract.loader import load_contract

    policy = load_contract(settings.model_name).policy(section, base)
    given = {
        item.name: value
        for item in declared(policy_cls)
        if (value := getattr(args, item.name, None)) is not None
    }
    return dataclasses.replace(policy, **given) if given else policy  # type: ignore[type-var]


def served_defaults(settings: Settings) -> ServedDataRequest:
    """The deployment's served-data defaults (MLOPS_TRAINING_DATA, MLOPS_REFERENCE_SHARE)."""
    from mlops_steps.core.settings import ConfigError

    return from_env(ServedDataRequest, ConfigError)


def _ingest(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    import datetime as dt

    from mlops_steps.common.window import parse_time
    from mlops_steps.training.ingest import run_ingest
    from mlops_steps.training.served import parse_served_window

    return run_ingest(
        settings,
        args.partition,
        from_args(SourceRequest, args),
        resolved_policy(ServedDataRequest, args, settings, "training", served_defaults(settings)),
        served_window=parse_served_window(args.served_window),
        as_of=parse_time(args.as_of, "--as-of") if args.as_of else dt.datetime.now(dt.UTC),
    )


def _validate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.validate import run_validate

    policy = resolved_policy(ValidationPolicy, args, settings, "validation", settings.validation)
    return run_validate(settings, args.partition, policy)


def _train(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.train import run_train

    params = resolved_policy(TrainParams, args, settings, "training", settings.training)
    return run_train(settings, args.partition, params)


def _evaluate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.evaluate import run_evaluate

    return run_evaluate(settings, args.partition, args.bootstrap_resamples)


def _gate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.gate import run_gate

    thresholds = resolved_policy(GateThresholds, args, settings, "gate", settings.gate)
    return run_gate(settings, args.partition, thresholds)


def _register(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.register import run_register

    return run_register(settings, args.partition)


def add_verbs(verb: AddVerb, settings: Settings) -> None:
    ingest = verb(
        "ingest",
        _ingest,
        "Read the source and write the checksummed partition (the default source of a model "
        "other than churn: its contract's), or build it from served traffic joined with its "
        "labels and a share of the champion's training rows (--training-data).",
    )
    add_cli_options(ingest, SourceRequest, settings.ingest)
    served = ingest.add_argument_group("served traffic (the prediction log joined with labels)")
    add_cli_options(served, ServedDataRequest, served_defaults(settings))
    # Unset: the contract's `training` section, else the deployment's default (resolved_policy).
    ingest.set_defaults(**{item.name: None for item in declared(ServedDataRequest)})
    served.add_argument(
        "--served-window",
        default="",
        metavar="START/END",
        help="ISO 8601 times of the served traffic to train on (the drift event's window; "
        "empty: none given)",
    )
    served.add_argument(
        "--as-of",
        default="",
        help="ISO 8601; labels known after it are left for a later run, and a served run "
        "without a window reads the served_days before it (default: now; a DAG run passes "
        "its run_after, so a retry builds the same partition)",
    )
    validate = verb("validate", _validate, "Validate the partition (Great Expectations).")
    _add_overridable(validate, ValidationPolicy, settings.validation)
    train = verb("train", _train, "Train LightGBM and log the run to MLflow.")
    _add_overridable(train, TrainParams, settings.training)
    evaluate = verb("evaluate", _evaluate, "Compare challenger and champion on the hold-out.")
    add_cli_options(evaluate, EvaluationPolicy)
    gate = verb(
        "gate",
        _gate,
        "Apply the quality gate to the evaluation: the contract's metric checks (or the run's "
        "--checks JSON), latency, and the champion-collapse review.",
    )
    _add_overridable(gate, GateThresholds, settings.gate)
    verb("register", _register, "Register the gated model and alias it 'challenger'.")

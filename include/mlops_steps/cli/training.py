"""The training pipeline's verbs: each acts on one data partition (a logical run)."""

from __future__ import annotations

import argparse
from typing import Any

from mlops_steps.cli.base import AddVerb
from mlops_steps.core.options import add_cli_options, from_args
from mlops_steps.core.policies import (
    EvaluationPolicy,
    GateThresholds,
    SourceRequest,
    TrainParams,
    ValidationPolicy,
)
from mlops_steps.core.settings import Settings


def _ingest(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.ingest import run_ingest

    return run_ingest(settings, args.partition, from_args(SourceRequest, args))


def _validate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.validate import run_validate

    return run_validate(settings, args.partition, from_args(ValidationPolicy, args))


def _train(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.train import run_train

    return run_train(settings, args.partition, from_args(TrainParams, args))


def _evaluate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.evaluate import run_evaluate

    return run_evaluate(settings, args.partition, args.bootstrap_resamples)


def _gate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.gate import run_gate

    return run_gate(settings, args.partition, from_args(GateThresholds, args))


def _register(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.training.register import run_register

    return run_register(settings, args.partition)


def add_verbs(verb: AddVerb, settings: Settings) -> None:
    ingest = verb("ingest", _ingest, "Read the source and write the checksummed partition.")
    add_cli_options(ingest, SourceRequest, settings.ingest)
    validate = verb("validate", _validate, "Validate the partition (Great Expectations).")
    add_cli_options(validate, ValidationPolicy, settings.validation)
    train = verb("train", _train, "Train LightGBM and log the run to MLflow.")
    add_cli_options(train, TrainParams, settings.training)
    evaluate = verb("evaluate", _evaluate, "Compare challenger and champion on the hold-out.")
    add_cli_options(evaluate, EvaluationPolicy)
    gate = verb("gate", _gate, "Apply the quality gate to the evaluation.")
    add_cli_options(gate, GateThresholds, settings.gate)
    verb("register", _register, "Register the gated model and alias it 'challenger'.")

"""The batch scoring verb: it scores a table for one run key (the run's logical date)."""

from __future__ import annotations

import argparse
from typing import Any

from mlops_steps.cli.base import AddVerb
from mlops_steps.core.errors import StepError
from mlops_steps.core.options import add_cli_options, declared, from_args, from_env
from mlops_steps.core.policies import BatchScoringPolicy
from mlops_steps.core.settings import Settings


def _policy(args: argparse.Namespace) -> BatchScoringPolicy:
    """The flags over the deployment's defaults (``MLOPS_BATCH_SCORING_*``): a flag left at the
    class default takes the deployment's value, so an environment default binds unless a run
    (its Params, or the command line) says otherwise."""
    deployment = from_env(BatchScoringPolicy, StepError)
    defaults = BatchScoringPolicy()
    flags = vars(args)
    chosen = {
        item.name: (
            flags[item.name]
            if flags[item.name] != getattr(defaults, item.name)
            else getattr(deployment, item.name)
        )
        for item in declared(BatchScoringPolicy)
    }
    return from_args(BatchScoringPolicy, argparse.Namespace(**{**flags, **chosen}))


def _score_batch(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.scoring.batch import run_score_batch

    return run_score_batch(settings, args.partition, _policy(args))


def add_verbs(verb: AddVerb, settings: Settings) -> None:
    score = verb(
        "score-batch",
        _score_batch,
        "Score a table in chunks with the champion (or a given version) into Parquet under "
        "run=<partition>/ with a manifest; a complete run is never written again.",
    )
    add_cli_options(score, BatchScoringPolicy)

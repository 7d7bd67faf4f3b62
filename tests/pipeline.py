"""Run the real training steps in-process, as a test fixture would before exercising what
comes after them (serving, deployment)."""

from __future__ import annotations

from collections.abc import Sequence


def train_and_register(
    partition: str,
    *ingest_args: str,
    rows: int = 8000,
    gate_args: Sequence[str] = (),
    validate_args: Sequence[str] = (),
) -> None:
    """ingest → validate → train → evaluate → gate → register for one partition, under the
    MLOPS_* / MLFLOW_* environment the caller set."""
    from mlops_steps.cli import main as cli

    for argv in (
        ["ingest", "--rows", str(rows), *ingest_args],
        ["validate", *validate_args],
        ["train"],
        ["evaluate", "--bootstrap-resamples", "50"],
        ["gate", *gate_args],
        ["register"],
    ):
        assert cli.main([argv[0], "--partition", partition, *argv[1:]]) == 0, argv

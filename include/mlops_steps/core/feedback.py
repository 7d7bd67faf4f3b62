"""What a training run reads when it learns from served traffic: the prediction log of a window
joined with its delayed labels, mixed with a share of the champion's training rows.

Declared here, beside :mod:`mlops_steps.core.policies`, and derived into ``ingest``'s flags and
the training DAG's Params the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlops_steps.core.options import option

AUTO, SOURCE, SERVED = "auto", "source", "served"
TRAINING_DATA_MODES = (AUTO, SOURCE, SERVED)


@dataclass(frozen=True)
class ServedDataRequest:
    """Whether ``ingest`` builds the partition from served, labelled traffic, and how."""

    training_data: str = option(
        AUTO,
        help="auto: a run given a window (--served-window: the drift event's, or a person's) "
        "trains on the served, labelled traffic of that window, any other run reads --source; "
        "served: every run trains on served traffic, of the given window or else the last "
        "--served-days; source: --source only",
        title="Training data",
        description="auto: the served, labelled traffic of the drift event's window when drift "
        "woke the run (or of served_window when given), else the source. served: that window, "
        "else the last served_days. source: the source only.",
        choices=TRAINING_DATA_MODES,
        env="MLOPS_TRAINING_DATA",
    )
    served_days: float = option(
        7,
        help="days of served traffic before the run a served run reads when no drift event "
        "gives the window",
        title="Served traffic window (days)",
        exclusive_minimum=0,
        maximum=90,
    )
    reference_share: float = option(
        0.5,
        help="share of the partition drawn from the champion's training rows, so the new model "
        "does not forget the world it knew",
        title="Share of the champion's training rows",
        minimum=0,
        maximum=0.9,
        env="MLOPS_REFERENCE_SHARE",
    )
    min_labeled_rows: int = option(
        1_000,
        help="fewer served rows with a label fail the run (exit 2) and register nothing",
        title="Minimum labelled served rows",
        minimum=1,
        flag="--min-labeled-served-rows",
        param="min_labeled_served_rows",
    )

"""Fail the DAG run after a clean rollback, so a release that did not happen shows as failed.

The rollback task succeeds when it restores the traffic, and it is the run's last task, so
without this the run would end green. Placed after the rollback (all_success), this task runs
exactly when a rollback ran, and fails with the reason; alerts and dashboards see a failed release.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class ReleaseRolledBackOperator(BaseOperator):
    """Raise ``message`` (templated) as the run's failure."""

    template_fields: Sequence[str] = ("message",)
    ui_color = "#f6d6d6"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        raise AirflowFailException(self.message)

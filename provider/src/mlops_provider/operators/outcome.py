"""How a release that did not happen ends: a rollback only where something was released, and a
failed run after it.

The rollback task succeeds when it restores the traffic, and it is the run's last task, so
without :class:`ReleaseRolledBackOperator` the run would end green. Placed after the rollback
(all_success), that task runs exactly when a rollback ran, and fails with the reason; alerts and
dashboards see a failed release. The rollback itself fires on ``one_failed``, which also counts
*upstream* failures: :func:`skip_unless_attempted` keeps it from running (and alerting "rollback
failed") when the run stopped before the release began, e.g. at ``resolve`` or ``approve``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context


#: The states of a task that ran (and so may have changed something to undo).
_ATTEMPTED = frozenset({"success", "failed"})


def skip_unless_attempted(task_id: str) -> Callable[[Context], None]:
    """A ``pre_execute`` hook: skip the task unless ``task_id`` of the same run actually ran."""

    def check(context: Context) -> None:
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
        state = (states.get(ti.run_id) or {}).get(task_id)
        if str(state) not in _ATTEMPTED:
            raise AirflowSkipException(
                f"Nothing to roll back: {task_id} never ran in this run (state {state}); "
                "traffic and aliases were not touched."
            )

    return check


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

"""Deadlines for DAG runs (Airflow 3 replaced SLAs with DeadlineAlert), alerting through the
same channels as failures.

In Airflow 3.3 a DeadlineAlert's interval is a fixed ``timedelta`` or an Airflow Variable (a
``VariableInterval``; a missing Variable breaks run creation). Neither can come from a DAG
Param, so :class:`QueuedAtPlusParam` is a custom deadline *reference* that adds a Param's value
(from the run's conf, else its default) to the time the run was queued. It is registered by
``plugins/mlops_alerts_plugin.py``; every process that creates runs (scheduler, API server,
``dag.test``) loads it with the plugins folder.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import BaseDeadlineReference, DeadlineAlert, DeadlineReference

from mlops_provider.notifications.callbacks import DEADLINE_MISSED_PATH

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

REFERENCE_TYPE_FIELD = "reference_type"


class QueuedAtPlusParam(BaseDeadlineReference):
    """``queued_at`` + the run's ``param`` in minutes (conf value if valid, else the default).

    Use with ``interval=timedelta(0)``: the Param is the interval. A malformed value falls back
    to the default with a warning; evaluation never raises, so a bad conf cannot stop a run
    from being created.
    """

    required_kwargs = frozenset({"dag_id", "run_id"})

    def __init__(self, param: str = "deadline_minutes", default_minutes: float = 60.0) -> None:
        if default_minutes <= 0:
            raise ValueError(f"default_minutes of Param {param!r} must be > 0")
        self.param = param
        self.default_minutes = float(default_minutes)

    def serialize_reference(self) -> dict[str, Any]:
        return {
            REFERENCE_TYPE_FIELD: self.reference_name,
            "param": self.param,
            "default_minutes": self.default_minutes,
        }

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> QueuedAtPlusParam:
        return cls(reference_data["param"], reference_data["default_minutes"])

    def minutes(self, conf: Any) -> float:
        """The run's value of the Param, or the default when absent or not a positive number."""
        raw = conf.get(self.param) if isinstance(conf, dict) else None
        if raw is None or raw == "":
            return self.default_minutes
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = -1.0
        if value > 0:
            return value
        log.warning(
            "Param %r=%r is not a positive number of minutes; the deadline uses the default %g",
            self.param,
            raw,
            self.default_minutes,
        )
        return self.default_minutes

    def _evaluate_with(self, *, session: Session, **kwargs: Any) -> datetime | None:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        try:
            row = session.execute(
                select(DagRun.queued_at, DagRun.run_after, DagRun.conf).where(
                    DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
                )
            ).one_or_none()
        except Exception:  # never block run creation over a deadline
            log.exception("deadline of %s/%s not created", kwargs.get("dag_id"), kwargs["run_id"])
            return None
        if row is None:
            log.warning("no DagRun %s/%s: deadline not created", kwargs["dag_id"], kwargs["run_id"])
            return None
        queued_at, run_after, conf = row
        start = queued_at or run_after  # a run created already running has no queued_at
        if start is None:
            return None
        return start + timedelta(minutes=self.minutes(conf))


def _callback(deadline: str, message: str, action_task_id: str | None) -> AsyncCallback:
    kwargs = {"deadline": deadline, "message": message}
    if action_task_id:
        kwargs["action_task_id"] = action_task_id
    # A path, not the function: parsing never imports the channels, and the triggerer runs it.
    return AsyncCallback(DEADLINE_MISSED_PATH, kwargs=kwargs)


def queued_deadline(
    name: str, interval: timedelta, message: str, *, action_task_id: str | None = None
) -> DeadlineAlert:
    """Alert when a run is not finished ``interval`` after it was queued."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=_callback(name, message, action_task_id),
        name=name,
    )


def param_deadline(name: str, param: str, default_minutes: float, message: str) -> DeadlineAlert:
    """Alert when a run is not finished Param ``param`` minutes after it was queued; declare
    the Param in the DAG with the same default so the trigger form shows it."""
    return DeadlineAlert(
        reference=QueuedAtPlusParam(param, default_minutes),
        interval=timedelta(0),
        callback=_callback(name, message, None),
        name=name,
    )


def before_next_run(name: str, period: timedelta, message: str) -> DeadlineAlert:
    """Alert when a scheduled run is not finished when the next one is due (its logical date
    plus the schedule's period). Runs without a logical date (manual, asset-triggered) get no
    deadline from this: Airflow skips it with a warning."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=period,
        callback=_callback(name, message, None),
        name=name,
    )

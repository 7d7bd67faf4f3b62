"""Deadline callbacks. DAGs name them by import path (``AsyncCallback(DEADLINE_MISSED_PATH)``):
the triggerer imports this module and awaits the function with the run's context.

The triggerer's context is small: ``{"dag_run": <the run as the REST API shows it>,
"deadline": {"id", "deadline_time"}}``. Delivery is awaited on the triggerer's event loop: the
channels read connections with ``aget_connection`` and send through the providers' async
notifiers (e-mail, whose provider has only a working sync client, in a thread).
"""

from __future__ import annotations

from typing import Any

DEADLINE_MISSED_PATH = "mlops_provider.notifications.callbacks.deadline_missed"


async def deadline_missed(
    *,
    deadline: str,
    message: str = "",
    action_task_id: str | None = None,
    context: dict[str, Any] | None = None,
) -> str:
    """Alert that a DAG run missed deadline ``deadline`` (a name for people and records).

    :param message: what the deadline means and what to do, added to the alert.
    :param action_task_id: a human-in-the-loop task whose Required Actions page is linked.
    :return: one line on what happened, which Airflow keeps as the callback's output. A string
        on purpose: Airflow 3.3 writes the value into a text column as is, and a dict there
        crashes the triggerer (seen on SQLite).
    """
    from mlops_provider.notifications.alerts import deadline_alert
    from mlops_provider.notifications.delivery import adeliver

    alert = deadline_alert(
        context, deadline=deadline, message=message, action_task_id=action_task_id
    )
    if alert is None:
        return f"deadline {deadline}: no alert, the run ended before its deadline"
    results = await adeliver(alert)
    outcome = ", ".join(f"{channel}={result}" for channel, result in results.items())
    return f"deadline {deadline}: alert {alert.alert_id}: {outcome}"[:2000]

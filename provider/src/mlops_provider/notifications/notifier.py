"""``MlopsNotifier``: the BaseNotifier every DAG uses, as a failure callback and on approvals.

As ``on_failure_callback`` it runs in the task's own process once the task has failed for good
(Airflow calls ``on_retry_callback``, not this, for a try that will be retried), so one failure
is one alert. As an approval operator's notifier it runs when the task starts waiting.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from mlops_provider.notifications.alerts import APPROVAL_WAITING, TASK_FAILED, task_alert

if TYPE_CHECKING:
    from airflow.sdk import Context


class MlopsNotifier(BaseNotifier):
    """Send one alert about the task in the context to every configured channel.

    :param kind: ``task_failed``, ``approval_waiting`` or another label for the record.
    :param message: templated; empty means a message built from the context (the error of a
        failed task; the subject and the Required Actions link of an approval).
    :param channels: override ``MLOPS_ALERT_CHANNELS`` for this notifier.
    """

    template_fields: Sequence[str] = ("message",)

    def __init__(
        self, *, kind: str, message: str = "", channels: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.kind = kind
        self.message = message
        self.channels = list(channels) if channels is not None else None

    def __call__(self, *args: Any) -> None:
        # BaseNotifier renders template fields in place; one instance serves every task of a
        # DAG (default_args), so each call renders its own copy.
        BaseNotifier.__call__(copy.copy(self), *args)

    def notify(self, context: Context) -> None:
        from mlops_provider.notifications.delivery import deliver

        deliver(task_alert(context, self.kind, self.message), self.channels)

    async def async_notify(self, context: Context) -> None:
        from mlops_provider.notifications.delivery import adeliver

        await adeliver(task_alert(context, self.kind, self.message), self.channels)


def task_failure_notifier() -> MlopsNotifier:
    """For ``default_args["on_failure_callback"]``: one alert per task that failed for good."""
    return MlopsNotifier(kind=TASK_FAILED)


def approval_notifier() -> MlopsNotifier:
    """For a human-in-the-loop operator's ``notifiers``: says what waits and where to answer."""
    return MlopsNotifier(kind=APPROVAL_WAITING)

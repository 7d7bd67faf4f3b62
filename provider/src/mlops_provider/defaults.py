"""What every task of every pipeline DAG shares: retries and one alert when it fails for good."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mlops_provider.notifications.notifier import task_failure_notifier


def task_defaults(
    *,
    retry_delay: timedelta = timedelta(seconds=30),
    max_retry_delay: timedelta = timedelta(minutes=5),
) -> dict[str, Any]:
    """``default_args``: two retries with exponential back-off (a crashed step is worth
    retrying; a rejected one fails without retry), and the failure alert after the last try."""
    return {
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": max_retry_delay,
        "on_failure_callback": task_failure_notifier(),
    }


def cron_or_assets(cron: str | None, assets: Any = None) -> Any:
    """A DAG ``schedule``: the cron (UTC) or the asset condition, whichever comes first; only
    the assets when the cron is off (``MLOPS_*_SCHEDULE=off``); None when both are absent."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    if cron is None:
        return assets
    timetable = CronTriggerTimetable(cron, timezone="UTC")
    return timetable if assets is None else AssetOrTimeSchedule(timetable=timetable, assets=assets)

"""Airflow plugin: register the project's custom deadline reference.

``QueuedAtPlusParam`` (a deadline that a DAG Param can change per run) is evaluated when a run is
created, by the scheduler, the API server or ``dag.test``. Airflow finds custom deadline
references only through plugins, so this one line of wiring sits in ``plugins/``; the reference
itself is in the installed provider.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_provider.notifications.deadlines import QueuedAtPlusParam


class MlopsAlertsPlugin(AirflowPlugin):
    name = "mlops_alerts"
    deadline_references = [QueuedAtPlusParam]  # noqa: RUF012 - Airflow's declared plugin attribute

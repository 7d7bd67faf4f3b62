"""Airflow plugin: answers to human-in-the-loop requests are held until the task has settled.

Works around Airflow 3.3.2 failing a task answered within a second of parking itself (see
``mlops_provider.approvals.settle``); ``MLOPS_APPROVAL_SETTLE_S`` (default 10, 0 switches it off).
Only the wiring lives here.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_provider.approvals.settle import HitlSettleMiddleware
from mlops_steps.core.settings import load_settings


class MlopsApprovalsPlugin(AirflowPlugin):
    """Adds :class:`HitlSettleMiddleware` in front of the API server's routes."""

    name = "mlops_approvals"
    fastapi_root_middlewares = [  # noqa: RUF012 - Airflow's declared plugin attribute
        {
            "middleware": HitlSettleMiddleware,
            "args": [],
            "kwargs": {"settle_s": load_settings().deploy.approval_settle_s},
            "name": "Hold HITL answers until the task has settled",
        }
    ]

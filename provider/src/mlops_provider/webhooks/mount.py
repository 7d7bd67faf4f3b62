"""Where the bridge is mounted in Airflow's API server, and how without importing FastAPI.

Airflow loads plugins in every component (scheduler, DAG processor, triggerer, workers); only
the API server serves ``fastapi_apps``. :class:`LazyASGIApp` builds the real app on its first
request, so the other components do not pay for importing FastAPI and the database models. The
app (:mod:`.app`) imports this module for its paths, never the other way round; the plugin
(``plugins/mlops_webhooks_plugin.py``) ties the two together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

URL_PREFIX = "/mlops-webhooks"
#: Where MLflow delivers: ``{airflow_url}{URL_PREFIX}{MLFLOW_PATH}``.
MLFLOW_PATH = "/mlflow"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def webhook_url(airflow_url: str) -> str:
    """The URL to register in MLflow for an Airflow API server at ``airflow_url``."""
    return f"{airflow_url.rstrip('/')}{URL_PREFIX}{MLFLOW_PATH}"


class LazyASGIApp:
    """An ASGI app that creates the real one (``factory()``) when first called."""

    def __init__(self, factory: Callable[[], ASGIApp]) -> None:
        self._factory = factory
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:  # one event loop per process: no lock needed
            self._app = self._factory()
        await self._app(scope, receive, send)

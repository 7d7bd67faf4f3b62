"""The model service with its prediction log in the format ``SERVING_PREDICTION_LOG_FORMAT``
names and every version it loads declared to the log (Parquet columns typed by its feature
spec): the two lines ``mlops_serving/app.py`` does not have yet (issue 16). Until it has them,
tests and the serving benchmark start the service through this factory to measure and check the
Parquet writer inside a real service process.

Run as ``uvicorn --factory tests.serving.log_format_app:create_app``.
"""

from __future__ import annotations

from fastapi import FastAPI

from mlops_serving import app as serving_app
from mlops_serving.predlog import PredictionLog
from mlops_serving.state import ServingState


def create_app() -> FastAPI:
    app = serving_app.create_app()
    state: ServingState = app.state["serving"]
    settings, unused = state.settings, state.predictions
    state.predictions = PredictionLog(
        settings.prediction_log,
        flush_interval=unused.flush_interval,
        max_buffered=unused.max_buffered,
        on_drop=state.metrics.log_dropped.inc,
        writer="process",
        log_format=settings.prediction_log_format,
    )
    state._loader = state.predictions.declaring(state._loader)  # the wiring app.py lacks
    return app

"""The model service with a fault injected, for tests of how unexpected errors are answered:
scoring a request raises (the load-time smoke prediction of one row still works).

Run as ``uvicorn --factory tests.serving.faulty_app:create_app``.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
from fastapi import FastAPI

from mlops_serving import app as serving_app
from mlops_serving.model import LoadedModel

FAULT = "injected fault 7f3a"


def create_app() -> FastAPI:
    smoke_predict = LoadedModel.predict

    def predict_one(self: LoadedModel, values: list[float]) -> NoReturn:
        raise RuntimeError(FAULT)

    def predict(self: LoadedModel, matrix: np.ndarray) -> Any:
        if len(matrix) > 1:
            raise RuntimeError(FAULT)
        return smoke_predict(self, matrix)

    LoadedModel.predict_one = predict_one  # type: ignore[method-assign]
    LoadedModel.predict = predict  # type: ignore[method-assign]
    return serving_app.create_app()

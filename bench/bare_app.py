"""The floor for the serving benchmark: FastAPI + the same LightGBM booster and nothing else
(no validation, metrics, canary routing or prediction log). Model directory from BARE_MODEL_DIR."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

_model_dir = Path(os.environ["BARE_MODEL_DIR"])
_booster = lightgbm.Booster(model_file=str(_model_dir / "artifacts" / "booster.txt"))
_spec = json.loads((_model_dir / "artifacts" / "feature_spec.json").read_text())
_columns = [
    (f["name"], {c: float(i) for i, c in enumerate(f.get("categories", []))} or None)
    for f in _spec["features"]
]

app = FastAPI()


@app.get("/ping")
def ping() -> Response:
    return Response(b"", status_code=200)


def _encode(records: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray(
        [[vocab[r[name]] if vocab else r[name] for name, vocab in _columns] for r in records],
        dtype=np.float64,
    )


@app.post("/predict")
async def predict(request: Request) -> Response:
    body = orjson.loads(await request.body())
    score = float(_booster.predict(_encode([body["features"]]), num_threads=1)[0])
    return Response(orjson.dumps({"score": score}), media_type="application/json")


@app.post("/predict/batch")
async def predict_batch(request: Request) -> Response:
    body = orjson.loads(await request.body())
    rows = body["instances"]
    scores = _booster.predict(_encode(rows), num_threads=1 if len(rows) < 2_000 else 0)
    return Response(
        orjson.dumps({"scores": scores}, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
    )

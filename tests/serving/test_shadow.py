"""Shadow mode on a real service process: the challenger scores copies of the stable model's
requests after they are answered, answers nobody, and is counted, compared and logged apart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.service_process import Service

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

pytestmark = pytest.mark.serving
FEATURES = load_contract("churn").feature_names


def _records(rows: int, seed: int = 11) -> list[dict[str, Any]]:
    frame = plain_values(generate_churn(rows, seed).loc[:, list(FEATURES)])
    return json.loads(frame.to_json(orient="records"))


def _shadow_counters(service: Service) -> dict[str, float]:
    """variant=shadow series of the service's /metrics, by sample name and label values."""
    with service.client() as http:
        text = http.get("/metrics").text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("variant") != "shadow":
                continue
            labels = {k: v for k, v in sample.labels.items() if k in ("status", "outcome", "le")}
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(labels.items()))
            found[key] = found.get(key, 0.0) + sample.value
            assert sample.labels["version"] == "2"
    return found


def _logged(log_dir: Path, wanted: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for _ in range(100):
        lines = [
            json.loads(line)
            for path in sorted(log_dir.glob("date=*/*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        if len(lines) >= wanted:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"the service logged {len(lines)} of {wanted} predictions")


def test_shadow_scores_copies_answers_nobody_and_is_logged_apart(
    registry: str, start_service: Callable[..., Service]
) -> None:
    service = start_service(registry, SERVING_PREDICTION_LOG_FLUSH_MS="50")
    records = _records(60)
    with service.admin() as admin, service.client() as http:
        ready = admin.post("/admin/canary", json={"ref": "challenger", "weight": 1.0,
                                                  "shadow": True}).json()  # fmt: skip
        assert ready == {"stable": "1", "canary": "2", "canary_weight": 0.0, "shadow_share": 1.0}
        answers = [
            http.post("/predict", json={"features": r, "entity_id": f"S{i}"}).json()
            for i, r in enumerate(records[:40])
        ]
        batch = http.post("/predict/batch", json={"instances": records[40:]}).json()
    # Every answer came from the stable model.
    assert {(a["variant"], a["model_version"]) for a in answers} == {("stable", "1")}
    assert (batch["variant"], batch["model_version"], batch["rows"]) == ("stable", "1", 20)

    logged = _logged(service.log_dir, wanted=2 * 60)
    shadow = [line for line in logged if line["variant"] == "shadow"]
    stable = {(line["request_id"], line["row"]): line for line in logged
              if line["variant"] == "stable"}  # fmt: skip
    assert len(shadow) == 60 and len(stable) == 60
    for line in shadow:  # the same request, scored by the challenger
        twin = stable[(line["request_id"], line["row"])]
        assert line["model_version"] == "2" and twin["model_version"] == "1"
        assert line["features"] == twin["features"]
    agree = sum((s["score"] >= 0.5) == (stable[(s["request_id"], s["row"])]["score"] >= 0.5)
                for s in shadow)  # fmt: skip

    counters = _shadow_counters(service)
    assert counters["serving_requests_total|status=200"] == 41  # 40 single rows, 1 batch
    assert counters["serving_predicted_rows_total"] == 60
    assert counters["serving_shadow_agreement_total|outcome=agree"] == agree
    assert counters["serving_shadow_agreement_total|outcome=disagree"] == 60 - agree
    assert counters["serving_prediction_score_count"] == 60

    with service.admin() as admin, service.client() as http:
        off = admin.post("/admin/canary/weight", json={"weight": 0.0, "shadow": True})
        assert off.json()["shadow_share"] == 0.0
        http.post("/predict", json={"features": records[0]})
        assert _shadow_counters(service)["serving_requests_total|status=200"] == 41
        assert admin.post("/admin/rollback").json()["shadow_share"] == 0.0


def test_a_partial_share_copies_about_that_share(
    registry: str, start_service: Callable[..., Service]
) -> None:
    service = start_service(registry)
    record = _records(1)[0]
    with service.admin() as admin, service.client() as http:
        admin.post("/admin/canary", json={"ref": "challenger", "weight": 0.3, "shadow": True})
        for _ in range(600):
            assert http.post("/predict", json={"features": record}).json()["variant"] == "stable"
    copies = _shadow_counters(service)["serving_requests_total|status=200"]
    assert 0.22 < copies / 600 < 0.38

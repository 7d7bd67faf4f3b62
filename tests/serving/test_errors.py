"""Unexpected errors in the prediction routes, in a real service process with a fault
injected (``faulty_app``): a JSON 500 without the stack, counted in the metrics the canary
analysis reads under the variant and version that was chosen."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.service_process import Service
from tests.serving.faulty_app import FAULT

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

FEATURE_NAMES = load_contract("churn").feature_names

pytestmark = pytest.mark.serving


def _requests_total(service: Service) -> dict[tuple[str, str, str, str], float]:
    """serving_requests_total by (endpoint, variant, version, status)."""
    with service.client() as http:
        text = http.get("/metrics").text
    return {
        (s.labels["endpoint"], s.labels["variant"], s.labels["version"], s.labels["status"]):
            s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "serving_requests_total"
    }  # fmt: skip


def test_an_unexpected_error_is_a_counted_json_500_without_the_stack(
    registry: str, start_service: Callable[..., Service]
) -> None:
    service = start_service(registry, app_factory="tests.serving.faulty_app:create_app")
    records = plain_values(generate_churn(3, seed=1).loc[:, list(FEATURE_NAMES)]).to_dict("records")
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]
    with service.client() as http, service.admin() as admin:
        single = http.post("/predict", json={"features": records[0]})
        batch = http.post("/predict/batch", json={"instances": records})
        assert admin.post("/admin/canary", json={"ref": "challenger", "weight": 1.0}).is_success
        on_canary = http.post("/predict", json={"features": records[0]})
    for response in (single, batch, on_canary):
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        detail = response.json()["detail"]
        assert detail.startswith("internal error (error id ") and "see the service log" in detail
        assert FAULT not in response.text and "Traceback" not in response.text
    counted = _requests_total(service)
    assert counted[("predict", "stable", "1", "500")] == 1
    assert counted[("batch", "stable", "1", "500")] == 1
    assert counted[("predict", "canary", "2", "500")] == 1
    assert not [key for key in counted if key[3] == "200"]
    log = service.output.read_text()
    assert FAULT in log and "Traceback" in log  # the stack is in the service log

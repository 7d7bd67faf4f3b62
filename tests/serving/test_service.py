"""The service as a real uvicorn process over loopback, against a real MLflow registry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc.model import PythonModel
from prometheus_client.parser import text_string_to_metric_families
from tests.service_process import Service
from tests.serving.conftest import MODEL

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

FEATURE_NAMES = load_contract("churn").feature_names

pytestmark = pytest.mark.serving


def _records(rows: int, seed: int = 5) -> list[dict[str, Any]]:
    frame = plain_values(generate_churn(rows, seed).loc[:, list(FEATURE_NAMES)])
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture(scope="module")
def service(registry: str, start_service: Callable[..., Service]) -> Service:
    return start_service(registry, SERVING_MAX_BATCH_ROWS="200")


def test_health_ready_info_and_schema(service: Service, registry: str) -> None:
    with service.client() as http:
        assert http.get("/health").json() == {"status": "alive"}
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["stable"] == "1"
        info = http.get("/model/info").json()["stable"]
        version = MlflowClient(registry).get_model_version(MODEL, "1")
        assert info["version"] == "1" and info["loaded_by"] == "champion"
        assert info["run_id"] == version.run_id
        assert info["data_sha256"] == version.tags["mlops.data_sha256"]
        assert info["code_sha"] and info["trained_at"].endswith("Z")
        schema = http.get("/model/schema").json()
        assert schema["features"]["required"] == list(FEATURE_NAMES)
        assert schema["features"]["properties"]["contract_type"]["enum"] == [
            "month_to_month", "one_year", "two_year"
        ]  # fmt: skip
        assert {"/predict", "/predict/batch"} <= set(http.get("/openapi.json").json()["paths"])


def test_predictions_match_the_registered_model(service: Service, registry: str) -> None:
    records = _records(150)
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(
        plain_values(generate_churn(150, 5).loc[:, list(FEATURE_NAMES)])
    )
    with service.client() as http:
        batch = http.post("/predict/batch", json={"instances": records}).json()
        singles = [
            http.post("/predict", json={"features": record, "entity_id": f"C-{i}"}).json()
            for i, record in enumerate(records[:25])
        ]
    single = singles[0]
    assert batch["rows"] == 150 and batch["model_version"] == "1"
    np.testing.assert_allclose(batch["scores"], expected, rtol=1e-9)
    # One-row requests take LightGBM's single-row fast path: the same scores.
    np.testing.assert_allclose([s["score"] for s in singles], expected[:25], rtol=1e-9)
    assert (single["variant"], single["model_version"]) == ("stable", "1")
    assert single["request_id"]


def _bad(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**record, **changes}
    return {k: v for k, v in out.items() if v is not ...}


@pytest.mark.parametrize(
    ("mutate", "loc", "kind"),
    [
        (lambda r: _bad(r, tenure_months=...), "tenure_months", "missing"),
        (lambda r: _bad(r, monthly_charges="80.5"), "monthly_charges", "float_type"),
        (lambda r: _bad(r, tenure_months=True), "tenure_months", "integer_type"),
        (lambda r: _bad(r, tenure_months=3.5), "tenure_months", "integer_type"),
        (lambda r: _bad(r, contract_type="weekly"), "contract_type", "enum"),
        (lambda r: _bad(r, contract_type=3), "contract_type", "string_type"),
        (lambda r: _bad(r, shoe_size=42), "shoe_size", "extra_forbidden"),
    ],
)
def test_invalid_features_get_422_naming_the_field(
    service: Service, mutate: Callable[[dict[str, Any]], dict[str, Any]], loc: str, kind: str
) -> None:
    record = _records(3)[0]
    with service.client() as http:
        single = http.post("/predict", json={"features": mutate(record)})
        batch = http.post("/predict/batch", json={"instances": [record, record, mutate(record)]})
    assert single.status_code == 422
    assert {"loc": ["body", "features", loc], "type": kind} in [
        {"loc": e["loc"], "type": e["type"]} for e in single.json()["detail"]
    ]
    assert batch.status_code == 422
    assert ["body", "instances", 2, loc] in [e["loc"] for e in batch.json()["detail"]]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/predict", b"{not json", ["body"]),
        ("/predict", b"[1, 2]", ["body"]),
        ("/predict", b'{"features": [1, 2]}', ["body", "features"]),
        ("/predict", b'{"features": {}, "entity_id": 7}', ["body", "entity_id"]),
        ("/predict/batch", b'{"instances": []}', ["body", "instances"]),
        ("/predict/batch", b'{"instances": [{}], "entity_ids": []}', ["body", "entity_ids"]),
    ],
)
def test_malformed_bodies_get_422(service: Service, path: str, body: bytes, loc: list) -> None:
    with service.client() as http:
        response = http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("tenure_months", -1, "greater_than_equal"),
        ("tenure_months", 1e30, "less_than_equal"),
        ("support_calls_90d", 31, "less_than_equal"),
    ],
)
def test_values_beyond_the_contracts_limits_get_422_naming_the_field(
    service: Service, field: str, value: float, kind: str
) -> None:
    record = {**_records(3)[0], field: value}
    with service.client() as http:
        single = http.post("/predict", json={"features": record})
        batch = http.post("/predict/batch", json={"instances": [*_records(2), record]})
    assert single.status_code == 422
    assert [(e["loc"], e["type"]) for e in single.json()["detail"]] == [
        (["body", "features", field], kind)
    ]
    assert batch.status_code == 422
    assert [(e["loc"], e["type"]) for e in batch.json()["detail"]] == [
        (["body", "instances", 2, field], kind)
    ]


def _numeric_spec(registry: str, version: str) -> dict[str, dict[str, Any]]:
    """The numeric features of the version's logged feature spec, by name."""
    run_id = MlflowClient(registry).get_model_version(MODEL, version).run_id
    mlflow.set_tracking_uri(registry)
    spec = mlflow.artifacts.load_dict(f"runs:/{run_id}/feature_spec.json")
    return {f["name"]: f for f in spec["features"] if f["kind"] != "category"}


def test_values_outside_the_training_range_are_served_counted_and_flagged(
    registry: str, start_service: Callable[..., Service]
) -> None:
    service = start_service(registry)
    numeric = _numeric_spec(registry, "1")
    high, maximum = numeric["avg_monthly_gb"]["training_range"]["max"], 2_000.0
    assert numeric["avg_monthly_gb"]["maximum"] == maximum
    assert high < maximum  # possible, but above anything the model was trained on
    unusual = min(high + 1.0, maximum)
    records = _records(4)
    for record in records:  # inside the training range except where set below
        for name, feature in numeric.items():
            low, top = feature["training_range"]["min"], feature["training_range"]["max"]
            record[name] = type(record[name])(min(max(record[name], low), top))
    with service.client() as http:
        single = http.post(
            "/predict", json={"features": {**records[0], "avg_monthly_gb": unusual},
                              "entity_id": "R1"},
        )  # fmt: skip
        batch_rows = [records[1], {**records[2], "avg_monthly_gb": unusual}, records[3]]
        batch = http.post("/predict/batch", json={"instances": batch_rows})
        usual = http.post("/predict", json={"features": records[1], "entity_id": "R2"})
        metrics = _metrics(http)
        info = http.get("/model/info").json()["stable"]
    assert (single.status_code, batch.status_code, usual.status_code) == (200, 200, 200)
    counted = (("feature", "avg_monthly_gb"), ("variant", "stable"), ("version", "1"))
    assert metrics[("serving_out_of_range_total", counted)] == 2
    assert [k for k in metrics if k[0] == "serving_out_of_range_total"] == [
        ("serving_out_of_range_total", counted)
    ]
    assert info["input_checks"]["training_range"].startswith("values outside it are served")
    lines = _wait_for_log_lines(service.log_dir, 5)
    flags = {(line["entity_id"], line["row"]): line.get("out_of_range") for line in lines}
    assert flags == {
        ("R1", 0): ["avg_monthly_gb"],
        (None, 0): None,
        (None, 1): ["avg_monthly_gb"],
        (None, 2): None,
        ("R2", 0): None,
    }


def test_model_info_shows_the_aliases_as_they_are_now(service: Service, registry: str) -> None:
    client = MlflowClient(registry)
    alias = "serving-info-test"

    def stable_aliases() -> list[str]:
        with service.client() as http:
            return list(http.get("/model/info").json()["stable"]["aliases"])

    def wait_until(expected: list[str]) -> None:
        deadline = time.monotonic() + 30
        while stable_aliases() != expected:
            assert time.monotonic() < deadline, f"/model/info never showed {expected}"
            time.sleep(0.5)

    try:
        client.set_registered_model_alias(MODEL, alias, "1")
        wait_until(["champion", alias])
        client.set_registered_model_alias(MODEL, alias, "2")  # moved after the load
        wait_until(["champion"])
    finally:
        client.delete_registered_model_alias(MODEL, alias)


def test_oversized_batch_gets_413_with_the_limit(service: Service) -> None:
    with service.client() as http:
        response = http.post("/predict/batch", json={"instances": _records(201)})
    assert response.status_code == 413
    assert "limit of 200" in response.json()["detail"]


def test_admin_needs_the_bearer_token(service: Service) -> None:
    with service.client() as http:
        assert http.post("/admin/rollback").status_code == 401
    with service.client("wrong-token-wrong-token") as http:
        assert http.post("/admin/rollback").status_code == 403
    with service.admin() as http:
        assert http.post("/admin/rollback").status_code == 200


def test_canary_split_stickiness_promote_and_rollback(
    registry: str, start_service: Callable[..., Service]
) -> None:
    service = start_service(registry)
    record = _records(1)[0]
    with service.admin() as admin, service.client() as http:
        response = admin.post("/admin/canary", json={"ref": "challenger", "weight": 0.3})
        assert response.json() == {
            "stable": "1", "canary": "2", "canary_weight": 0.3, "shadow_share": 0.0
        }  # fmt: skip

        answers = [
            http.post("/predict", json={"features": record, "entity_id": f"E{i}"}).json()
            for i in range(1500)
        ]
        canary = [a for a in answers if a["variant"] == "canary"]
        assert {a["model_version"] for a in canary} == {"2"}
        assert 0.25 < len(canary) / len(answers) < 0.35
        for entity in ("E1", "E2", "E3", "E4"):
            first = next(a["variant"] for i, a in enumerate(answers) if f"E{i}" == entity)
            again = {
                http.post("/predict", json={"features": record, "entity_id": entity}).json()[
                    "variant"
                ]
                for _ in range(10)
            }
            assert again == {first}
        anonymous = [http.post("/predict", json={"features": record}).json() for _ in range(400)]
        assert 0.2 < sum(a["variant"] == "canary" for a in anonymous) / 400 < 0.4

        assert admin.post("/admin/promote").json() == {
            "stable": "2", "canary": None, "canary_weight": 0.0, "shadow_share": 0.0
        }  # fmt: skip
        versions = {http.post("/predict", json={"features": record}).json()["model_version"]
                    for _ in range(50)}  # fmt: skip
        assert versions == {"2"}

        admin.post("/admin/canary", json={"ref": "1", "weight": 1.0})
        assert http.post("/predict", json={"features": record}).json()["model_version"] == "1"
        assert admin.post("/admin/rollback").json()["canary"] is None
        assert http.post("/predict", json={"features": record}).json()["model_version"] == "2"
        assert admin.post("/admin/canary/weight", json={"weight": 0.5}).status_code == 409
        assert admin.post("/admin/canary/weight", json={"weight": 1.5}).status_code == 422


class _NotABooster(PythonModel):
    """A registered model the service cannot serve (no booster artifact)."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


def test_failed_reload_keeps_the_old_model_serving(
    registry: str, start_service: Callable[..., Service]
) -> None:
    client = MlflowClient(registry)
    mlflow.set_tracking_uri(registry)
    mlflow.set_experiment("serving-bogus")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=_NotABooster())
    bogus = mlflow.register_model(info.model_uri, MODEL).version
    client.set_registered_model_alias(MODEL, "serving-test-stable", "1")
    service = start_service(registry, SERVING_STABLE_ALIAS="serving-test-stable")
    record = _records(1)[0]
    try:
        client.set_registered_model_alias(MODEL, "serving-test-stable", str(bogus))
        with service.admin() as admin, service.client() as http:
            response = admin.post("/admin/reload", json={"variant": "stable"})
            assert response.status_code == 502
            assert "still serving the previous model" in response.json()["detail"]
            assert "no native booster" in response.json()["detail"]
            ready = http.get("/ready")
            assert ready.status_code == 200 and ready.json()["stable"] == "1"
            assert "no native booster" in ready.json()["last_errors"]["stable"]
            assert http.post("/predict", json={"features": record}).json()["model_version"] == "1"
            metrics = _metrics(http)
            assert metrics[("serving_model_load_failures_total", (("variant", "stable"),))] >= 1

            client.set_registered_model_alias(MODEL, "serving-test-stable", "2")
            reloaded = admin.post("/admin/reload", json={"variant": "stable"}).json()
            assert reloaded["stable"] == "2"
            assert http.get("/ready").json()["last_errors"] == {}
    finally:
        client.delete_registered_model_alias(MODEL, "serving-test-stable")


def test_unreachable_registry_is_not_ready_and_says_why(
    start_service: Callable[..., Service],
) -> None:
    from mlflow_server import free_port

    service = start_service(
        f"http://127.0.0.1:{free_port()}", wait_ready=False, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"
    )
    with service.client() as http:
        assert http.get("/health").status_code == 200
        deadline = time.monotonic() + 60
        while "stable" not in http.get("/ready").json()["last_errors"]:
            assert time.monotonic() < deadline, "no load error reported"
            time.sleep(0.5)
        ready = http.get("/ready")
        assert (
            ready.status_code == 503 and "cannot resolve" in ready.json()["last_errors"]["stable"]
        )
        response = http.post("/predict", json={"features": _records(1)[0]})
        assert response.status_code == 503 and "no model loaded" in response.json()["detail"]


@pytest.mark.parametrize("token", ["", "changeme", "short-token"])
def test_refuses_to_start_with_a_placeholder_token(
    registry: str, start_service: Callable[..., Service], token: str
) -> None:
    service = start_service(registry, SERVING_ADMIN_TOKEN=token)
    assert service.process.wait(timeout=60) != 0
    assert "SERVING_ADMIN_TOKEN" in service.output.read_text()


def _metrics(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def test_metrics_and_prediction_log(registry: str, start_service: Callable[..., Service]) -> None:
    service = start_service(registry)
    records = _records(20)
    with service.client() as http:
        for i, record in enumerate(records[:10]):
            assert http.post("/predict", json={"features": record, "entity_id": f"L{i}"}).is_success
        assert http.post("/predict/batch", json={"instances": records[10:]}).is_success
        assert http.post("/predict", json={"features": {}}).status_code == 422
        metrics = _metrics(http)
    ok = (("endpoint", "predict"), ("status", "200"), ("variant", "stable"), ("version", "1"))
    assert metrics[("serving_requests_total", ok)] == 10
    batch = (("endpoint", "batch"), ("status", "200"), ("variant", "stable"), ("version", "1"))
    assert metrics[("serving_requests_total", batch)] == 1
    rejected = (("endpoint", "predict"), ("status", "422"), ("variant", "stable"), ("version", "1"))
    assert metrics[("serving_requests_total", rejected)] == 1
    rows = (("variant", "stable"), ("version", "1"))
    assert metrics[("serving_predicted_rows_total", rows)] == 20
    assert metrics[("serving_prediction_score_count", rows)] == 20
    latency = (("endpoint", "predict"), ("variant", "stable"), ("version", "1"))
    assert metrics[("serving_request_latency_seconds_count", latency)] == 11
    assert metrics[("serving_canary_weight", ())] == 0.0
    assert metrics[("serving_model_info", (("run_id", _run_id(registry)), ("variant", "stable"),
                                           ("version", "1")))] == 1  # fmt: skip

    lines = _wait_for_log_lines(service.log_dir, 20)
    singles = [line for line in lines if line["entity_id"]]
    assert sorted(line["entity_id"] for line in singles) == sorted(f"L{i}" for i in range(10))
    for line in lines:
        assert set(line) == {"request_id", "row", "entity_id", "timestamp", "variant",
                             "model_version", "features", "score"}  # fmt: skip
        assert line["variant"] == "stable" and line["model_version"] == "1"
        assert set(line["features"]) == set(FEATURE_NAMES) and 0 < line["score"] < 1
    batch_rows = sorted(line["row"] for line in lines if not line["entity_id"])
    assert batch_rows == list(range(10))


def _run_id(registry: str) -> str:
    run_id = MlflowClient(registry).get_model_version(MODEL, "1").run_id
    assert run_id
    return run_id


def _wait_for_log_lines(directory: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        lines = [
            json.loads(line)
            for path in sorted(directory.glob("date=*/*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) == count
            return lines
        time.sleep(0.2)

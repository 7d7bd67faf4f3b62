"""The service answers each task from the model's feature spec, on real service processes:
a binary (breast cancer), a multiclass (wine) and a regression (diabetes) model trained here,
served from a bundle. Answers equal Booster.predict on the rows as training encodes them;
impossible values are 422s naming the field; nulls and unseen categories follow the contract;
metrics, the prediction log and the OpenAPI document follow the task."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.service_process import Service
from tests.serving import sklearn_models
from tests.serving.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.serving

Served = tuple[sklearn_models.Bundle, Service]


@pytest.fixture(scope="module", params=list(sklearn_models.TASKS))
def served(
    request: pytest.FixtureRequest,
    mlflow_server: str,
    service_starter: Callable[..., Service],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp(request.param)
    store = directory / "store"
    store.mkdir()
    bundle = sklearn_models.build(request.param, store, directory)
    service = service_starter(
        mlflow_server,
        model_name=request.param,
        admin_token=ADMIN_TOKEN,
        SERVING_MODEL_STORE=str(store),
        SERVING_STABLE_ALIAS="bundle:current",
    )
    assert service.process.poll() is None, service.output.read_text()[-3000:]
    yield bundle, service


def test_answers_equal_the_booster_in_the_tasks_shape(served: Served) -> None:
    bundle, service = served
    records = bundle.records(40, start=3)
    expected = bundle.expected(records)
    with service.client() as http:
        singles = [http.post("/predict", json={"features": r}).json() for r in records]
        batch = http.post("/predict/batch", json={"instances": records}).json()
    task = bundle.contract.task
    assert batch["rows"] == len(records)
    if task == "binary":
        assert np.allclose([a["score"] for a in singles], expected, rtol=1e-12)
        assert np.allclose(batch["scores"], expected, rtol=1e-12)
        assert all("class" not in a and "value" not in a for a in singles)
    elif task == "regression":
        assert np.allclose([a["value"] for a in singles], expected, rtol=1e-12)
        assert [a["score"] for a in singles] == [a["value"] for a in singles]
        assert np.allclose(batch["values"], expected, rtol=1e-12)
        assert batch["scores"] == batch["values"]
    else:
        labels = list(bundle.contract.class_labels)
        for answer, row in zip(singles, expected, strict=True):
            assert list(answer["probabilities"]) == labels  # the contract's class order
            assert np.allclose(list(answer["probabilities"].values()), row, rtol=1e-12)
            assert math.isclose(sum(answer["probabilities"].values()), 1.0, rel_tol=1e-9)
            assert answer["class"] == labels[int(np.argmax(row))]
            assert answer["score"] == answer["probabilities"][answer["class"]]
        assert np.allclose(batch["probabilities"], expected, rtol=1e-12)
        assert batch["classes"] == [a["class"] for a in singles]
        assert batch["scores"] == [a["score"] for a in singles]
        truth = bundle.frame["target"].iloc[3:43].tolist()
        assert np.mean([a["class"] == t for a, t in zip(singles, truth, strict=True)]) > 0.8


@pytest.mark.parametrize("where", ["one", "batch"])
def test_an_impossible_value_is_a_422_naming_the_field(served: Served, where: str) -> None:
    bundle, service = served
    field = bundle.contract.numeric_features[0]
    record = {**bundle.records(1)[0], field: -5.0}  # below every numeric hard limit here
    loc: list[str | int]
    with service.client() as http:
        if where == "one":
            response = http.post("/predict", json={"features": record})
            loc = ["body", "features", field]
        else:
            good = bundle.records(2)
            response = http.post("/predict/batch", json={"instances": [*good, record]})
            loc = ["body", "instances", 2, field]
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [
        (loc, "greater_than_equal")
    ]


def test_a_null_is_a_422_unless_the_feature_is_nullable(served: Served) -> None:
    bundle, service = served
    record = bundle.records(1)[0]
    nullable = [f.name for f in bundle.contract.features if f.nullable]
    strict = [f.name for f in bundle.contract.features if not f.nullable]
    with service.client() as http:
        refused = http.post("/predict", json={"features": {**record, strict[0]: None}})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "features", strict[0]]
        for name in nullable:  # diabetes: bmi
            missing = {**record, name: None}
            answer = http.post("/predict", json={"features": missing})
            assert answer.status_code == 200
            assert np.isclose(answer.json()["score"], bundle.expected([missing])[0], rtol=1e-12)


def test_unseen_categories_are_missing_or_refused_as_the_contract_says(served: Served) -> None:
    bundle, service = served
    categories = [f for f in bundle.contract.features if f.is_category]
    if not categories:
        pytest.skip(f"{bundle.name} has no category feature")
    (sex,) = categories
    assert sex.unseen == "missing"
    record = bundle.records(1)[0]
    with service.client() as http:
        unseen = http.post("/predict", json={"features": {**record, sex.name: "x"}}).json()
        as_missing = bundle.expected([{**record, sex.name: None}])[0]
        assert np.isclose(unseen["value"], as_missing, rtol=1e-12)
        wrong_type = http.post("/predict", json={"features": {**record, sex.name: 1}})
        assert wrong_type.status_code == 422


def test_booleans_take_only_true_or_false(served: Served) -> None:
    bundle, service = served
    if "large" not in bundle.contract.feature_names:
        pytest.skip(f"{bundle.name} has no boolean feature")
    record = bundle.records(1)[0]
    with service.client() as http:
        flipped = {**record, "large": not record["large"]}
        answer = http.post("/predict", json={"features": flipped}).json()
        assert np.isclose(answer["score"], bundle.expected([flipped])[0], rtol=1e-12)
        refused = http.post("/predict", json={"features": {**record, "large": 1}})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["type"] == "bool_type"


def _classes_counted(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("serving_predicted_class_total{")
    )


def test_metrics_log_and_document_follow_the_task(served: Served) -> None:
    bundle, service = served
    records = bundle.records(5, start=50)
    with service.client() as http:
        before = _classes_counted(http.get("/metrics").text)
        for record in records:
            assert http.post("/predict", json={"features": record}).status_code == 200
        metrics = http.get("/metrics").text
        document = http.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert set(schemas["Features"]["required"]) == set(bundle.contract.feature_names)
    task = bundle.contract.task
    counted = _classes_counted(metrics) - before
    assert counted == (len(records) if task == "multiclass" else 0)
    if task == "multiclass":
        labels = ["class_0", "class_1", "class_2"]
        assert schemas["Prediction"]["properties"]["class"]["enum"] == labels
    if task == "regression":
        first = bundle.spec["score_buckets"][0]
        assert f'serving_prediction_score_bucket{{le="{first!r}"' in metrics
        assert "value" in schemas["Prediction"]["required"]
        assert schemas["Features"]["properties"]["bmi"]["type"] == ["number", "null"]
    deadline = time.monotonic() + 20
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(lines) < len(records):
        lines = [json.loads(line) for path in Path(service.log_dir).rglob("*.jsonl")
                 for line in path.read_text().splitlines()]  # fmt: skip
        time.sleep(0.3)
    assert len(lines) >= len(records)
    assert all(("class" in line) == (task == "multiclass") for line in lines)


def test_expected_range_values_are_served_and_flagged(served: Served) -> None:
    bundle, service = served
    if bundle.name != "wine":
        pytest.skip("wine declares an expected range")
    record = {**bundle.records(1)[0], "alcohol": 16.0}  # beyond the expected 14.5, possible
    with service.client() as http:
        assert http.post("/predict", json={"features": record}).status_code == 200
        metrics = http.get("/metrics").text
        checks = http.get("/model/info").json()["stable"]["input_checks"]
    assert 'serving_out_of_range_total{feature="alcohol"' in metrics
    assert "declared for alcohol" in checks["expected_range"]

"""The model as the service loads it: request encoding and LightGBM's single-row fast path,
in-process against a version registered in the real MLflow server."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient
from tests.serving.conftest import MODEL

from mlops_serving import model as served
from mlops_serving.codec import InvalidInput
from mlops_serving.model import LoadedModel, load_model
from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

FEATURE_NAMES = load_contract("churn").feature_names


def _records(rows: int) -> list[dict[str, object]]:
    frame = plain_values(generate_churn(rows, seed=11).loc[:, list(FEATURE_NAMES)])
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in frame.to_dict("records")]  # fmt: skip


@pytest.fixture(scope="module")
def loaded(registry: str) -> LoadedModel:
    return load_model(MlflowClient(registry), MODEL, "1")


def test_the_single_row_fast_path_scores_exactly_like_the_booster(loaded: LoadedModel) -> None:
    assert loaded.single_row is not None
    records = _records(300)
    batch = loaded.predict(loaded.codec.encode_many(records, ["instances"])[0])
    singles = [loaded.predict_one(loaded.codec.encode_one(r, ["features"])[0]) for r in records]
    assert np.array_equal(batch, np.asarray(singles))


def test_without_the_fast_path_single_rows_still_score(
    registry: str, loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*_: object) -> None:
        raise AttributeError("no LGBM_BoosterPredictForMatSingleRowFastInit")

    monkeypatch.setattr(served, "SingleRowPredictor", unavailable)
    slow = load_model(MlflowClient(registry), MODEL, "1")
    assert slow.single_row is None
    record = _records(1)[0]
    values, _ = slow.codec.encode_one(record, ["features"])
    assert slow.predict_one(values) == loaded.predict_one(values)


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("tenure_months", True, "integer_type"),
        ("tenure_months", 2.5, "integer_type"),
        ("tenure_months", "12", "integer_type"),
        ("monthly_charges", None, "float_type"),
        ("monthly_charges", [1.0], "float_type"),
        ("contract_type", 1, "string_type"),
        ("contract_type", ["month-to-month"], "string_type"),
        ("contract_type", "fortnightly", "enum"),
    ],
)
def test_one_and_many_reject_the_same_values_naming_the_field(
    loaded: LoadedModel, field: str, value: object, kind: str
) -> None:
    record = {**_records(1)[0], field: value}
    with pytest.raises(InvalidInput) as one:
        loaded.codec.encode_one(record, ["features"])
    assert [(e["loc"], e["type"]) for e in one.value.errors] == [(["features", field], kind)]
    with pytest.raises(InvalidInput) as many:
        loaded.codec.encode_many([_records(1)[0], record], ["instances"])
    assert [(e["loc"], e["type"]) for e in many.value.errors] == [(["instances", 1, field], kind)]


def test_whole_floats_are_integers(loaded: LoadedModel) -> None:
    record = {**_records(1)[0], "tenure_months": 12.0, "monthly_charges": 80.0}
    values, _ = loaded.codec.encode_one(record, ["features"])
    matrix, _ = loaded.codec.encode_many([record], ["instances"])
    assert values == matrix[0].tolist()
    assert values[loaded.codec.names.index("tenure_months")] == 12.0


def test_the_registered_model_carries_the_contract_limits_and_its_training_range(
    loaded: LoadedModel,
) -> None:
    fields = {f.name: f for f in loaded.codec.fields}
    tenure = fields["tenure_months"]
    assert (tenure.minimum, tenure.maximum) == (0.0, 72.0)
    assert tenure.training_range is not None
    assert 0.0 <= tenure.training_range[0] <= tenure.training_range[1] <= 72.0
    assert fields["contract_type"].training_range is None
    assert loaded.codec.checks_training_range
    assert loaded.info()["input_checks"]["training_range"].startswith("values outside it")

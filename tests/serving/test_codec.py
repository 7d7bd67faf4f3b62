"""Request encoding against the data contract: impossible values are 422 naming the field,
values outside the training range are encoded and flagged, and a model without a recorded
training range gets only the contract's limits. In-process, from the contract's own spec and
training ranges observed on generated data (no server)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlops_serving.codec import FeatureCodec, InvalidInput
from mlops_serving.spec import feature_codec
from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

CHURN = load_contract("churn")
FEATURE_NAMES, feature_spec, training_ranges = (
    CHURN.feature_names,
    CHURN.feature_spec,
    CHURN.training_ranges,
)

TRAINING = plain_values(generate_churn(2_000, seed=3))
RANGES = training_ranges(TRAINING)


def _records(rows: int, seed: int = 4) -> list[dict[str, Any]]:
    frame = plain_values(generate_churn(rows, seed).loc[:, list(FEATURE_NAMES)])
    records = frame.to_dict("records")
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]


def _codec(spec: dict[str, Any]) -> FeatureCodec:
    return feature_codec(spec, [])


def _within_training_range(rows: int) -> list[dict[str, Any]]:
    """Generated rows, clipped into the observed training range."""
    out = []
    for record in _records(rows):
        for name, (low, high) in RANGES.items():
            record[name] = type(record[name])(min(max(record[name], low), high))
        out.append(record)
    return out


def test_the_spec_records_the_training_range_of_numeric_features_only() -> None:
    spec = {f["name"]: f for f in feature_spec(RANGES)["features"]}
    assert spec["tenure_months"]["training_range"] == {
        "min": float(TRAINING["tenure_months"].min()),
        "max": float(TRAINING["tenure_months"].max()),
    }
    assert "training_range" not in spec["contract_type"]
    assert all("training_range" not in f for f in feature_spec()["features"])


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("tenure_months", -1, "greater_than_equal"),
        ("tenure_months", 1e30, "less_than_equal"),
        ("monthly_charges", 1e26, "less_than_equal"),
        ("support_calls_90d", 31, "less_than_equal"),
        ("avg_monthly_gb", -0.5, "greater_than_equal"),
    ],
)
@pytest.mark.parametrize("with_training_range", [True, False])
def test_values_beyond_the_contracts_limits_are_rejected_naming_the_field(
    field: str, value: float, kind: str, with_training_range: bool
) -> None:
    codec = _codec(feature_spec(RANGES if with_training_range else None))
    record = {**_records(1)[0], field: value}
    with pytest.raises(InvalidInput) as one:
        codec.encode_one(record, ["features"])
    assert [(e["loc"], e["type"]) for e in one.value.errors] == [(["features", field], kind)]
    with pytest.raises(InvalidInput) as many:
        codec.encode_many([*_records(3), record], ["instances"])
    assert [(e["loc"], e["type"]) for e in many.value.errors] == [(["instances", 3, field], kind)]


def test_values_outside_the_training_range_are_encoded_and_flagged() -> None:
    codec = _codec(feature_spec(RANGES))
    assert codec.checks_training_range
    spec = {f["name"]: f for f in feature_spec()["features"]}
    gb_high, calls_high = RANGES["avg_monthly_gb"][1], RANGES["support_calls_90d"][1]
    assert gb_high < spec["avg_monthly_gb"]["maximum"]  # room between training and contract
    assert calls_high < spec["support_calls_90d"]["maximum"]
    usual = _within_training_range(4)
    unusual = {**usual[1], "avg_monthly_gb": gb_high + 1.0, "support_calls_90d": calls_high + 1}
    values, flagged = codec.encode_one(unusual, ["features"])
    assert flagged == ("support_calls_90d", "avg_monthly_gb")  # in the model's field order
    assert values[codec.names.index("avg_monthly_gb")] == gb_high + 1.0
    assert codec.encode_one(usual[0], ["features"])[1] == ()

    batch = [usual[0], unusual, usual[2], {**usual[3], "avg_monthly_gb": gb_high + 2.0}]
    matrix, rows = codec.encode_many(batch, ["instances"])
    assert rows == {1: ["support_calls_90d", "avg_monthly_gb"], 3: ["avg_monthly_gb"]}
    assert matrix[1].tolist() == values
    assert codec.encode_many(usual, ["instances"])[1] == {}


def test_one_and_many_encode_alike_inside_and_outside_the_training_range() -> None:
    codec = _codec(feature_spec(RANGES))
    records = _records(500, seed=9)  # some outside the 2,000 training rows' range, most not
    matrix, rows = codec.encode_many(records, ["instances"])
    singles = [codec.encode_one(r, ["features"]) for r in records]
    assert np.array_equal(matrix, np.asarray([values for values, _ in singles]))
    assert rows == {i: list(flagged) for i, (_, flagged) in enumerate(singles) if flagged}


def test_a_model_without_a_training_range_flags_nothing() -> None:
    codec = _codec(feature_spec())
    assert not codec.checks_training_range
    record = {**_records(1)[0], "tenure_months": 72, "avg_monthly_gb": 2_000.0}  # the limits
    assert codec.encode_one(record, ["features"])[1] == ()
    assert codec.encode_many([record, record], ["instances"])[1] == {}


def test_the_schema_shows_the_contracts_limits() -> None:
    schema = _codec(feature_spec(RANGES)).json_schema()["properties"]
    assert schema["tenure_months"] == {"type": "integer", "minimum": 0.0, "maximum": 72.0}
    assert schema["contract_type"]["type"] == "string"

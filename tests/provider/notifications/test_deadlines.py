"""The Param-driven deadline reference: what a run's conf does to it, and that it survives
Airflow's own serialization (which finds it through plugins/mlops_alerts_plugin.py).
A real scheduler evaluating it is in tests/e2e/test_alerts_live.py."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from mlops_provider.notifications.callbacks import DEADLINE_MISSED_PATH
from mlops_provider.notifications.deadlines import QueuedAtPlusParam, param_deadline


@pytest.mark.parametrize(
    ("conf", "minutes"),
    [
        ({}, 120.0),
        (None, 120.0),
        ({"deadline_minutes": 30}, 30.0),
        ({"deadline_minutes": "7.5"}, 7.5),
        ({"deadline_minutes": ""}, 120.0),
        ({"other": 5}, 120.0),
    ],
)
def test_run_conf_overrides_the_default(conf: Any, minutes: float) -> None:
    assert QueuedAtPlusParam("deadline_minutes", 120).minutes(conf) == minutes


@pytest.mark.parametrize("bad", [0, -5, "soon", [1]])
def test_a_malformed_value_falls_back_to_the_default(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert QueuedAtPlusParam("deadline_minutes", 120).minutes({"deadline_minutes": bad}) == 120
    assert "is not a positive number of minutes; the deadline uses the default 120" in caplog.text


def test_default_must_be_positive() -> None:
    with pytest.raises(ValueError, match="default_minutes of Param 'x' must be > 0"):
        QueuedAtPlusParam("x", 0)


def test_round_trip_through_airflow_serialization() -> None:
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.definitions.deadline import SerializedReferenceModels
    from airflow.serialization.encoders import encode_deadline_alert

    alert = param_deadline("training_overdue", "deadline_minutes", 90, "why and what to do")
    encoded = encode_deadline_alert(alert)
    assert encoded["reference"] == {
        "reference_type": "QueuedAtPlusParam",
        "param": "deadline_minutes",
        "default_minutes": 90.0,
        "__class_path": "mlops_provider.notifications.deadlines.QueuedAtPlusParam",
    }
    decoded = decode_deadline_alert(encoded)
    assert isinstance(decoded.reference, SerializedReferenceModels.SerializedCustomReference)
    inner = decoded.reference.inner_ref
    assert isinstance(inner, QueuedAtPlusParam)
    assert (inner.param, inner.default_minutes) == ("deadline_minutes", 90.0)
    assert decoded.interval == timedelta(0)
    assert decoded.callback.path == DEADLINE_MISSED_PATH
    assert decoded.callback.kwargs == {
        "deadline": "training_overdue",
        "message": "why and what to do",
    }
    assert isinstance(decoded.reference, SerializedReferenceModels.TYPES.DAGRUN)

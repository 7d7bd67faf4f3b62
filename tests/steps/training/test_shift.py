"""validate compares the new partition with the champion's training partition: a label-rate shift
beyond the bound fails it (unless the run accepts the shift), feature drift is only recorded, no
champion is recorded as such, and an unreadable champion partition fails closed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlops_steps.common.storage import Partition
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.policies import SourceRequest, ValidationPolicy
from mlops_steps.core.settings import load_settings
from mlops_steps.training.ingest import run_ingest
from mlops_steps.training.register import version_tags
from mlops_steps.training.shift import (
    ChampionDataUnreadable,
    LabelShiftRefused,
    compare_frames,
    shift_tags,
)
from mlops_steps.training.validate import run_validate
from tests.fixtures.champion import stand_in_champion

ROWS = 4_000
CHURN = load_contract("churn")


def _flipped(seed: int) -> pd.DataFrame:
    frame = generate_churn(ROWS, seed=seed)
    frame["churn"] = 1 - frame["churn"]
    return frame


def test_flipped_labels_exceed_the_bound_and_features_do_not_drift() -> None:
    reference = generate_churn(ROWS, seed=1)
    shift = compare_frames(reference, _flipped(3), ValidationPolicy(), CHURN)
    label = shift["label"]
    assert label["champion_rate"] == pytest.approx(reference["churn"].mean())
    assert label["new_rate"] == pytest.approx(1 - generate_churn(ROWS, seed=3)["churn"].mean())
    assert 0.28 < label["champion_rate"] < 0.32 and 0.68 < label["new_rate"] < 0.72
    assert (label["exceeded"], label["accepted"], label["max_shift"]) == (True, False, 0.15)
    assert label["test"]["drifted"] is True  # Evidently's own test on the label agrees
    assert shift["features"]["drifted_columns"] == []  # only the labels moved
    accepted = compare_frames(reference, _flipped(3), ValidationPolicy(accept_shift=True), CHURN)
    assert accepted["label"]["accepted"] is True


def test_feature_drift_is_measured_with_monitorings_tests() -> None:
    reference = generate_churn(ROWS, seed=1)
    shift = compare_frames(
        reference, generate_churn(ROWS, seed=2, drift=0.3), ValidationPolicy(), CHURN
    )
    assert shift["label"]["exceeded"] is False
    drifted = shift["features"]["drifted_columns"]
    assert drifted and set(drifted) <= {c["column"] for c in shift["features"]["columns"]}
    assert len(shift["features"]["columns"]) == 16


# --- against a real MLflow server: the champion found through its alias and tags -------------


def _ingest(tmp_path: Path, key: str, frame: pd.DataFrame) -> Partition:
    source = tmp_path / f"{key}.parquet"
    frame.to_parquet(source, index=False)
    run_ingest(load_settings(), key, SourceRequest(str(source), rows=1, seed=0))
    return Partition.of(load_settings().dataset_root, key)


def test_a_label_shift_fails_validate_unless_the_run_accepts_it(
    tracking: str, tmp_path: Path
) -> None:
    champion_data = _ingest(tmp_path, "champion-data", generate_churn(ROWS, seed=1))
    version = stand_in_champion(tracking, champion_data)
    flipped = _ingest(tmp_path, "flipped", _flipped(3))
    settings = load_settings()

    with pytest.raises(LabelShiftRefused) as info:
        run_validate(settings, "flipped", ValidationPolicy())
    message = str(info.value)
    rates = json.loads((flipped.validation_dir / "shift.json").read_text())["label"]
    assert (
        f"from {rates['champion_rate']:.4f} (champion v{version}, partition champion-data)"
        in message
    )
    assert f"to {rates['new_rate']:.4f}" in message and "max_label_shift 0.1500" in message
    assert "accept_shift=true" in message
    result = json.loads(flipped.result("validate").read_text())
    assert result["success"] is False and result["shift"]["refused"] is True
    assert "over the bound" in result["shift"]["summary"]
    assert (flipped.validation_dir / "shift.html").is_file()

    accepted = run_validate(settings, "flipped", ValidationPolicy(accept_shift=True))
    shift = accepted["shift"]
    assert accepted["success"] is True and shift["refused"] is False
    assert shift["label"]["accepted"] is True and "accepted by the run" in shift["summary"]
    tags = shift_tags(shift)
    assert tags["mlops.shift.accepted"] == "true"
    assert tags["mlops.shift.compared_to"] == version
    assert tags["mlops.shift.label_shift"] == f"{rates['shift']:.6f}"
    assert tags["mlops.shift.drifted_features"] == "none"


def test_feature_drift_alone_passes_and_is_recorded(tracking: str, tmp_path: Path) -> None:
    stand_in_champion(tracking, _ingest(tmp_path, "champion-data", generate_churn(ROWS, seed=1)))
    _ingest(tmp_path, "drifted", generate_churn(ROWS, seed=2, drift=0.3))
    summary = run_validate(load_settings(), "drifted", ValidationPolicy())
    shift = summary["shift"]
    assert summary["success"] is True and shift["status"] == "compared"
    drifted = shift["features"]["drifted_columns"]
    assert drifted and f"features drifted: {', '.join(drifted)}" in shift["summary"]
    assert shift_tags(shift)["mlops.shift.drifted_features"] == ",".join(drifted)


def test_an_unreadable_champion_partition_fails_closed(tracking: str, tmp_path: Path) -> None:
    champion_data = _ingest(tmp_path, "champion-data", generate_churn(ROWS, seed=1))
    stand_in_champion(tracking, champion_data)
    new = _ingest(tmp_path, "new", generate_churn(ROWS, seed=2))
    shutil.rmtree(champion_data.root)
    with pytest.raises(ChampionDataUnreadable) as info:
        run_validate(load_settings(), "new", ValidationPolicy())
    assert "its training partition champion-data is not at" in str(info.value)
    assert "restore the champion's partition" in str(info.value)
    result = json.loads(new.result("validate").read_text())
    assert result["success"] is False and result["shift"]["status"] == "not_compared"


def test_version_tags_record_the_shift() -> None:
    gate = {
        "decision": "passed",
        "reason": "ok",
        "checks": [],
        "data_sha256": "x",
        "partition": "p",
    }
    evaluation = {"challenger": {"auc": 0.9, "accuracy": 0.8, "latency_p95_ms": 1.0}}
    tags = version_tags(gate, evaluation, {"shift": None})
    assert tags["mlops.shift.status"] == "not_checked"

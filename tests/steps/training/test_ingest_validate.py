"""ingest writes a checksummed, idempotent partition; validate fails closed and names what broke."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_steps.common.storage import Partition, load_partition_frame, sha256_file
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.errors import StepError, ValidationFailed
from mlops_steps.core.policies import SourceRequest, ValidationPolicy
from mlops_steps.core.settings import load_settings
from mlops_steps.training.ingest import run_ingest
from mlops_steps.training.validate import (
    ExpectationsNotEvaluated,
    build_expectations,
    run_validate,
)

KEY = "20261116T000000"


def _ingest_frame(tmp_path: Path, frame: pd.DataFrame, key: str = KEY) -> Partition:
    source = tmp_path / f"src-{key}.parquet"
    frame.to_parquet(source, index=False)
    run_ingest(load_settings(), key, SourceRequest(str(source), rows=1, seed=0))
    return Partition.of(load_settings().dataset_root, key)


def test_ingest_writes_partition_manifest_and_checksums(mlops_env: Path) -> None:
    result = run_ingest(load_settings(), KEY, SourceRequest("synthetic://churn", 3_000, 9))
    partition = Partition.of(load_settings().dataset_root, KEY)
    assert partition.root == mlops_env / "data" / "churn" / f"partition={KEY}"
    manifest = json.loads(partition.manifest.read_text())
    assert manifest["file_sha256"] == sha256_file(partition.data)
    assert manifest["summary"]["rows"] == 3_000
    assert result["unchanged"] is False
    frame, _ = load_partition_frame(partition)
    pd.testing.assert_frame_equal(frame, generate_churn(3_000, 9))


def test_reingesting_the_same_data_changes_nothing(mlops_env: Path) -> None:
    settings, request = load_settings(), SourceRequest("synthetic://churn", 2_000, 9)
    first = run_ingest(settings, KEY, request)
    partition = Partition.of(settings.dataset_root, KEY)
    mtime = partition.data.stat().st_mtime_ns
    second = run_ingest(settings, KEY, request)
    assert second["unchanged"] is True
    assert second["data_sha256"] == first["data_sha256"]
    assert partition.data.stat().st_mtime_ns == mtime
    third = run_ingest(settings, KEY, SourceRequest("synthetic://churn", 2_000, 10))
    assert third["unchanged"] is False and third["data_sha256"] != first["data_sha256"]


def test_tampered_partition_is_refused(mlops_env: Path) -> None:
    run_ingest(load_settings(), KEY, SourceRequest("synthetic://churn", 2_000, 9))
    partition = Partition.of(load_settings().dataset_root, KEY)
    generate_churn(2_000, 99).to_parquet(partition.data, index=False)
    with pytest.raises(StepError, match="checksum mismatch"):
        load_partition_frame(partition)


@pytest.mark.parametrize("key", ["", "../etc", "a/b", "x" * 200])
def test_bad_partition_keys(mlops_env: Path, key: str) -> None:
    with pytest.raises(StepError, match="--partition"):
        run_ingest(load_settings(), key, SourceRequest("synthetic://churn", 1_000, 1))


@pytest.fixture
def no_champion(mlops_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry (MLflow on a local SQLite file) where no model has a champion yet."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlops_env.parent / 'registry.db'}")


def test_valid_partition_passes_and_writes_data_docs(mlops_env: Path, no_champion: None) -> None:
    settings = load_settings()
    run_ingest(settings, KEY, SourceRequest("synthetic://churn", 2_000, 9))
    summary = run_validate(settings, KEY, ValidationPolicy(min_rows=1_000))
    assert summary["success"] is True
    assert summary["failed_expectations"] == []
    assert summary["evaluated_expectations"] >= 50
    index = Path(summary["data_docs_index"])
    assert index.is_file() and "churn_contract" in index.read_text()
    partition = Partition.of(settings.dataset_root, KEY)
    assert json.loads(partition.result("validate").read_text())["success"] is True
    assert (partition.validation_dir / "gx_result.json").is_file()
    assert summary["evaluated_expectations"] == summary["built_expectations"]
    # No champion: nothing to compare, recorded as such (not a failure).
    assert summary["shift"]["status"] == "no_champion"
    report = json.loads((partition.validation_dir / "shift.json").read_text())
    assert report["summary"] == "no champion yet: nothing to compare"
    assert (partition.validation_dir / "shift.html").is_file()


def test_a_dropped_expectation_fails_validation(
    mlops_env: Path, no_champion: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Success alone is not enough: every expectation built must have been evaluated. GX's suite
    skips an expectation it cannot take (it logs and goes on); here it skips the row count."""
    import great_expectations as gx
    from great_expectations.exceptions import InvalidExpectationConfigurationError

    take = gx.ExpectationSuite._process_expectation

    def skip_the_row_count(suite: Any, expectation: Any) -> Any:
        if type(expectation).__name__ == "ExpectTableRowCountToBeBetween":
            raise InvalidExpectationConfigurationError("dropped, as a buggy upgrade might")
        return take(suite, expectation)

    monkeypatch.setattr(gx.ExpectationSuite, "_process_expectation", skip_the_row_count)
    settings = load_settings()
    run_ingest(settings, KEY, SourceRequest("synthetic://churn", 2_000, 9))
    with pytest.raises(ExpectationsNotEvaluated) as info:
        run_validate(settings, KEY, ValidationPolicy(min_rows=1_000))
    built = len(build_expectations(load_contract("churn"), 1_000))
    assert f"built with {built} expectations but {built - 1} were evaluated" in str(info.value)
    assert "missing expect_table_row_count_to_be_between" in str(info.value)
    summary = json.loads(Partition.of(settings.dataset_root, KEY).result("validate").read_text())
    assert summary["success"] is False
    assert (summary["built_expectations"], summary["evaluated_expectations"]) == (built, built - 1)


def _corrupt(kind: str) -> tuple[pd.DataFrame, str]:
    frame = generate_churn(2_000, 5)
    if kind == "missing_column":
        return frame.drop(columns=["tenure_months"]), "expect_table_columns_to_match_set"
    if kind == "wrong_dtype":
        frame["monthly_charges"] = frame["monthly_charges"].astype(str)
        return frame, "expect_column_values_to_be_in_type_list(monthly_charges)"
    if kind == "out_of_range":
        frame.loc[:9, "tenure_months"] = -5
        return frame, "expect_column_values_to_be_between(tenure_months): 10 unexpected"
    if kind == "unknown_category":
        frame["contract_type"] = frame["contract_type"].astype(object)  # a category: as text
        frame.loc[:2, "contract_type"] = "weekly"
        return frame, "expect_column_values_to_be_in_set(contract_type): 3 unexpected"
    if kind == "nulls":
        frame["total_charges"] = frame["total_charges"].astype(float)
        frame.loc[:4, "total_charges"] = np.nan
        return frame, "expect_column_values_to_not_be_null(total_charges)"
    if kind == "duplicate_ids":
        frame.loc[1, "customer_id"] = frame.loc[0, "customer_id"]
        return frame, "expect_column_values_to_be_unique(customer_id)"
    if kind == "empty":
        return frame.head(0), "expect_table_row_count_to_be_between"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing_column",
        "wrong_dtype",
        "out_of_range",
        "unknown_category",
        "nulls",
        "duplicate_ids",
        "empty",
    ],
)
def test_bad_data_fails_validation_naming_the_expectation(
    mlops_env: Path, tmp_path: Path, kind: str
) -> None:
    frame, expected = _corrupt(kind)
    _ingest_frame(tmp_path, frame)
    with pytest.raises(ValidationFailed) as info:
        run_validate(load_settings(), KEY, ValidationPolicy(min_rows=1_000))
    assert expected in str(info.value)
    assert "Data Docs" in str(info.value)
    summary = json.loads(
        Partition.of(load_settings().dataset_root, KEY).result("validate").read_text()
    )
    assert summary["success"] is False and summary["failed_expectations"]


def test_validate_without_ingest_says_which_step_to_run(mlops_env: Path) -> None:
    with pytest.raises(StepError, match="run the 'ingest' step"):
        run_validate(load_settings(), KEY, ValidationPolicy(min_rows=1))

"""What validate records of a partition: GX's result file and Data Docs built from the vectorised
checks (the unexpected values and their rows named as GX names them), the failure messages, one
result per built expectation, and the same decisions whatever dtypes the partition stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_steps.common.storage import Partition
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.errors import ValidationFailed
from mlops_steps.core.policies import SourceRequest, ValidationPolicy
from mlops_steps.core.settings import load_settings
from mlops_steps.training.ingest import run_ingest
from mlops_steps.training.validate import run_validate

KEY = "20261201T000000"


@pytest.fixture
def no_champion(mlops_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlops_env.parent / 'registry.db'}")


def _ingest(tmp_path: Path, frame: pd.DataFrame, key: str = KEY) -> Partition:
    source = tmp_path / f"src-{key}.parquet"
    frame.to_parquet(source, index=False)
    run_ingest(load_settings(), key, SourceRequest(str(source), rows=1, seed=0))
    return Partition.of(load_settings().dataset_root, key)


def _by_name(gx_result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for result in gx_result["results"]:
        config = result["expectation_config"]
        out[f"{config['type']}({config['kwargs'].get('column', '')})"] = result
    return out


def test_a_failed_partition_records_what_gx_records(
    mlops_env: Path, no_champion: None, tmp_path: Path
) -> None:
    frame = generate_churn(1_500, seed=3)
    frame["contract_type"] = frame["contract_type"].astype(object)
    frame.loc[[4, 700], "contract_type"] = "weekly"
    frame.loc[[9], "tenure_months"] = 400
    partition = _ingest(tmp_path, frame)
    with pytest.raises(ValidationFailed) as info:
        run_validate(load_settings(), KEY, ValidationPolicy(min_rows=1_000))
    message = str(info.value)
    assert (
        "expect_column_values_to_be_in_set(contract_type): 2 unexpected values, "
        "e.g. ['weekly', 'weekly']" in message
    )
    assert "expect_column_values_to_be_between(tenure_months): 1 unexpected values, e.g. [400]" in (
        message
    )

    gx_result = json.loads((partition.validation_dir / "gx_result.json").read_text())
    assert gx_result["statistics"]["unsuccessful_expectations"] == 2
    assert gx_result["meta"]["batch_markers"]["data_sha256"]
    in_set = _by_name(gx_result)["expect_column_values_to_be_in_set(contract_type)"]
    assert in_set["success"] is False
    assert in_set["result"] == {
        "element_count": 1_500,
        "unexpected_count": 2,
        "unexpected_percent": 2 / 1_500 * 100,
        "partial_unexpected_list": ["weekly", "weekly"],
        "missing_count": 0,
        "missing_percent": 0.0,
        "unexpected_percent_total": 2 / 1_500 * 100,
        "unexpected_percent_nonmissing": 2 / 1_500 * 100,
        "partial_unexpected_counts": [{"value": "weekly", "count": 2}],
        "partial_unexpected_index_list": [4, 700],
    }
    assert in_set["expectation_config"]["kwargs"]["batch_id"] == f"churn-partition_{KEY}"

    # GX rendered the page of this result: the failed checks and their unexpected values.
    pages = list((partition.data_docs_dir / "validations").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "weekly" in page and "400" in page and "churn_contract" in page
    index = (partition.data_docs_dir / "index.html").read_text()
    assert pages[0].name in index

    summary = json.loads(partition.result("validate").read_text())
    assert summary["evaluated_expectations"] == summary["built_expectations"]
    assert set(summary["seconds"]) == {"load", "checks", "data_docs"}


def test_text_stored_three_ways_is_judged_the_same(
    mlops_env: Path, no_champion: None, tmp_path: Path
) -> None:
    """Category features as category, object or Arrow strings; ids as Arrow strings or objects:
    the same expectations pass (a category of strings is a string column)."""
    frame = generate_churn(1_200, seed=4)
    text = [c for c, t in frame.dtypes.items() if isinstance(t, pd.CategoricalDtype)]
    variants = {
        "lean": frame,
        "objects": frame.assign(**{c: frame[c].astype(object) for c in [*text, "customer_id"]}),
        "arrow": frame.assign(**{c: frame[c].astype("string[pyarrow]") for c in text}),
    }
    for name, variant in variants.items():
        _ingest(tmp_path, variant, key=name)
        summary = run_validate(load_settings(), name, ValidationPolicy(min_rows=1_000))
        assert summary["success"] is True, name
        assert summary["evaluated_expectations"] == summary["built_expectations"] == 56

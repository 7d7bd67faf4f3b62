"""The pieces of score-batch that need no registry: each task's output columns from a real
LightGBM booster (scikit-learn's wine and diabetes tables), and the reader's chunks over a
directory of Parquet files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_diabetes, load_wine

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.errors import SourceError
from mlops_steps.scoring.model import ScoringModel, UnexpectedModelOutput
from mlops_steps.scoring.places import place
from mlops_steps.scoring.table import open_input
from mlops_steps.training.pyfunc_model import ContractModel

CHURN = load_contract("churn")
PARAMS = {"verbose": -1, "num_threads": 1, "seed": 1}


def _model(booster: lgb.Booster, task: str, features: list[str]) -> ScoringModel:
    logged = ContractModel()
    logged.booster, logged.task = booster, task
    logged.features, logged.categories, logged.booleans = features, {}, []
    return ScoringModel("tables", "3", "3", "run", logged)


def _contract(task: str, classes: tuple[str, ...] = ()) -> ModelContract:
    return dataclasses.replace(CHURN, task=task, classes=classes)  # type: ignore[arg-type]


def test_multiclass_answers_the_class_and_every_class_probability() -> None:
    wine = load_wine(as_frame=True)
    frame, labels = wine.data, wine.target.to_numpy()
    booster = lgb.train({**PARAMS, "objective": "multiclass", "num_class": 3},
                        lgb.Dataset(frame, labels), num_boost_round=20)  # fmt: skip
    contract = _contract("multiclass", ("barolo", "grignolino", "barbera"))
    columns = _model(booster, "multiclass", list(frame.columns)).outputs(frame, contract)

    expected = np.asarray(booster.predict(frame.astype("float64")))
    assert list(columns) == ["class", "proba_barolo", "proba_grignolino", "proba_barbera"]
    for position, label in enumerate(contract.class_labels):
        assert np.array_equal(columns[f"proba_{label}"].to_numpy(), expected[:, position])
    names = np.asarray(contract.class_labels, dtype=object)[expected.argmax(axis=1)]
    assert columns["class"].to_pylist() == names.tolist()


def test_regression_answers_the_value_and_a_wrong_shape_is_named() -> None:
    diabetes = load_diabetes(as_frame=True)
    frame = diabetes.data
    train = lgb.Dataset(frame, diabetes.target.to_numpy())
    booster = lgb.train({**PARAMS, "objective": "regression"}, train, num_boost_round=20)
    model = _model(booster, "regression", list(frame.columns))
    columns = model.outputs(frame, _contract("regression"))
    assert list(columns) == ["value"]
    assert np.array_equal(columns["value"].to_numpy(), booster.predict(frame.astype("float64")))
    with pytest.raises(UnexpectedModelOutput, match=r"expected 442 x 3 class probabilities"):
        model.outputs(frame, _contract("multiclass", ("a", "b", "c")))


def test_chunks_have_exactly_the_asked_rows_across_files(tmp_path: Path) -> None:
    directory = tmp_path / "export"
    directory.mkdir()
    parts = [generate_churn(rows, seed=seed) for seed, rows in ((1, 1234), (2, 999), (3, 17))]
    for index, part in enumerate(parts):
        part.to_parquet(directory / f"part-{index}.parquet", index=False, row_group_size=300)
    whole = pd.concat(parts, ignore_index=True)

    table = open_input(f"file://{directory}", CHURN)
    assert table.columns == [str(CHURN.id_column), *CHURN.feature_names]  # no label read
    chunks = list(table.chunks(500))
    assert [c.num_rows for c in chunks] == [500] * 4 + [250]
    read = pa.Table.from_batches(chunks).to_pandas()
    # Same values; the id column comes back as text whatever string storage the export used.
    pd.testing.assert_frame_equal(read, whole.loc[:, table.columns], check_dtype=False)


def test_places_are_local_paths_file_uris_or_s3() -> None:
    local = place("file:///data/x.parquet", flag="--input")
    assert (local.uri, local.path, local.is_s3) == ("/data/x.parquet", "/data/x.parquet", False)
    assert place("/data/scores", flag="--output").child("run=1").uri == "/data/scores/run=1"
    with pytest.raises(SourceError, match="gs:// scheme is not supported") as info:
        place("gs://bucket/x.parquet", flag="--input")
    assert "s3://" in str(info.value)  # the fix names what is supported
    with pytest.raises(SourceError, match="no table to score"):
        open_input("", CHURN)


def test_files_of_one_directory_may_differ_in_string_kinds(tmp_path: Path) -> None:
    """One export's categories as dictionaries (pandas categories), the next one's as plain
    text: the chunks join them as one table."""
    directory = tmp_path / "export"
    directory.mkdir()
    first, second = generate_churn(700, seed=4), generate_churn(600, seed=5)
    first.to_parquet(directory / "part-0.parquet", index=False)
    plain_values(second).to_parquet(directory / "part-1.parquet", index=False)

    chunks = list(open_input(str(directory), CHURN).chunks(1000))
    assert [c.num_rows for c in chunks] == [1000, 300]
    read = pa.Table.from_batches(chunks).to_pandas()
    expected = plain_values(pd.concat([first, second], ignore_index=True))
    pd.testing.assert_frame_equal(
        plain_values(read), expected.loc[:, read.columns], check_dtype=False
    )


def test_a_file_that_is_not_parquet_under_a_directory_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "export"
    directory.mkdir()
    generate_churn(300, seed=6).to_parquet(directory / "part-0.parquet", index=False)
    (directory / "zz-notes.txt").write_text("not a table")
    table = open_input(str(directory), CHURN)
    with pytest.raises(SourceError, match="cannot be read as Parquet") as info:
        list(table.chunks(100))
    assert str(info.value).startswith(f"{directory / 'zz-notes.txt'}: cannot be read")

"""Partitions written and read in chunks give what the whole-frame writes and reads gave: the same
content hash whatever the chunking, the same rows for a mask, the same split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from mlops_steps.common import columnar
from mlops_steps.common.columnar import (
    ChunkedPartitionWriter,
    PartitionFile,
    chunks_of,
    lean_frame,
    plain_values,
)
from mlops_steps.common.metrics import id_buckets, split_frame
from mlops_steps.common.storage import Partition, frame_sha256, write_json
from mlops_steps.contract import synthetic
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn, generate_churn_chunks
from mlops_steps.core.errors import StepError


def _write(partition: Partition, frame: pd.DataFrame, rows_per_chunk: int) -> str:
    writer = ChunkedPartitionWriter(partition.data)
    for chunk in chunks_of(frame, rows_per_chunk):
        writer.write(chunk)
    content = writer.data_sha256
    write_json(partition.manifest, {"file_sha256": writer.commit(), "data_sha256": content})
    return content


@pytest.fixture
def churn() -> pd.DataFrame:
    return generate_churn(2_500, seed=3)


@pytest.mark.parametrize("rows_per_chunk", [2_500, 1_000, 333])
def test_the_content_hash_is_the_whole_frames_whatever_the_chunking(
    tmp_path: Path, churn: pd.DataFrame, rows_per_chunk: int
) -> None:
    partition = Partition.of(tmp_path, "p")
    assert _write(partition, churn, rows_per_chunk) == frame_sha256(churn)
    data = PartitionFile.open(partition)
    assert data.rows == len(churn)
    whole = data.read(data.columns)
    pd.testing.assert_frame_equal(whole, churn.reset_index(drop=True))
    assert isinstance(whole["contract_type"].dtype, pd.CategoricalDtype)
    assert whole["customer_id"].dtype == columnar.ARROW_STRING


def test_masked_reads_and_buckets_match_the_whole_frame_split(
    tmp_path: Path, churn: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(columnar, "CHUNK_ROWS", 700)  # row groups and read batches of 700 rows
    partition = Partition.of(tmp_path, "p")
    _write(partition, churn, 700)
    data = PartitionFile.open(partition)
    assert data._file.metadata.num_row_groups == 4
    buckets = data.split_buckets("customer_id")
    np.testing.assert_array_equal(buckets, id_buckets(churn["customer_id"]))
    splits = split_frame(churn, "customer_id")
    columns = ["tenure_months", "contract_type", "churn"]
    holdout = data.read(columns, buckets >= 85)
    pd.testing.assert_frame_equal(holdout, splits.holdout[columns].reset_index(drop=True))


def test_a_chunk_of_other_types_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    writer = ChunkedPartitionWriter(path)
    writer.write(pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(StepError, match="column types"):
        writer.write(pd.DataFrame({"x": [1.5, None]}))
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_changed_file_is_refused(tmp_path: Path, churn: pd.DataFrame) -> None:
    partition = Partition.of(tmp_path, "p")
    _write(partition, churn, 1_000)
    churn.head(10).to_parquet(partition.data)
    with pytest.raises(StepError, match="checksum mismatch"):
        PartitionFile.open(partition)


def test_reading_a_missing_column_names_it(tmp_path: Path, churn: pd.DataFrame) -> None:
    partition = Partition.of(tmp_path, "p")
    _write(partition, churn, 1_000)
    with pytest.raises(StepError, match="no column"):
        PartitionFile.open(partition).read(["nope"])


def test_lean_frame_keeps_values_and_leaves_numbers_alone() -> None:
    contract = load_contract("churn")
    text = plain_values(generate_churn(300, seed=5))
    lean = lean_frame(text, contract, "customer_id")
    assert all(
        isinstance(lean[c].dtype, pd.CategoricalDtype) for c in contract.categorical_features
    )
    assert lean["customer_id"].dtype == columnar.ARROW_STRING
    assert lean["tenure_months"].dtype == text["tenure_months"].dtype
    pd.testing.assert_frame_equal(plain_values(lean), text)
    # The content hash is the text's: a category hashes like its value.
    assert pd.util.hash_pandas_object(lean, index=False).equals(
        pd.util.hash_pandas_object(text, index=False)
    )


def test_a_numeric_table_is_left_as_it_is() -> None:
    """A real table without text (wine): nothing to convert, the same object comes back."""
    wine = load_wine(as_frame=True).frame
    assert lean_frame(wine, load_contract("churn"), "customer_id") is wine


def test_the_generator_draws_each_chunk_from_its_own_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(synthetic, "GENERATOR_CHUNK_ROWS", 1_000)
    chunks = list(generate_churn_chunks(2_500, seed=8, drift=0.3))
    assert [len(c) for c in chunks] == [1_000, 1_000, 500]
    whole = generate_churn(2_500, seed=8, drift=0.3)
    pd.testing.assert_frame_equal(whole, pd.concat(chunks, ignore_index=True))
    # The first chunk is the table of that many rows; ids run on across chunks.
    pd.testing.assert_frame_equal(chunks[0], generate_churn(1_000, seed=8, drift=0.3))
    assert whole["customer_id"].iloc[[0, 999, 1_000, 2_499]].tolist() == [
        "C00008-00000000",
        "C00008-00000999",
        "C00008-00001000",
        "C00008-00002499",
    ]
    assert whole["customer_id"].is_unique
    # Chunks differ (their own streams), and the table is reproducible.
    assert not np.array_equal(chunks[0]["tenure_months"][:500], chunks[2]["tenure_months"])
    pd.testing.assert_frame_equal(whole, generate_churn(2_500, seed=8, drift=0.3))

"""Two overlapping attempts of ``ingest`` on one partition: the manifest records the checksum of
the bytes its own attempt wrote, so when the other attempt's file lands in between, later steps
refuse the partition instead of trusting data the manifest does not describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_steps.common import columnar, storage
from mlops_steps.common.columnar import ChunkedPartitionWriter, PartitionFile
from mlops_steps.common.storage import Partition, frame_sha256, load_partition_frame
from mlops_steps.contract import synthetic
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import SourceRequest
from mlops_steps.core.settings import load_settings
from mlops_steps.training import ingest


def test_a_data_file_replaced_by_an_overlapping_attempt_is_never_trusted(
    mlops_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_attempt = generate_churn(1_500, seed=77)
    commit = ChunkedPartitionWriter.commit

    def commit_then_overlap(writer: ChunkedPartitionWriter) -> Any:
        written = commit(writer)
        storage.write_parquet(writer.path, other_attempt)  # the other attempt's rename lands now
        return written

    monkeypatch.setattr(ChunkedPartitionWriter, "commit", commit_then_overlap)
    manifest = ingest.run_ingest(
        load_settings(), "p1", SourceRequest("synthetic://churn", 1_000, 5)
    )
    partition = Partition.of(load_settings().dataset_root, "p1")
    assert manifest["data_sha256"] != frame_sha256(other_attempt)
    with pytest.raises(StepError, match="checksum mismatch"):
        load_partition_frame(partition)


def test_a_table_of_several_chunks_is_one_partition(
    mlops_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator's chunks become row groups of one file whose content hash, summary and
    rows are those of the whole table; a re-run finds it unchanged."""
    monkeypatch.setattr(synthetic, "GENERATOR_CHUNK_ROWS", 1_000)
    monkeypatch.setattr(columnar, "CHUNK_ROWS", 1_000)
    request = SourceRequest("synthetic://churn", 2_500, 5)
    manifest = ingest.run_ingest(load_settings(), "p1", request)
    whole = generate_churn(2_500, 5)
    assert manifest["data_sha256"] == frame_sha256(whole)
    assert manifest["summary"]["rows"] == 2_500
    assert manifest["summary"]["label_rate"] == round(float(whole["churn"].mean()), 6)
    assert manifest["summary"]["columns"]["contract_type"] == "category"
    data = PartitionFile.open(Partition.of(load_settings().dataset_root, "p1"))
    assert data._file.metadata.num_row_groups == 3
    frame, _ = load_partition_frame(data.partition)
    pd.testing.assert_frame_equal(frame, whole)
    again = ingest.run_ingest(load_settings(), "p1", request)
    assert again["unchanged"] is True and again["file_sha256"] == manifest["file_sha256"]
    assert sorted(p.name for p in data.partition.root.iterdir()) == [
        "data.parquet",
        "manifest.json",
    ]

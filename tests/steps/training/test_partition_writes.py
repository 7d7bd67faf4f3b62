"""Two overlapping attempts of ``ingest`` on one partition: the manifest records the checksum of
the bytes its own attempt wrote, so when the other attempt's file lands in between, later steps
refuse the partition instead of trusting data the manifest does not describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlops_steps.common import storage
from mlops_steps.common.columnar import ChunkedPartitionWriter
from mlops_steps.common.storage import Partition, frame_sha256, load_partition_frame
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

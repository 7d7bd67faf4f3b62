"""``mlops-step score-batch`` against a real MLflow server and two versions trained by the real
steps: outputs equal the booster's own predictions, chunking changes nothing, the manifest
describes its files, a complete run is never rewritten, a table that is not the contract's is
refused before anything is written, and a version number scores with that version."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from mlops_steps.common.storage import sha256_file
from mlops_steps.core.policies import BatchScoringPolicy
from mlops_steps.core.settings import load_settings
from mlops_steps.scoring.batch import ScoredRunConflict, run_score_batch
from mlops_steps.scoring.lineage import RUN_TAG
from mlops_steps.scoring.table import (
    MissingInputColumns,
    MistypedInputColumn,
    UnexpectedInputColumns,
)
from tests.steps.scoring.support import (
    ID_COLUMN,
    MODEL,
    Versions,
    booster_scores,
    read_run,
    score,
    table,
)


def test_parquet_and_csv_score_like_the_booster_in_any_chunking(
    scoring_env: Versions, tmp_path: Path
) -> None:
    frame = table()
    parquet, csv = tmp_path / "customers.parquet", tmp_path / "customers.csv.gz"
    frame.to_parquet(parquet, index=False)
    frame.to_csv(csv, index=False)
    output = tmp_path / "scores"
    expected = booster_scores("1", frame)

    assert score("chunked", parquet, output, "--chunk-rows", "1000") == 0
    assert score("whole", parquet, output, "--chunk-rows", "100000") == 0
    assert score("csv", csv, output, "--chunk-rows", "700") == 0
    _, manifest = read_run(output, "chunked")
    for run in ("chunked", "whole", "csv"):
        scored, _ = read_run(output, run)
        assert list(scored.columns) == [ID_COLUMN, "model_version", "score"], run
        assert scored[ID_COLUMN].tolist() == frame[ID_COLUMN].astype(str).tolist(), run
        assert set(scored["model_version"].astype(str)) == {"1"}, run
        assert np.array_equal(scored["score"].to_numpy(), expected), run  # bit for bit
    assert manifest["chunks"] == 3 and manifest["rows"] == 2500
    assert manifest["model_version"] == "1" and manifest["model_ref"] == "champion"
    assert manifest["id_column"] == ID_COLUMN and manifest["task"] == "binary"
    for part in manifest["files"]:
        path = output / "run=chunked" / part["path"]
        assert sha256_file(path) == part["sha256"]
        assert pq.ParquetFile(path).metadata.num_rows == part["rows"]
        assert pq.ParquetFile(path).metadata.num_row_groups == 3  # one per chunk
    assert sum(part["rows"] for part in manifest["files"]) == 2500
    # Nothing but the runs: the staging directories are gone.
    assert sorted(p.name for p in output.iterdir()) == ["run=chunked", "run=csv", "run=whole"]


def test_a_rerun_of_a_complete_run_replaces_nothing(scoring_env: Versions, tmp_path: Path) -> None:
    source = tmp_path / "customers.parquet"
    table(1200, seed=8).to_parquet(source, index=False)
    output = tmp_path / "scores"
    settings = load_settings()
    policy = BatchScoringPolicy(input_uri=str(source), output_uri=str(output), chunk_rows=500)
    first = run_score_batch(settings, "20261123T000000", policy)
    directory = output / "run=20261123T000000"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()}
    manifest_bytes = (directory / "manifest.json").read_bytes()

    again = run_score_batch(settings, "20261123T000000", policy)
    assert again == {**first, "already_complete": True}
    assert first["already_complete"] is False and first["rows"] == 1200
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()} == before
    assert (directory / "manifest.json").read_bytes() == manifest_bytes

    # The same run key asked for with another version is refused, and changes nothing.
    with pytest.raises(ScoredRunConflict, match="was scored completely"):
        run_score_batch(
            settings, "20261123T000000", BatchScoringPolicy(
                input_uri=str(source), output_uri=str(output), model_ref="2"))  # fmt: skip
    assert (directory / "manifest.json").read_bytes() == manifest_bytes

    # Lineage: one finished MLflow run for the key, the manifest its artifact.
    client = MlflowClient(scoring_env.tracking)
    experiment = client.get_experiment_by_name(f"{MODEL}-batch-scoring")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{RUN_TAG}` = '20261123T000000'"
    )
    assert [r.info.run_id for r in runs] == [first["mlflow_run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.model_version"] == "1"
    assert run.data.tags["mlops.input_uri"] == str(source)
    assert run.data.metrics["rows"] == 1200
    logged = client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path))
    assert Path(logged).read_bytes() == manifest_bytes


def test_a_version_number_scores_with_that_version(scoring_env: Versions, tmp_path: Path) -> None:
    frame = table(900, seed=9)
    source = tmp_path / "customers.parquet"
    frame.to_parquet(source, index=False)
    output = tmp_path / "scores"
    assert score("v2", source, output, "--model-ref", "2") == 0
    scored, manifest = read_run(output, "v2")
    assert manifest["model_version"] == "2" and manifest["model_ref"] == "2"
    assert set(scored["model_version"].astype(str)) == {"2"}
    assert np.array_equal(scored["score"].to_numpy(), booster_scores("2", frame))
    assert not np.array_equal(scored["score"].to_numpy(), booster_scores("1", frame))
    # A version that does not exist is a named error, exit 2, nothing written.
    assert score("v9", source, output, "--model-ref", "9") == 2
    assert not (output / "run=v9").exists()


def _missing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["tenure_months"])


def _extra(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(region="north")


def _number_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(monthly_charges=frame["monthly_charges"].map("{:.2f} EUR".format))


def _category_as_number(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(contract_type=np.arange(len(frame)) % 3)


BAD_TABLES = {
    "missing": (_missing, MissingInputColumns, "['tenure_months']"),
    "extra": (_extra, UnexpectedInputColumns, "['region']"),
    "number_as_text": (_number_as_text, MistypedInputColumn, "'monthly_charges'"),
    "category_as_number": (_category_as_number, MistypedInputColumn, "'contract_type'"),
}


#: Every bad table in both formats, but a category of numbers in a CSV: a CSV category is read
#: as text whatever it looks like ("2" is a category's name there).
BAD_CASES = [
    (case, fmt)
    for case in sorted(BAD_TABLES)
    for fmt in ("parquet", "csv")
    if (case, fmt) != ("category_as_number", "csv")
]


@pytest.mark.parametrize(("case", "fmt"), BAD_CASES)
def test_a_table_that_is_not_the_contracts_is_refused_before_anything_is_written(
    case: str,
    fmt: str,
    scoring_env: Versions,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    change, error, named = BAD_TABLES[case]
    bad = change(table(300, seed=3))
    source = tmp_path / f"customers.{fmt}"
    bad.to_parquet(source, index=False) if fmt == "parquet" else bad.to_csv(source, index=False)
    output = tmp_path / "scores"
    caplog.set_level(logging.INFO, logger="mlops_steps")

    assert score("bad", source, output) == 2
    assert named in caplog.text and "Fix:" in caplog.text
    assert not output.exists()  # nothing written, not even a staging directory
    with pytest.raises(error, match=named.replace("[", r"\[").replace("]", r"\]")):
        run_score_batch(
            load_settings(), "bad", BatchScoringPolicy(input_uri=str(source),
                                                       output_uri=str(output)))  # fmt: skip
    assert not output.exists()

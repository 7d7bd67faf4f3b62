"""score-batch: score a table of any size with one registered version, in chunks, into
``<output>/run=<key>/``: Parquet parts holding the row's id, the model version and the task's
outputs, and a ``manifest.json`` with each part's rows and sha256.

Idempotent for a run key (the run's logical date): the parts and the manifest are written to a
staging directory beside the run's, which is renamed into place only once complete, so
``run=<key>/`` exists only with a complete manifest and a re-run of a complete key replaces
nothing and returns its manifest. The input is checked against the contract before anything is
loaded or written (:mod:`mlops_steps.scoring.table`); a failure leaves no files behind.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

# A staging directory is named and flushed like the partitions' temporary files.
from mlops_steps.common.storage import (
    attempt_tag,
    check_partition_key,
    fsync_dir,
    read_json,
    sha256_file,
)
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import SourceError, StepError
from mlops_steps.core.policies import BatchScoringPolicy
from mlops_steps.core.sections import for_model
from mlops_steps.core.settings import Settings, code_version
from mlops_steps.scoring.model import ScoringModel
from mlops_steps.scoring.table import ROW_NUMBER_COLUMN, InputTable, local_path, open_input

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MODEL_VERSION_COLUMN = "model_version"
#: A part file holds at most this many rows (whole chunks); readers get files of a useful size.
PART_ROWS = 1_000_000


class ScoredRunConflict(StepError):
    """The run key was already scored completely, with another version request or input."""


@dataclass(frozen=True)
class ScoringRequest:
    """One batch run: the policy's choices for one model and run key."""

    run_key: str
    input_uri: str
    output_root: Path
    model_ref: str
    chunk_rows: int


def scoring_request(settings: Settings, run_key: str, policy: BatchScoringPolicy) -> ScoringRequest:
    """The request a policy makes for this model (``{model}`` filled in, the default output
    under the data root)."""
    output = for_model(policy.output_uri, settings.model_name)
    return ScoringRequest(
        run_key=check_partition_key(run_key),
        input_uri=for_model(policy.input_uri, settings.model_name),
        output_root=(
            local_path(output, flag="--output")
            if output
            else settings.data_root / "scores" / settings.model_name
        ),
        model_ref=policy.model_ref,
        chunk_rows=policy.chunk_rows,
    )


def run_directory(request: ScoringRequest) -> Path:
    return request.output_root / f"run={request.run_key}"


def _complete(request: ScoringRequest, input_path: Path) -> dict[str, Any] | None:
    """The manifest of a complete run of this key, or None; a conflicting one is refused."""
    manifest_path = run_directory(request) / MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = read_json(manifest_path, produced_by="score-batch")
    asked = {"model_ref": request.model_ref, "input": str(input_path)}
    done = {"model_ref": manifest.get("model_ref"), "input": manifest.get("input", {}).get("path")}
    if asked != done:
        raise ScoredRunConflict(
            f"was scored completely with {done}; this run asks for {asked}",
            subject=str(run_directory(request)),
            fix="score into another run (logical date) or --output, or delete the run's "
            "directory to score it again",
        )
    return manifest


def _identities(table: InputTable, batch: pa.RecordBatch, first_row: int) -> tuple[str, Any]:
    if table.id_column:
        return table.id_column, batch.column(table.id_column)
    rows = np.arange(first_row, first_row + batch.num_rows, dtype=np.int64)
    return ROW_NUMBER_COLUMN, pa.array(rows)


def _scored(
    table: InputTable, contract: ModelContract, model: ScoringModel, rows: int
) -> Iterator[pa.Table]:
    """Each chunk of the input as its output table: id, model version, the task's outputs."""
    version = pa.array([model.version])
    first = 0
    for batch in table.chunks(rows):
        features = batch.select([f.name for f in table.features]).to_pandas()
        id_name, ids = _identities(table, batch, first)
        versions = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(batch.num_rows, dtype=np.int32)), version
        )
        columns = {id_name: ids, MODEL_VERSION_COLUMN: versions}
        columns |= model.outputs(features, contract)
        first += batch.num_rows
        yield pa.table(columns)


def _write_parts(staging: Path, chunks: Iterator[pa.Table], rows: int) -> tuple[list[Any], int]:
    """Parquet parts of whole chunks (a row group each); (files with rows, sha256), chunks."""
    import pyarrow.parquet as pq

    files: list[dict[str, Any]] = []
    writer: Any = None
    written = chunk_count = 0

    def close() -> None:
        writer.close()
        path = staging / files[-1]["path"]
        fsync_dir(path)
        files[-1] |= {"bytes": path.stat().st_size, "sha256": sha256_file(path)}

    for chunk in chunks:
        if writer is None or written + chunk.num_rows > max(PART_ROWS, rows):
            if writer is not None:
                close()
            files.append({"path": f"part-{len(files):05d}.parquet", "rows": 0})
            writer = pq.ParquetWriter(staging / files[-1]["path"], chunk.schema, compression="zstd")
            written = 0
        writer.write_table(chunk, row_group_size=chunk.num_rows)
        files[-1]["rows"] += chunk.num_rows
        written += chunk.num_rows
        chunk_count += 1
    if writer is None:
        raise SourceError("holds no rows to score", subject="--input", fix="check the export")
    close()
    return files, chunk_count


def _input_facts(table: InputTable, uri: str) -> dict[str, Any]:
    paths = sorted(table.path.rglob("*")) if table.path.is_dir() else [table.path]
    files = [p for p in paths if p.is_file()]
    return {
        "uri": uri,
        "path": str(table.path),
        "format": table.format,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
    }


def _publish(staging: Path, final: Path) -> bool:
    """Rename the complete staging directory into place; False when another attempt won."""
    try:
        staging.rename(final)
    except OSError:
        if (final / MANIFEST).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            return False
        raise
    fsync_dir(final.parent)
    return True


def run_score_batch(settings: Settings, run_key: str, policy: BatchScoringPolicy) -> dict[str, Any]:
    """Score the policy's input for run ``run_key``; the step's result (see the module doc)."""
    from mlops_steps.common.tracking import connect
    from mlops_steps.scoring.lineage import fail_lineage, finish_lineage, start_lineage
    from mlops_steps.scoring.model import load_scoring_model

    request = scoring_request(settings, run_key, policy)
    final = run_directory(request)
    done = (
        _complete(request, local_path(request.input_uri, flag="--input"))
        if request.input_uri
        else None
    )
    if done is not None:
        log.info("run %s is complete (%s rows): nothing to do", request.run_key, done["rows"])
        finish_lineage(connect(), done["mlflow_run_id"], done, final / MANIFEST)
        return _result(done, final, already_complete=True)
    contract = load_contract(settings.model_name)
    table = open_input(request.input_uri, contract)  # named errors before anything else
    client = connect()
    model = load_scoring_model(client, settings.model_name, request.model_ref)
    lineage = start_lineage(
        client, model, request.run_key, str(final), {"mlops.input_uri": request.input_uri}
    )
    staging = request.output_root / f".run={request.run_key}.{attempt_tag()}.staging"
    shutil.rmtree(staging, ignore_errors=True)  # this attempt's own leftover (same pod + pid)
    staging.mkdir(parents=True)
    started = time.perf_counter()
    try:
        files, chunks = _write_parts(
            staging, _scored(table, contract, model, request.chunk_rows), request.chunk_rows
        )
        manifest = {
            "run": request.run_key,
            "model_name": model.name,
            "model_version": model.version,
            "model_ref": model.ref,
            "model_run_id": model.run_id,
            "task": contract.task,
            "id_column": table.id_column or ROW_NUMBER_COLUMN,
            "contract_fingerprint": contract.fingerprint(),
            "input": _input_facts(table, request.input_uri),
            "chunk_rows": request.chunk_rows,
            "chunks": chunks,
            "rows": sum(f["rows"] for f in files),
            "files": files,
            "seconds": round(time.perf_counter() - started, 3),
            "created_at_ms": int(time.time() * 1000),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "code_version": code_version(),
            "mlflow_run_id": lineage,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        fsync_dir(staging / MANIFEST)
        fsync_dir(staging)
        if not _publish(staging, final):
            manifest = read_json(final / MANIFEST, produced_by="score-batch")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        fail_lineage(client, lineage)
        raise
    finish_lineage(client, manifest["mlflow_run_id"], manifest, final / MANIFEST)
    log.info("scored %s rows with %s v%s into %s", manifest["rows"], model.name, model.version,
             final)  # fmt: skip
    return _result(manifest, final, already_complete=False)


def _result(manifest: dict[str, Any], final: Path, *, already_complete: bool) -> dict[str, Any]:
    return {
        "run": manifest["run"],
        "output": str(final),
        "manifest": str(final / MANIFEST),
        "rows": manifest["rows"],
        "files": len(manifest["files"]),
        "model_version": manifest["model_version"],
        "model_ref": manifest["model_ref"],
        "mlflow_run_id": manifest["mlflow_run_id"],
        "already_complete": already_complete,
    }

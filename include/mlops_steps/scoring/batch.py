"""score-batch: score a table of any size with one registered version, in chunks, into
``<output>/run=<key>/``: Parquet parts holding the row's id, the model version and the task's
outputs, and a ``manifest.json`` with each part's rows and sha256.

Input and output are local or on S3. Idempotent for a run key (the run's logical date): the
manifest is the commit, published only once every part is complete
(:mod:`mlops_steps.scoring.output`), so a re-run of a complete key replaces nothing and returns
its manifest. The input is checked against the contract before anything is loaded or written
(:mod:`mlops_steps.scoring.table`); a failure leaves no files behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_steps.common.storage import check_partition_key
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import SourceError, StepError
from mlops_steps.core.policies import BatchScoringPolicy
from mlops_steps.core.sections import for_model
from mlops_steps.core.settings import Settings, code_version
from mlops_steps.scoring.model import ScoringModel
from mlops_steps.scoring.output import HashingSink, RunOutput
from mlops_steps.scoring.places import Place, place
from mlops_steps.scoring.table import ROW_NUMBER_COLUMN, InputTable, open_input

log = logging.getLogger(__name__)
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
    output_root: Place
    model_ref: str
    chunk_rows: int


def scoring_request(settings: Settings, run_key: str, policy: BatchScoringPolicy) -> ScoringRequest:
    """The request a policy makes for this model (``{model}`` filled in, the default output
    under the data root)."""
    output = for_model(policy.output_uri, settings.model_name)
    default = settings.data_root / "scores" / settings.model_name
    return ScoringRequest(
        run_key=check_partition_key(run_key),
        input_uri=for_model(policy.input_uri, settings.model_name),
        output_root=place(output or str(default), flag="--output"),
        model_ref=policy.model_ref,
        chunk_rows=policy.chunk_rows,
    )


def _complete(request: ScoringRequest, output: RunOutput) -> tuple[dict[str, Any], bytes] | None:
    """The manifest (and its bytes) of a complete run of this key, or None; a conflicting one
    is refused."""
    found = output.manifest()
    if found is None:
        return None
    manifest = found[0]
    asked = {"model_ref": request.model_ref, "input": place(request.input_uri, flag="--input").uri}
    done = {"model_ref": manifest.get("model_ref"), "input": manifest.get("input", {}).get("path")}
    if asked != done:
        raise ScoredRunConflict(
            f"was scored completely with {done}; this run asks for {asked}",
            subject=output.run.uri,
            fix="score into another run (logical date) or --output, or delete the run's "
            "directory (prefix) to score it again",
        )
    return found


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


class _Parts:
    """Parquet parts of whole chunks (a row group each), at most ``PART_ROWS`` rows a part
    unless one chunk is larger; each part's rows, bytes and sha256 as it is closed."""

    def __init__(self, output: RunOutput, chunk_rows: int):
        self.output = output
        self.part_rows = max(PART_ROWS, chunk_rows)
        self.files: list[dict[str, Any]] = []
        self.chunks = 0
        self._writer: Any = None
        self._sink: HashingSink | None = None
        self._rows_in_part = 0

    def add(self, chunk: pa.Table) -> None:
        import pyarrow.parquet as pq

        try:
            if self._writer is None or self._rows_in_part + chunk.num_rows > self.part_rows:
                self._close()
                self._sink = self.output.open_part(len(self.files))
                self.files.append({"rows": 0})
                self._writer = pq.ParquetWriter(self._sink, chunk.schema, compression="zstd")
                self._rows_in_part = 0
            self._writer.write_table(chunk, row_group_size=chunk.num_rows)
        except OSError as exc:  # an upload refused or failed
            self.abandon()
            self.output.fail(exc, "writing a part")
        self.files[-1]["rows"] += chunk.num_rows
        self._rows_in_part += chunk.num_rows
        self.chunks += 1

    def finish(self) -> list[dict[str, Any]]:
        if not self.files:
            raise SourceError("holds no rows to score", subject="--input", fix="check the export")
        try:
            self._close()
        except OSError as exc:
            self.abandon()
            self.output.fail(exc, "writing a part")
        return self.files

    def _close(self) -> None:
        if self._writer is None or self._sink is None:
            return
        self._writer.close()
        self.files[-1] |= self.output.close_part(self._sink)
        self._writer = self._sink = None

    def abandon(self) -> None:
        """Finish a part being written when the run fails, so that it is complete (and then
        deleted) now, not finished by a destructor after its attempt removed its files."""
        writer, sink, self._writer, self._sink = self._writer, self._sink, None, None
        if sink is None or sink.closed:
            return
        with contextlib.suppress(Exception):  # its upload may be what failed
            writer.close()
        with contextlib.suppress(OSError):
            sink.close()


def _write_parts(
    output: RunOutput, chunks: Iterator[pa.Table], chunk_rows: int
) -> tuple[list[dict[str, Any]], int]:
    """Every chunk into parts; (files with rows, bytes and sha256, number of chunks)."""
    parts = _Parts(output, chunk_rows)
    try:
        for chunk in chunks:
            parts.add(chunk)
        return parts.finish(), parts.chunks
    except BaseException:
        parts.abandon()
        raise


def _input_facts(table: InputTable, uri: str) -> dict[str, Any]:
    import pyarrow.fs as pafs

    source = table.source
    info = source.filesystem.get_file_info(source.path)
    if info.type == pafs.FileType.Directory:
        selector = pafs.FileSelector(source.path, recursive=True)
        infos = source.filesystem.get_file_info(selector)
    else:
        infos = [info]
    files = [i for i in infos if i.type == pafs.FileType.File]
    return {
        "uri": uri,
        "path": source.uri,
        "format": table.format,
        "files": len(files),
        "bytes": sum(i.size or 0 for i in files),
    }


def run_score_batch(settings: Settings, run_key: str, policy: BatchScoringPolicy) -> dict[str, Any]:
    """Score the policy's input for run ``run_key``; the step's result (see the module doc)."""
    from mlops_steps.common.tracking import connect
    from mlops_steps.scoring.lineage import fail_lineage, finish_lineage, start_lineage
    from mlops_steps.scoring.model import load_scoring_model

    request = scoring_request(settings, run_key, policy)
    output = RunOutput(request.output_root, request.run_key)
    done = _complete(request, output) if request.input_uri else None
    if done is not None:
        manifest, payload = done
        log.info("run %s is complete (%s rows): nothing to do", request.run_key, manifest["rows"])
        finish_lineage(connect(), manifest["mlflow_run_id"], manifest, payload)
        return _result(manifest, output, already_complete=True)
    contract = load_contract(settings.model_name)
    table = open_input(request.input_uri, contract)  # named errors before anything else
    output.check_writable()
    client = connect()
    model = load_scoring_model(client, settings.model_name, request.model_ref)
    lineage = start_lineage(
        client, model, request.run_key, output.run.uri, {"mlops.input_uri": request.input_uri}
    )
    started = time.perf_counter()
    try:
        output.start()
        files, chunks = _write_parts(
            output, _scored(table, contract, model, request.chunk_rows), request.chunk_rows
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
        payload = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        if not output.commit(manifest, payload):
            manifest, payload = _published(output)
    except BaseException:
        output.discard()
        fail_lineage(client, lineage)
        raise
    finish_lineage(client, manifest["mlflow_run_id"], manifest, payload)
    log.info("scored %s rows with %s v%s into %s", manifest["rows"], model.name, model.version,
             output.run.uri)  # fmt: skip
    return _result(manifest, output, already_complete=False)


def _published(output: RunOutput) -> tuple[dict[str, Any], bytes]:
    """The manifest another attempt published while this one scored."""
    found = output.manifest()
    if found is None:
        raise StepError("lost its manifest after it was published", subject=output.run.uri)
    return found


def _result(
    manifest: dict[str, Any], output: RunOutput, *, already_complete: bool
) -> dict[str, Any]:
    return {
        "run": manifest["run"],
        "output": output.run.uri,
        "manifest": output.manifest_place.uri,
        "rows": manifest["rows"],
        "files": len(manifest["files"]),
        "model_version": manifest["model_version"],
        "model_ref": manifest["model_ref"],
        "mlflow_run_id": manifest["mlflow_run_id"],
        "already_complete": already_complete,
    }

"""What the lifecycle demo reads back from where the pipeline keeps its data, on either profile:
the data root, the prediction logs and the label landing places are directories (the embedded
default) or ``s3://`` prefixes (the distributed profile). Read and written through pyarrow's file
systems (the step package's ``scoring.places``: the same endpoint and credential settings as the
steps), so the story's code is the same on both."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from mlops_steps.core.sections import for_model
from mlops_steps.scoring.places import place


@dataclass(frozen=True)
class DemoData:
    """The demo stack's data places (what its Airflow components are given)."""

    data_root: str  # MLOPS_DATA_ROOT
    prediction_log: str  # MLOPS_PREDICTION_LOG, with {model}
    labels: str  # MLOPS_LABELS, with {model}

    @property
    def on_object_store(self) -> bool:
        return self.data_root.startswith("s3://")

    def uri(self, *parts: str) -> str:
        """A place under the data root (a path or a URI, as the steps record it)."""
        return "/".join([self.data_root.rstrip("/"), *parts])

    def _bytes(self, uri: str) -> bytes | None:
        where = place(uri, flag="demo")
        try:
            with where.filesystem.open_input_stream(where.path) as stream:
                return bytes(stream.read())
        except (FileNotFoundError, OSError):
            return None

    def read_json(self, *parts: str) -> dict[str, Any]:
        """A JSON file under the data root; {} when it is not there."""
        payload = self._bytes(self.uri(*parts))
        return dict(json.loads(payload)) if payload else {}

    def read_parquet(self, *parts: str) -> Any:
        import pandas as pd

        payload = self._bytes(self.uri(*parts))
        if payload is None:
            raise RuntimeError(f"{self.uri(*parts)} is not there")
        return pd.read_parquet(io.BytesIO(payload))

    def _children(self, uri: str, *, recursive: bool = False) -> list[str]:
        import pyarrow.fs as pafs

        where = place(uri, flag="demo")
        selector = pafs.FileSelector(where.path, allow_not_found=True, recursive=recursive)
        return sorted(info.path for info in where.filesystem.get_file_info(selector))

    def children(self, *parts: str) -> list[str]:
        """Names directly under a directory of the data root, sorted."""
        return [path.rsplit("/", 1)[-1] for path in self._children(self.uri(*parts))]

    def logged_rows(self, model: str) -> int:
        """Rows in ``model``'s prediction log (JSON lines: one row per line)."""
        base = for_model(self.prediction_log, model)
        files = [p for p in self._children(base, recursive=True) if p.endswith(".jsonl")]
        where = place(base, flag="demo")
        total = 0
        for path in files:
            with where.filesystem.open_input_stream(path) as stream:
                total += len(bytes(stream.read()).splitlines())
        return total

    def write_labels(self, model: str, name: str, csv_text: str) -> str:
        """A file of delayed labels landing in ``model``'s label landing place; its location."""
        uri = f"{for_model(self.labels, model).rstrip('/')}/{name}"
        where = place(uri, flag="demo")
        if not self.on_object_store:
            where.filesystem.create_dir(where.path.rsplit("/", 1)[0], recursive=True)
        with where.filesystem.open_output_stream(where.path) as stream:
            stream.write(csv_text.encode())
        return uri

    def ledger(self, model: str) -> list[dict[str, Any]]:
        """The deployment ledger's lines in order: one JSON-lines file on a directory, one
        object per line on an object store (release/ledger.py)."""
        if not self.on_object_store:
            payload = self._bytes(self.uri("ledger", f"{model}-deployments.jsonl")) or b""
            return [json.loads(line) for line in payload.splitlines() if line.strip()]
        prefix = self.uri("ledger", f"{model}-deployments")
        entries = [json.loads(self._bytes(path if "://" in path else f"s3://{path}") or b"{}")
                   for path in self._children(prefix)]  # fmt: skip
        return sorted(entries, key=lambda e: str(e.get("time", "")))

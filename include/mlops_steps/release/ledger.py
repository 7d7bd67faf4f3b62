"""The release record: each version's decision as registry tags and one audit-ledger line (JSON
lines, appended once per version and decision), a ledger line per traffic step of a progressive
release (``"kind": "traffic_step"``: the share, the verdict, the analysis' numbers), and the
per-version step results beside it
(``$MLOPS_DATA_ROOT/deployments/<model>/v<version>/<step>.json``).

On an object-store data root the ledger is one object per line, named by the line's key and
written with a conditional put (common/dataplane.py): what ``flock`` + append do on a volume."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlops_steps.common import dataplane
from mlops_steps.common.storage import atomic_write_bytes
from mlops_steps.core.settings import Settings

PREVIOUS_CHAMPION = "previous_champion"
PROMOTED, REJECTED, ROLLED_BACK = "promoted", "rejected", "rolled_back"
STATUS_TAG = "mlops.deploy.status"
#: What makes two ledger lines the same decision: one line per model, version and decision.
DECISION_KEY = ("model_name", "version", "decision")
DECISION, TRAFFIC_STEP = "decision", "traffic_step"
#: One line per step of one attempt of one run: a retried attempt's steps are lines of their own.
STEP_KEY = ("kind", "model_name", "version", "dag_run_id", "try_number", "phase", "step")


def deployment_dir(settings: Settings, version: str) -> Path:
    """Per-version working files of the release steps (canary analysis, decisions)."""
    directory = settings.data_root / "deployments" / settings.model_name / f"v{version}"
    dataplane.fetch_dir(directory)
    return directory


@contextlib.contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    """An advisory lock on ``<ledger>.lock`` (beside the ledger, so the lock outlives no
    rename): exclusive for read-check-append, shared for reads, across every process and pod
    that shares the volume."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _entries(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_once(path: Path, entry: dict[str, Any], key: Sequence[str] = DECISION_KEY) -> bool:
    """Append ``entry`` as one JSON line unless a line with the same ``key`` fields is there.

    Read, check and append happen under one exclusive lock, and the line is written with one
    ``write`` and fsynced, so concurrent attempts never duplicate a decision nor tear a line.
    Returns whether the line was appended. (The ledger's whole interface is this and
    :func:`read_ledger`: an object-store ledger would implement the two with a conditional put.)
    """
    wanted = tuple(entry.get(field) for field in key)
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    store = dataplane.active()
    if store is not None:
        name = hashlib.sha256(json.dumps(wanted, default=str).encode()).hexdigest()
        return store.put_once(f"{_entries_prefix(store, path)}/{name}.json", line)
    with _locked(path, fcntl.LOCK_EX):
        if any(tuple(e.get(field) for field in key) == wanted for e in _entries(path)):
            return False
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
    return True


def _entries_prefix(store: dataplane.ObjectStorePlane, path: Path) -> str:
    """Where a ledger's entries live in the store: ``ledger/<model>-deployments/``."""
    return store.relative(path.with_suffix(""))


def read_ledger(settings: Settings, kind: str = DECISION) -> list[dict[str, Any]]:
    """The ledger's lines of one ``kind``: decisions (lines from before steps were recorded
    have no kind, and are decisions) or traffic steps."""
    store = dataplane.active()
    if store is not None:
        entries = store.read_json_objects(_entries_prefix(store, settings.ledger_path))
        entries.sort(key=lambda e: str(e.get("time", "")))
    elif not settings.ledger_path.is_file():
        return []
    else:
        with _locked(settings.ledger_path, fcntl.LOCK_SH):
            entries = _entries(settings.ledger_path)
    return [e for e in entries if e.get("kind", DECISION) == kind]


def _run_context() -> dict[str, Any]:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dag_id": os.environ.get("MLOPS_AIRFLOW_DAG_ID"),
        "dag_run_id": os.environ.get("MLOPS_AIRFLOW_RUN_ID"),
        "try_number": os.environ.get("MLOPS_AIRFLOW_TRY_NUMBER"),
    }


def record_step(
    settings: Settings, *, version: str, phase: str, step: int, details: dict[str, Any]
) -> dict[str, Any]:
    """A traffic step's ledger line, written when the step is judged (so a release stopped
    half-way still shows how far it got); ``phase`` is ``shadow``, ``canary`` or ``first``."""
    entry = {
        "kind": TRAFFIC_STEP,
        "model_name": settings.model_name,
        "version": version,
        "phase": phase,
        "step": step,
        **_run_context(),
        **details,
    }
    append_once(settings.ledger_path, entry, STEP_KEY)
    return entry


def record_decision(
    settings: Settings,
    client: Any,
    *,
    version: str,
    status: str,
    reason: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write the decision as version tags and a ledger line (once per version and status)."""
    name = settings.model_name
    candidate = client.get_model_version(name, version)
    tags = dict(candidate.tags or {})
    context = _run_context()
    del context["try_number"]  # one decision per version, whichever attempt made it
    entry = {
        "kind": DECISION,
        "model_name": name,
        "version": version,
        "decision": status,
        "reason": reason,
        **context,
        "data_sha256": tags.get("mlops.data_sha256"),
        "image_ref": tags.get("mlops.image.ref"),
        **extra,
    }
    append_once(settings.ledger_path, entry)
    for key, value in {
        STATUS_TAG: status,
        "mlops.deploy.reason": reason[:4000],
        "mlops.deploy.approved_by": str(extra.get("approved_by") or ""),
        "mlops.deploy.dag_run_id": str(entry["dag_run_id"] or ""),
        "mlops.deploy.decided_at": entry["time"],
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return entry


def analysis_result(
    settings: Settings, version: str, name: str = "analysis"
) -> dict[str, Any] | None:
    """A release step's result file (``analysis.json``: the whole progressive walk)."""
    path = deployment_dir(settings, version) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(settings: Settings, version: str, step: str, result: dict[str, Any]) -> None:
    path = deployment_dir(settings, version) / f"{step}.json"
    atomic_write_bytes(path, json.dumps(result, sort_keys=True, indent=2, default=str).encode())

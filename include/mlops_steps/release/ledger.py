"""The release record: each version's decision as registry tags and one audit-ledger line (JSON
lines, appended once per version and decision), and the per-version step results beside it
(``$MLOPS_DATA_ROOT/deployments/<model>/v<version>/<step>.json``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mlops_steps.common.storage import atomic_write_bytes
from mlops_steps.core.settings import Settings

PREVIOUS_CHAMPION = "previous_champion"
PROMOTED, REJECTED, ROLLED_BACK = "promoted", "rejected", "rolled_back"
STATUS_TAG = "mlops.deploy.status"


def deployment_dir(settings: Settings, version: str) -> Path:
    """Per-version working files of the release steps (canary analysis, decisions)."""
    return settings.data_root / "deployments" / settings.model_name / f"v{version}"


def _ledger_append(settings: Settings, entry: dict[str, Any]) -> None:
    """Append one decision; O_APPEND keeps concurrent writers' lines whole."""
    path = settings.ledger_path
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_ledger(settings: Settings) -> list[dict[str, Any]]:
    path = settings.ledger_path
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_name": name,
        "version": version,
        "decision": status,
        "reason": reason,
        "dag_id": os.environ.get("MLOPS_AIRFLOW_DAG_ID"),
        "dag_run_id": os.environ.get("MLOPS_AIRFLOW_RUN_ID"),
        "data_sha256": tags.get("mlops.data_sha256"),
        "image_ref": tags.get("mlops.image.ref"),
        **extra,
    }
    already = any(
        e.get("version") == version and e.get("decision") == status for e in read_ledger(settings)
    )
    if not already:
        _ledger_append(settings, entry)
    for key, value in {
        STATUS_TAG: status,
        "mlops.deploy.reason": reason[:4000],
        "mlops.deploy.approved_by": str(extra.get("approved_by") or ""),
        "mlops.deploy.dag_run_id": str(entry["dag_run_id"] or ""),
        "mlops.deploy.decided_at": entry["time"],
    }.items():
        client.set_model_version_tag(name, version, key, value)
    return entry


def analysis_result(settings: Settings, version: str) -> dict[str, Any] | None:
    path = deployment_dir(settings, version) / "analysis.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(settings: Settings, version: str, step: str, result: dict[str, Any]) -> None:
    path = deployment_dir(settings, version) / f"{step}.json"
    atomic_write_bytes(path, json.dumps(result, sort_keys=True, indent=2, default=str).encode())

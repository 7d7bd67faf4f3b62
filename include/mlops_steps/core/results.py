"""How a step hands its result to Airflow: the last stdout line, and the pod's XCom file.

Both runners read ``MLOPS_RESULT {json}`` from the step's stdout (the local runner directly, the
Kubernetes runner through the pod log); inside a pod with the XCom sidecar the same JSON is also
written where the sidecar reads it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

RESULT_MARKER = "MLOPS_RESULT "
# Mounted by the KubernetesPodOperator's XCom sidecar when do_xcom_push is on.
KUBERNETES_XCOM_DIR = Path("/airflow/xcom")


def strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None: XComs go through Airflow's API server (and the
    pod's return.json through the KPO sidecar) as strict JSON, which has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def emit_result(result: dict[str, Any]) -> None:
    payload = json.dumps(strict_json(result), sort_keys=True, default=str, allow_nan=False)
    if KUBERNETES_XCOM_DIR.is_dir():
        (KUBERNETES_XCOM_DIR / "return.json").write_text(payload)
    sys.stdout.write(f"{RESULT_MARKER}{payload}\n")
    sys.stdout.flush()

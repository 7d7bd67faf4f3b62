"""The environment names the step package's settings read, for the tests that check each name
a deployment file declares (airflow_settings.yaml, the Helm values) is one the pipeline reads."""

from __future__ import annotations

import functools
import re
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "include" / "mlops_steps" / "core"


@functools.cache
def names_read_by_core() -> frozenset[str]:
    """Every quoted upper-case name in core/'s sources (core/settings.py reads each setting by
    its literal name: ``_env_str("MLOPS_X", ...)``)."""
    sources = "".join(path.read_text() for path in sorted(CORE.rglob("*.py")))
    return frozenset(re.findall(r"\"([A-Z][A-Z0-9_]+)\"", sources))

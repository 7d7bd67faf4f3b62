"""What several benchmarks need alike: a copy of the churn contract under another model name
(each phase its own registry entry, partitions and runs), and a process's own peak RSS."""

from __future__ import annotations

import re
import resource
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_churn_contract(directory: Path, name: str, *, repo: Path = REPO, extra: str = "") -> Path:
    """``repo``'s churn contract as ``directory/<name>.yaml`` (named ``name``), with ``extra``
    YAML appended (e.g. a training policy); returns ``directory`` for MLOPS_MODELS_DIR."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (repo / "models" / "churn.yaml").read_text()
    text = re.sub(r"(?m)^name: churn$", f"name: {name}", text, count=1)
    (directory / f"{name}.yaml").write_text(text + extra)
    return directory


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's own high-water RSS in MB (``VmHWM``: exec starts a fresh one, unlike
    ``ru_maxrss``, which also counts the pages of the parent that forked it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    if pid == "self":  # no VmHWM line: not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    raise ValueError(f"/proc/{pid}/status has no VmHWM")

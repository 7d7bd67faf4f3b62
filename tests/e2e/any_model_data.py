"""A new user's side of the "any model" story: scikit-learn's bundled tables written to CSV, a
contract drafted with the installed ``mlops-step contract infer``, edited as a person would (a
hard limit they know, fewer boosting rounds) and checked with ``mlops-step contract check``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

MLOPS_STEP = Path(sys.executable).parent / "mlops-step"
#: Few boosting rounds: these tables are small and the module's wall time matters.
TRAINING_EDIT = "  max_rounds: 150\n  learning_rate: 0.1\n"


@dataclass(frozen=True)
class Dataset:
    """One of scikit-learn's tables as a user's model."""

    model: str  # the model (and contract) name
    loader: str  # the sklearn.datasets function
    task: str
    limited: str  # the feature a person gives a hard limit
    limits: str  # that limit, as YAML
    impossible: float  # a value of ``limited`` beyond it
    violation: str  # how the service's 422 names the broken bound
    metric: str  # the hold-out metric asserted with ``floor``
    floor: float

    def frame(self) -> pd.DataFrame:
        import sklearn.datasets

        load: Callable[..., Any] = getattr(sklearn.datasets, self.loader)
        frame: pd.DataFrame = load(as_frame=True).frame
        return frame


DATASETS = {
    "binary": Dataset(
        model="byo_breast_cancer",
        loader="load_breast_cancer",
        task="binary",
        limited="mean radius",  # a radius is never negative
        limits="{min: 0.0}",
        impossible=-3.0,
        violation="greater_than_equal",
        metric="auc",
        floor=0.95,
    ),
    "multiclass": Dataset(
        model="byo_wine",
        loader="load_wine",
        task="multiclass",
        limited="alcohol",  # percent by volume
        limits="{min: 0.0, max: 100.0}",
        impossible=140.0,
        violation="less_than_equal",
        metric="accuracy",
        floor=0.85,
    ),
    "regression": Dataset(
        model="byo_diabetes",
        loader="load_diabetes",
        task="regression",
        # scikit-learn scales each column to unit sum of squares: |x| <= 1 by construction
        limited="bmi",
        limits="{min: -1.0, max: 1.0}",
        impossible=5.0,
        violation="less_than_equal",
        metric="r2",
        floor=0.25,
    ),
}


def run_step(*args: str, models_dir: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``mlops-step`` as a user runs it, with MLOPS_MODELS_DIR set."""
    env = {**os.environ, "MLOPS_MODELS_DIR": str(models_dir)}
    env.pop("MLOPS_MODEL_NAME", None)
    return subprocess.run(
        [str(MLOPS_STEP), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def infer(source: Path, dataset: Dataset, models_dir: Path) -> Path:
    """``mlops-step contract infer``; the path it prints, which must hold the draft."""
    done = run_step(
        "contract", "infer",
        "--source", str(source), "--label", "target", "--task", dataset.task,
        "--name", dataset.model,
        models_dir=models_dir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip().splitlines()[0])
    assert path == models_dir / f"{dataset.model}.yaml", done.stdout
    return path


def set_hard_limit(path: Path, feature: str, limits: str) -> None:
    """Replace the draft's commented ``limits`` line of ``feature`` by a decided one, as a
    person settling that DECIDE would."""
    text = path.read_text()
    pattern = re.compile(
        rf"(  - name: {re.escape(feature)}\n(?:    (?!# limits).*\n)*)    # limits: .*\n"
    )
    decided = f"    limits: {limits}  # decided: impossible beyond\n"
    edited, count = pattern.subn(lambda match: match.group(1) + decided, text)
    assert count == 1, f"no commented limits line for {feature!r} in {path}"
    path.write_text(edited)


def fewer_rounds(path: Path) -> None:
    """Fewer, larger boosting steps in the contract's training section."""
    text = path.read_text()
    if "\ntraining:\n" in text:
        text = text.replace("\ntraining:\n", "\ntraining:\n" + TRAINING_EDIT, 1)
    else:
        text += "\ntraining:\n" + TRAINING_EDIT
    path.write_text(text)


def check(dataset: Dataset, models_dir: Path) -> str:
    """``mlops-step contract check``: exit 0 and what the DAGs will be."""
    done = run_step("contract", "check", dataset.model, models_dir=models_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout


def feature_records(frame: pd.DataFrame, rows: int) -> list[dict[str, Any]]:
    """Request bodies' ``features`` from the table's first rows (the label left out); a blank
    cell is a JSON null."""
    features = frame.drop(columns=["target"]).head(rows).astype(object)
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in features.to_dict(orient="records")
    ]

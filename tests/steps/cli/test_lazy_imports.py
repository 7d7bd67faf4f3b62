"""Every step is its own process, so what it imports is start-up paid by every task of every run
(MLflow about 3 s, Great Expectations about 6 s, Evidently about 5 s). These tests guard which
libraries each verb loads, without timing anything: a fresh interpreter reports its sys.modules.

* Parsing any verb's command line (``--help``) loads none of the ML libraries, nor any stage's
  step module: a verb pays only for its own handler.
* Each training verb, run for real on a small partition against a real MLflow server, loads
  the libraries it uses and none of those it does not (``validate`` and ``gate`` talk to MLflow
  over plain REST: they never load it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries a step must not load unless it uses them.
HEAVY = frozenset(
    {
        "boto3", "evidently", "great_expectations", "kubernetes", "lightgbm", "matplotlib",
        "mlflow", "pandas", "pyarrow", "scipy", "sklearn",
    }
)  # fmt: skip

#: What each training verb loads when it runs (the first run of a model: no champion yet).
USES = {
    "ingest": {"pandas", "pyarrow"},
    "validate": {"great_expectations", "pandas", "pyarrow"},
    "train": {"lightgbm", "matplotlib", "mlflow", "pandas", "pyarrow", "sklearn"},
    "evaluate": {"lightgbm", "mlflow", "pandas", "pyarrow", "sklearn"},
    "gate": set(),
    "register": {"mlflow"},
}
#: Libraries a verb may load through another one it uses (MLflow loads pandas and scipy, Great
#: Expectations scipy and boto3), or through a module it shares with the others
#: (common/storage.py loads pandas at import: gate and register do not use it).
INCIDENTAL = {
    "validate": {"boto3", "scipy"},
    "train": {"scipy"},
    "evaluate": {"scipy"},
    "gate": {"pandas", "pyarrow"},
    "register": {"pandas", "pyarrow", "scipy"},
}

_PROBE = """
import atexit, json, sys
out, argv = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from mlops_steps.cli.main import main
sys.exit(main(argv))
"""


def _top_level(modules: list[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def _run_probed(argv: list[str], out: Path) -> tuple[int, set[str], str]:
    """(exit code, top-level modules loaded, stderr) of ``mlops-step argv`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *argv],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, _top_level(json.loads(out.read_text())), done.stderr[-3000:]


def test_parsing_any_verb_loads_no_ml_library_and_no_step_module(tmp_path: Path) -> None:
    code = """
import contextlib, io, json, sys
from mlops_steps.cli.main import build_parser, main
from mlops_steps.core.settings import load_settings
parser = build_parser(load_settings())
verbs = sorted(next(a for a in parser._actions if a.dest == "verb").choices)
for verb in verbs:
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
        main([verb, "--help"])
print(json.dumps({"verbs": verbs, "modules": sorted(sys.modules)}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"ingest", "validate", "train", "monitor", "promote", "score-batch"} <= set(
        report["verbs"]
    )
    assert _top_level(report["modules"]) & HEAVY == set()
    step_modules = tuple(
        f"mlops_steps.{stage}."
        for stage in ("training", "release", "monitoring", "scoring", "common")
    )
    assert [m for m in report["modules"] if m.startswith(step_modules)] == []


@pytest.mark.usefixtures("tracking")
def test_each_training_verb_loads_only_the_libraries_it_uses(tmp_path: Path) -> None:
    partition = "imports"
    runs = [
        ["ingest", "--rows", "3000", "--seed", "3"],
        ["validate"],
        ["train"],
        ["evaluate", "--bootstrap-resamples", "20"],
        ["gate", "--max-latency-ms", "1000"],  # latency is not what this test judges
        ["register"],
    ]
    for verb, *args in runs:
        code, loaded, stderr = _run_probed(
            ["--log-level", "WARNING", verb, "--partition", partition, *args],
            tmp_path / f"{verb}.json",
        )
        assert code == 0, f"{verb} exited {code}:\n{stderr}"
        heavy = loaded & HEAVY
        assert heavy >= USES[verb], f"{verb} no longer loads {USES[verb] - heavy}"
        unused = heavy - USES[verb] - INCIDENTAL.get(verb, set())
        assert unused == set(), f"{verb} loads {sorted(unused)} without using them"

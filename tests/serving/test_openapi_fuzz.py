"""The service's OpenAPI document against its answers: schemathesis, with every check, runs
against a real service process over loopback serving a binary, a multiclass and a regression
model (trained here from scikit-learn's tables), admin routes with the token. It must find no
server error and no difference between the document and the answers.

The registry is the session's real MLflow server (where these models are not registered: a
canary ref names nothing there, a 404; a 5xx would be an outage of the registry)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.service_process import Service
from tests.serving import sklearn_models
from tests.serving.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.serving

ROOT = Path(__file__).resolve().parents[2]
MAX_BATCH_ROWS = 25
EXAMPLES = 60  # per operation and phase


@pytest.mark.parametrize("name", list(sklearn_models.TASKS))
def test_schemathesis_finds_no_server_error_and_no_mismatch(
    name: str,
    mlflow_server: str,
    service_starter: Callable[..., Service],
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    sklearn_models.build(name, store, tmp_path)
    service = service_starter(
        mlflow_server,
        model_name=name,
        admin_token=ADMIN_TOKEN,
        SERVING_MODEL_STORE=str(store),
        SERVING_STABLE_ALIAS="bundle:current",
        SERVING_MAX_BATCH_ROWS=str(MAX_BATCH_ROWS),
    )
    assert service.process.poll() is None, service.output.read_text()[-3000:]
    # A rejection is any 4xx the document declares for it (413: more rows than the batch limit);
    # never a 5xx, unlike schemathesis' default.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.negative_data_rejection]\n"
        "expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n"
    )
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.serving.fuzz_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
         "run", f"{service.url}/openapi.json",
         "--checks", "all", "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
         "--max-examples", str(EXAMPLES), "--workers", "1", "--seed", "14",
         "--no-color", "--report-dir", str(tmp_path / "report")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    assert "failures" not in output.split("SUMMARY")[-1].lower(), output[-8000:]
    assert service.process.poll() is None

"""Start or stop the local MLflow tracking server (SQLite backend, local artifacts, loopback).

Used by the main job (``make demo``) and by ``make mlflow``; the tests start their own server on a
free port through the same :func:`start_server`. The distributed profile
(scripts/distributed_stack.py) starts it on PostgreSQL with artifacts in an S3 bucket.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from processes import free_port, stop_process_groups

__all__ = ["MlflowServer", "free_port", "is_healthy", "start_server", "stop_pid"]

STARTUP_TIMEOUT_S = 180.0
#: Seconds the server caches its webhook list per event (MLflow's default is 60 s, so a webhook
#: registered just after an event of its kind would stay silent for up to a minute).
WEBHOOK_CACHE_TTL_S = 2
#: The interpreter that runs ``mlflow server`` when it is not this one: a venv of the task image's
#: requirements (mlflow-skinny) has the client but no server, so its test runs name another.
SERVER_PYTHON_ENV = "MLFLOW_SERVER_PYTHON"


@dataclass(frozen=True)
class MlflowServer:
    url: str
    pid: int
    log_path: Path


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def webhook_encryption_key(home: Path) -> str:
    """A Fernet key kept beside the store, so webhook secrets stay readable across restarts
    (without one, MLflow makes a new key per process and stored secrets become garbage)."""
    path = home / "webhook-secret-encryption.key"
    if not path.is_file():
        from cryptography.fernet import Fernet

        path.touch(mode=0o600)
        path.write_bytes(Fernet.generate_key())
    return path.read_text().strip()


def start_server(
    home: Path,
    port: int,
    *,
    python: str | None = None,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` under ``home`` and wait until /health answers (run by ``python``,
    else $MLFLOW_SERVER_PYTHON, else this interpreter). The store is SQLite and the artifacts a
    directory under ``home`` unless ``backend_store_uri`` / ``artifacts_destination`` name
    others (e.g. PostgreSQL, ``s3://bucket/prefix`` with the S3 endpoint and keys in
    ``extra_env``, which the server process gets on top of this one's environment)."""
    python = python or os.environ.get(SERVER_PYTHON_ENV) or sys.executable
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    log_path = home / "mlflow-server.log"
    env = {
        **os.environ,
        # One worker: the server idles most of the time and start-up is much faster.
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": os.environ.get(
            "MLFLOW_WEBHOOK_CACHE_TTL", str(WEBHOOK_CACHE_TTL_S)
        ),
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": os.environ.get(
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
        )
        or webhook_encryption_key(home),
        **dict(extra_env or {}),
    }
    command = [
        python, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", backend_store_uri or f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination", artifacts_destination or str(home / "artifacts"),
        "--serve-artifacts",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not is_healthy(url):
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            stop_pid(process.pid)
            raise RuntimeError(f"mlflow server not healthy after {STARTUP_TIMEOUT_S}s; {log_path}")
        time.sleep(0.5)
    return MlflowServer(url=url, pid=process.pid, log_path=log_path)


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """Stop the server's process group (uvicorn/gunicorn workers included) by its own PID."""
    stop_process_groups([pid], timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--home", type=Path, default=Path(".mlops/mlflow"))
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    pid_file = args.home / "server.pid"
    url = f"http://127.0.0.1:{args.port}"
    if args.action == "start":
        if is_healthy(url):
            print(f"MLflow already answering at {url}")
            return 0
        server = start_server(args.home, args.port)
        pid_file.write_text(str(server.pid))
        print(f"MLflow UI: {server.url} (pid {server.pid}, log {server.log_path})")
        return 0
    if args.action == "stop":
        if pid_file.is_file():
            stop_pid(int(pid_file.read_text()))
            pid_file.unlink()
            print("MLflow server stopped")
        return 0
    print(f"MLflow at {url}: {'healthy' if is_healthy(url) else 'not answering'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the model service against `mlflow models serve` and a bare FastAPI endpoint.

One run, one machine, one LightGBM model (trained and registered here by the project's own steps),
three servers, each alone on the machine while it is measured, each with one uvicorn worker:

* ``service``: this project's service with everything on (validation from the feature spec,
  Prometheus metrics, canary routing at 10 %, the prediction log writing to disk);
* ``mlflow``: ``mlflow models serve`` of the same registered version (what a user would pick);
* ``bare``: FastAPI + the same booster, no validation/metrics/routing/log (``bench/bare_app.py``):
  the floor for this stack.

Load comes from ``wrk`` on loopback: 1-row and 100-row requests at 1, 8 and 32 connections, and
10,000-row batches for throughput. The machine is shared and noisy, so the results that matter are
the ratios between servers measured minutes apart in the same run, not the absolute numbers.

Usage: python bench/bench_serving.py [--duration 10]   (needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from mlflow_server import free_port, start_server, stop_pid  # noqa: E402

MODEL = "bench_churn"
POINTS = [(1, 1), (1, 8), (1, 32), (100, 1), (100, 8), (100, 32)]
BATCH_ROWS = 10_000
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _records(rows: int) -> list[dict[str, Any]]:
    from mlops_steps.schema import FEATURE_NAMES
    from mlops_steps.synthetic import generate_churn

    frame = generate_churn(rows, seed=7).loc[:, list(FEATURE_NAMES)]
    return json.loads(frame.to_json(orient="records"))


def _body(server: str, records: list[dict[str, Any]]) -> tuple[str, bytes]:
    """Endpoint and body for ``records`` in each server's own request format."""
    if server == "mlflow":
        return "/invocations", json.dumps({"dataframe_records": records}).encode()
    if len(records) == 1:
        return "/predict", json.dumps({"features": records[0], "entity_id": "C1"}).encode()
    return "/predict/batch", json.dumps({"instances": records}).encode()


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


@contextmanager
def _server(name: str, mlflow_url: str, home: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url,
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--no-access-log", "--log-level", "warning"]  # fmt: skip
    if name == "service":
        command = [*uvicorn, "--factory", "mlops_serving.app:create_app"]
        env.update(
            SERVING_MODEL_NAME=MODEL,
            SERVING_STABLE_ALIAS="champion",
            SERVING_CANARY_REF="challenger",
            SERVING_CANARY_WEIGHT="0.1",
            SERVING_ADMIN_TOKEN=secrets.token_hex(16),
            SERVING_PREDICTION_LOG=str(home / "predictions"),
            SERVING_MAX_BATCH_ROWS=str(BATCH_ROWS),
        )
        ready = "/ready"
    elif name == "bare":
        import mlflow.artifacts

        mlflow.set_tracking_uri(mlflow_url)  # models:/ URIs resolve through the registry
        model_dir = mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}@champion", dst_path=str(home / "bare-model")
        )
        command = [*uvicorn, "bare_app:app", "--app-dir", str(REPO / "bench")]
        env["BARE_MODEL_DIR"] = model_dir
        ready = "/docs"
    else:
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                   f"models:/{MODEL}@champion", "--env-manager", "local", "--host", "127.0.0.1",
                   "-p", str(port), "--workers", "1"]  # fmt: skip
        ready = "/ping"
    url = f"http://127.0.0.1:{port}"
    with (home / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait(url + ready, process)
        yield url
    finally:
        stop_pid(process.pid)


def _wrk(url: str, path: str, body: bytes, *, connections: int, duration: int, home: Path) -> dict:
    script = home / "request.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    completed = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         url + path],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    )  # fmt: skip
    out = completed.stdout

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()
        return round(float(value) * _UNITS[unit], 3)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.+)", out)
    return {
        "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def _prepare(mlflow_url: str, home: Path) -> None:
    from mlflow import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url, "MLOPS_HOME": str(home / "mlops"),
           "MLOPS_MODEL_NAME": MODEL, "MLOPS_EXPERIMENT": "bench-serving"}  # fmt: skip
    for verb, *args in (["ingest", "--rows", "20000"], ["validate"], ["train"], ["evaluate"],
                        ["gate"], ["register"]):  # fmt: skip
        subprocess.run(["mlops-step", "--log-level", "WARNING", verb, "--partition", "bench",
                        *args], env=env, check=True, capture_output=True)  # fmt: skip
    MlflowClient(mlflow_url).set_registered_model_alias(MODEL, "champion", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, choices=range(2, 21), metavar="2..20")
    parser.add_argument("--servers", nargs="+", default=["service", "mlflow", "bare"])
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "serving.json")
    parser.add_argument("--render", action="store_true", help="print the tables of --output")
    args = parser.parse_args()
    if args.render:
        print(_markdown(json.loads(args.output.read_text())))
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (or: make bench-serving)")
        return 2
    bodies = {rows: _records(rows) for rows in (1, 100, BATCH_ROWS)}
    report: dict[str, Any] = {"duration_s": args.duration, "points": {}, "batch": {}}
    with tempfile.TemporaryDirectory(prefix="mlops-bench-serving-") as tmp:
        home = Path(tmp)
        mlflow_server = start_server(home / "mlflow", free_port())
        try:
            _prepare(mlflow_server.url, home)
            for server in args.servers:
                with _server(server, mlflow_server.url, home) as url:
                    path, body = _body(server, bodies[1])
                    _wrk(url, path, body, connections=8, duration=2, home=home)  # warm-up
                    for rows, connections in POINTS:
                        path, body = _body(server, bodies[rows])
                        result = _wrk(
                            url,
                            path,
                            body,
                            connections=connections,
                            duration=args.duration,
                            home=home,
                        )
                        report["points"].setdefault(f"{rows}x{connections}", {})[server] = result
                        print(f"{server:8} rows={rows:<4} c={connections:<3} {result}", flush=True)
                    path, body = _body(server, bodies[BATCH_ROWS])
                    result = _wrk(url, path, body, connections=1, duration=args.duration, home=home)
                    result["rows_per_s"] = round(result["rps"] * BATCH_ROWS)
                    report["batch"][server] = result
                    print(f"{server:8} batch of {BATCH_ROWS}: {result}", flush=True)
        finally:
            stop_pid(mlflow_server.pid)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(_markdown(report))
    return 0


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "| rows/request | connections | service req/s (p50/p99 ms) | mlflow serve | bare "
        "| service / mlflow | service / bare |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point, results in report["points"].items():
        rows, connections = point.split("x")
        cells = []
        for server in ("service", "mlflow", "bare"):
            r = results.get(server)
            flag = " ⚠ errors" if r and (r["non_2xx"] or r["socket_errors"]) else ""
            cells.append(f"{r['rps']:,.0f} ({r['p50_ms']}/{r['p99_ms']}){flag}" if r else "-")
        service, mlflow, bare = (
            results.get(s, {}).get("rps") for s in ("service", "mlflow", "bare")
        )
        ratio_m = f"{service / mlflow:.1f}x" if service and mlflow else "-"
        ratio_b = f"{service / bare:.2f}x" if service and bare else "-"
        lines.append(
            f"| {rows} | {connections} | " + " | ".join(cells) + f" | {ratio_m} | {ratio_b} |"
        )
    lines += [
        "",
        f"| {BATCH_ROWS:,}-row batches, 1 connection | rows/s | p99 ms |",
        "|---|---:|---:|",
    ]
    for server, r in report["batch"].items():
        lines.append(f"| {server} | {r['rows_per_s']:,} | {r['p99_ms']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

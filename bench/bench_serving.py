"""Benchmark: the model service against `mlflow models serve` and a bare FastAPI endpoint.

One run, one machine, one LightGBM model (trained and registered here by the project's own steps),
three servers, each alone on the machine while it is measured, each with one uvicorn worker:

* ``service``: this project's service with everything on (validation from the feature spec,
  Prometheus metrics, canary routing at 10 %, the prediction log writing to disk);
* ``mlflow``: ``mlflow models serve`` of the same registered version (what a user would pick);
* ``bare``: FastAPI + the same booster, no validation/metrics/routing/log (``bench/bare_app.py``):
  the floor for this stack;
* ``service-parquet``: the service again, its prediction log written as Parquet instead of JSON
  lines (``SERVING_PREDICTION_LOG_FORMAT=parquet``): the writer's format must not show in the
  service's numbers (``service-parquet / service``).

Load comes from ``wrk`` on loopback: 1-row and 100-row requests at 1, 8 and 32 connections, and
10,000-row batches at 1 connection for throughput (rows/s = req/s x 10,000). Each point reports
req/s and the p50/p99 latency; a point where wrk saw non-2xx responses or socket errors (timeouts
included) is flagged, because its numbers do not measure successful predictions. Before the load,
every server answers one 1-row and one 100-row request, and the scores must agree across servers:
the comparison is only fair if all three serve the same model.

The machine is shared and noisy (2 cores, wrk shares them with the server), so the results that
matter are the ratios between servers measured minutes apart in the same run (``service / mlflow``
and ``service / bare`` req/s), not the absolute numbers.

Usage: python bench/bench_serving.py [--duration 10] [--servers service service-parquet mlflow bare]
(needs ``wrk``: apt-get update && apt-get install -y wrk, or ``make bench-serving``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bench_support import write_churn_contract
from log_writer_report import PARQUET_SERVICE, log_writer_ratios, render_log_writers
from serving_report import render_markdown
from wrk_load import WRK_CPU, WRK_TIMEOUT_S, BenchError, WrkResult, run_wrk

REPO = Path(__file__).resolve().parents[1]
# `mlops-step` of this interpreter (its venv need not be on PATH)
MLOPS_STEP = (sys.executable, "-m", "mlops_steps")
sys.path.insert(0, str(REPO / "scripts"))

from mlflow_server import free_port, start_server, stop_pid  # noqa: E402

MODEL = "bench_churn"
SERVERS = ("service", "mlflow", "bare")
# the service, and the service with its prediction log as Parquet
SERVICES = (SERVERS[0], PARQUET_SERVICE)
CHOICES = (*SERVICES, *SERVERS[1:])
POINTS = [(1, 1), (1, 8), (1, 32), (100, 1), (100, 8), (100, 32)]
BATCH_ROWS = 10_000
WARMUP_S = 2
MAX_DURATION_S = 20
READY_TIMEOUT_S = 300.0
STEPS = (
    ("ingest", "--rows", "20000"),
    ("validate",),
    ("train",),
    ("evaluate",),
    # The gate's per-row latency limit is not what this bench measures (a loaded machine fails it).
    ("gate", "--max-latency-ms", "1000"),
    ("register",),
)
INSTALL_WRK = "apt-get update && apt-get install -y wrk"


# --- request bodies ----------------------------------------------------------------------------


def make_records(rows: int, seed: int = 7) -> list[dict[str, Any]]:
    """``rows`` fixed feature rows as plain JSON values (numpy types converted by json)."""
    from mlops_steps.contract.loader import load_contract
    from mlops_steps.contract.synthetic import generate_churn

    FEATURE_NAMES = load_contract("churn").feature_names

    frame = generate_churn(rows, seed=seed).loc[:, list(FEATURE_NAMES)]
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def request_for(server: str, records: list[dict[str, Any]]) -> tuple[str, bytes]:
    """Endpoint path and body for ``records`` in ``server``'s own request format."""
    if server == "mlflow":
        return "/invocations", json.dumps({"dataframe_records": records}).encode()
    # the service (either log format) and bare take the service's bodies
    if len(records) == 1:
        return "/predict", json.dumps({"entity_id": "C1", "features": records[0]}).encode()
    return "/predict/batch", json.dumps({"instances": records}).encode()


def scores_of(server: str, payload: Any) -> list[float]:
    """The scores in a response of ``server`` (mlflow: ``predictions``; ours: score/scores)."""
    if server == "mlflow":
        values = payload["predictions"]
    elif "scores" in payload:
        values = payload["scores"]
    else:
        values = [payload["score"]]
    return [float(next(iter(v.values())) if isinstance(v, dict) else v) for v in values]


def post_json(url: str, body: bytes, timeout: float = 60.0) -> Any:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


# --- processes ---------------------------------------------------------------------------------


def start_process(
    command: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session, so :func:`stop_pid` stops it and its children."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll ``url`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"exited with {process.returncode} before {url} answered; {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise BenchError(f"{url} not ready after {READY_TIMEOUT_S:.0f}s; {log_path}")


def _uvicorn(port: int, *app: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", *app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--no-access-log", "--log-level", "warning"]  # fmt: skip


@contextmanager
def running_server(name: str, mlflow_url: str, home: Path) -> Iterator[str]:
    """Start server ``name`` on a free loopback port, yield its URL once ready, then stop it."""
    port = free_port()
    # `mlflow models serve` starts its server by name (uvicorn): this interpreter's bin first.
    path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url, "PATH": path}
    if name in SERVICES:
        command = _uvicorn(port, "--factory", "mlops_serving.app:create_app")
        if name == PARQUET_SERVICE:
            env["SERVING_PREDICTION_LOG_FORMAT"] = "parquet"
        env.update(
            SERVING_MODEL_NAME=MODEL,
            SERVING_STABLE_ALIAS="champion",
            SERVING_CANARY_REF="challenger",
            SERVING_CANARY_WEIGHT="0.1",
            SERVING_ADMIN_TOKEN=secrets.token_hex(16),  # 32 characters
            SERVING_PREDICTION_LOG=str(home / f"predictions-{name}"),
            SERVING_MAX_BATCH_ROWS=str(BATCH_ROWS),
        )
        ready = "/ready"
    elif name == "bare":
        import mlflow.artifacts

        mlflow.set_tracking_uri(mlflow_url)  # models:/ URIs resolve through the registry
        model_dir = mlflow.artifacts.download_artifacts(
            f"models:/{MODEL}@champion", dst_path=str(home / "bare-model")
        )
        command = _uvicorn(port, "bare_app:app", "--app-dir", str(REPO / "bench"))
        env["BARE_MODEL_DIR"] = model_dir
        ready = "/ping"
    elif name == "mlflow":
        command = [sys.executable, "-m", "mlflow", "models", "serve",
                   "-m", f"models:/{MODEL}@champion", "--env-manager", "local",
                   "--host", "127.0.0.1", "-p", str(port), "--workers", "1"]  # fmt: skip
        ready = "/ping"
    else:
        raise ValueError(f"unknown server {name!r}")
    url = f"http://127.0.0.1:{port}"
    log_path = home / f"{name}.log"
    process = start_process(command, env, log_path)
    try:
        wait_ready(url + ready, process, log_path)
        yield url
    finally:
        stop_pid(process.pid)


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks: servers are stopped, wrk is killed.
    raise SystemExit(128 + signum)


# --- preparation -------------------------------------------------------------------------------


def train_and_register(mlflow_url: str, home: Path) -> None:
    """Train and register the model with the project's step CLI; alias version 1 "champion"."""
    from mlflow import MlflowClient

    # The churn contract under the bench model's name: its own registry entry and partitions.
    models = write_churn_contract(home / "models", MODEL)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_url, "MLOPS_HOME": str(home / "mlops"),
           "MLOPS_MODELS_DIR": str(models), "MLOPS_MODEL_NAME": MODEL,
           "MLOPS_EXPERIMENT": "bench-serving"}  # fmt: skip
    for verb, *flags in STEPS:
        started = time.monotonic()
        step = subprocess.run(
            [*MLOPS_STEP, "--log-level", "WARNING", verb, "--partition", "bench", *flags],
            env=env, check=False, capture_output=True, text=True,
        )  # fmt: skip
        if step.returncode != 0:
            tail = "\n".join((step.stdout + step.stderr).strip().splitlines()[-30:])
            raise BenchError(f"mlops-step {verb} exited with {step.returncode}:\n{tail}")
        print(f"  mlops-step {verb}: {time.monotonic() - started:.1f}s", flush=True)
    MlflowClient(mlflow_url).set_registered_model_alias(MODEL, "champion", "1")


# --- measurement -------------------------------------------------------------------------------


def check_answers(server: str, url: str, bodies: dict[int, list[dict[str, Any]]]) -> list[float]:
    """One 1-row and one 100-row request must succeed; returns the scores (for cross-checks)."""
    scores: list[float] = []
    for rows in (1, 100):
        path, body = request_for(server, bodies[rows])
        try:
            got = scores_of(server, post_json(url + path, body))
        except (urllib.error.URLError, OSError, KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"{server} {path} with {rows} row(s) failed: {exc}") from exc
        if len(got) != rows:
            raise BenchError(f"{server} {path}: {len(got)} scores for {rows} row(s)")
        scores += got
    return scores


def measure(
    server: str,
    url: str,
    bodies: dict[int, list[dict[str, Any]]],
    *,
    duration: int,
    home: Path,
    report: dict[str, Any],
) -> None:
    """Warm up, then run every (rows, connections) point and the batch point against ``url``."""
    path, body = request_for(server, bodies[1])
    run_wrk(url + path, body, connections=8, duration=WARMUP_S, home=home)
    for rows, connections in POINTS:
        path, body = request_for(server, bodies[rows])
        result = run_wrk(url + path, body, connections=connections, duration=duration, home=home)
        report["points"].setdefault(f"{rows}x{connections}", {})[server] = result.to_json()
        _progress(f"{server:8} rows={rows:<4} c={connections:<3}", result)
    path, body = request_for(server, bodies[BATCH_ROWS])
    result = run_wrk(url + path, body, connections=1, duration=duration, home=home)
    report["batch"][server] = {**result.to_json(), "rows_per_s": round(result.rps * BATCH_ROWS)}
    _progress(f"{server:8} batch of {BATCH_ROWS}", result)


def service_log_counters(url: str) -> dict[str, int]:
    """Rows the service scored and prediction-log rows it dropped, from its /metrics: "all
    features on" only counts if the log kept up with the load."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:  # loopback only
        text = response.read().decode()
    totals = {"rows_scored": 0.0, "log_rows_dropped": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serving_predicted_rows_total":
                totals["rows_scored"] += sample.value
            elif sample.name == "serving_prediction_log_dropped_rows_total":
                totals["log_rows_dropped"] += sample.value
    return {key: int(value) for key, value in totals.items()}


def count_logged(directory: Path) -> int:
    """Rows in the prediction log: JSON lines (read in blocks: a run writes gigabytes) and
    Parquet rows (from each file's footer)."""
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(path).num_rows for path in directory.glob("date=*/*.parquet"))
    for path in directory.glob("date=*/*.jsonl"):
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                rows += block.count(b"\n")
    return rows


def _progress(label: str, r: WrkResult) -> None:
    flag = f"  !! FLAGGED: non-2xx {r.non_2xx}, socket {r.socket_errors}" if r.flagged else ""
    print(f"{label}: {r.rps:>9,.1f} req/s  p50 {r.p50_ms} ms  p99 {r.p99_ms} ms{flag}", flush=True)


def _same_scores(checks: dict[str, list[float]]) -> bool:
    reference = next(iter(checks.values()), [])
    return all(
        all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
            for a, b in zip(reference, s, strict=True)
        )
        for s in checks.values()
    )


def run(servers: list[str], duration: int) -> dict[str, Any]:
    bodies = {rows: make_records(rows) for rows in (1, 100, BATCH_ROWS)}
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "model": f"models:/{MODEL}@champion (version 1)",
        "duration_s": duration,
        "warmup_s": WARMUP_S,
        "wrk": f"-t1 --timeout {WRK_TIMEOUT_S}s --latency"
        + (f", pinned to CPU {WRK_CPU}" if WRK_CPU is not None else ""),
        "servers": servers,
        "points": {},
        "batch": {},
    }
    checks: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mlops-bench-serving-") as tmp:
        home = Path(tmp)
        print("starting MLflow, training and registering the model...", flush=True)
        mlflow_server = start_server(home / "mlflow", free_port())
        try:
            train_and_register(mlflow_server.url, home)
            for server in servers:
                print(f"starting {server}...", flush=True)
                with running_server(server, mlflow_server.url, home) as url:
                    checks[server] = check_answers(server, url, bodies)
                    measure(server, url, bodies, duration=duration, home=home, report=report)
                    if server in SERVICES:
                        counters = service_log_counters(url)
                if server in SERVICES:  # stopped: its log is all written
                    logged = count_logged(home / f"predictions-{server}")
                    log = {**counters, "rows_logged": logged}
                    report.setdefault("prediction_logs", {})[server] = log
                    print(f"{server} prediction log: {log}", flush=True)
        finally:
            stop_pid(mlflow_server.pid)
    report["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["same_scores"] = _same_scores(checks)
    report["log_writer_ratios"] = log_writer_ratios(report)
    if not report["same_scores"]:
        print("!! the servers disagree on the scores of the same rows:", checks, flush=True)
    return report


# --- report ------------------------------------------------------------------------------------


def _duration(raw: str) -> int:
    if not raw.isdigit() or not 2 <= int(raw) <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"{raw!r}: seconds per point, 2 to {MAX_DURATION_S}")
    return int(raw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=_duration,
        default=10,
        metavar=f"2..{MAX_DURATION_S}",
        help="seconds of load per point (default 10)",
    )
    parser.add_argument("--servers", nargs="+", choices=CHOICES, default=list(CHOICES))
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results" / "serving.json")
    parser.add_argument("--render", action="store_true", help="only print the tables of --output")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.output.read_text())
        print(render_markdown(saved, SERVERS, BATCH_ROWS) + "\n\n" + render_log_writers(saved))
        return 0
    if shutil.which("wrk") is None:
        print(f"wrk is not installed; install it with: {INSTALL_WRK}  (or run: make bench-serving)")
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # here and in the servers
    servers = list(dict.fromkeys(args.servers))  # keep the order, drop repeats
    try:
        report = run(servers, args.duration)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {args.output}\n")
    print(render_markdown(report, SERVERS, BATCH_ROWS))
    print("\n" + render_log_writers(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

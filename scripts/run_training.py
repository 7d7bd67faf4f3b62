"""The training DAG alone (``make train``): a real MLflow server and a real Airflow run of the
training DAG through ``dag.test()`` (no scheduler), then a summary of where to look. The whole
lifecycle on a running scheduler is ``make demo`` (scripts/lifecycle.py).

Everything lives under ``.mlops/`` in the checkout (MLflow store, Airflow home, data partitions,
logs). Re-running the same day reuses that day's partition and training run: nothing is registered
twice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from local_airflow import local_airflow_env
from mlflow_server import is_healthy, start_server, stop_pid
from processes import port_or_free

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / ".mlops"


def _run_dag(env: dict[str, str], logical_date: str, conf: dict[str, object], dag_id: str) -> int:
    """Run the DAG, echoing task starts/ends and step errors; the full log goes to a file."""
    log_path = HOME / "logs" / f"{dag_id}-{logical_date[:10]}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # dag.test() as `airflow dags test` runs it (see scripts/dag_test.py for why not the CLI).
    command = [sys.executable, str(Path(__file__).with_name("dag_test.py")), dag_id,
               logical_date, "--conf", json.dumps(conf)]  # fmt: skip
    print(f"==> dag.test {dag_id} {logical_date} (full log: {log_path})", flush=True)
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if "[DAG TEST] starting task" in line or "[DAG TEST] end task" in line:
                task = line.split("task_id=")[1].split()[0]
                verb = "start" if "starting task" in line else "end  "
                print(f"    {verb} {task:<10} +{time.monotonic() - started:5.1f}s", flush=True)
            elif " ERROR " in line and "mlops_steps" in line:
                message = line.split("mlops_steps: ", 1)[-1].split(" [airflow.", 1)[0]
                print("    " + message.strip()[:400], flush=True)
        code = process.wait()
    if code != 0:
        print(f"!!  the DAG run failed (exit {code}); see {log_path}", flush=True)
    return code


def _summary(mlflow_url: str, partition_key: str, model_name: str) -> None:
    results = HOME / "data" / model_name / f"partition={partition_key}" / "results"

    def result(step: str) -> dict[str, object]:
        path = results / f"{step}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    validate, train, gate, register = (result(s) for s in ("validate", "train", "gate", "register"))
    print("\n==> Summary")
    print(f"    MLflow UI:        {mlflow_url}")
    if train:
        run_url = f"{mlflow_url}/#/experiments/{train['experiment_id']}/runs/{train['run_id']}"
        print(f"    Training run:     {run_url}")
    if validate:
        print(f"    Data Docs:        {validate['data_docs_index']}")
    if gate:
        print(f"    Gate:             {gate['decision']} ({gate['reason']})")
        print(f"    Gate report:      {results / 'gate.json'}")
    if register:
        print(
            f"    Registered:       {register['model_name']} version {register['version']} "
            f"alias @{register['alias']} (created now: {register['created']})"
        )
    print(f"    Registry aliases: {_aliases(mlflow_url, model_name)}")


def _aliases(mlflow_url: str, model_name: str) -> dict[str, str] | str:
    """The model's aliases as the registry has them now (after a rejection: unchanged)."""
    query = urllib.parse.urlencode({"name": model_name})
    url = f"{mlflow_url}/api/2.0/mlflow/registered-models/get?{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            model = json.load(response)["registered_model"]
    except urllib.error.HTTPError as exc:
        return "no registered model yet" if exc.code == 404 else f"HTTP {exc.code}"
    return {a["alias"]: a["version"] for a in model.get("aliases", [])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("MLOPS_MODEL_NAME", "").strip() or "churn",
        help="the model whose training DAG runs (mlops_training__<model>)",
    )
    parser.add_argument("--date", default=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--drift", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT", "5000")))
    parser.add_argument(
        "--keep-running", action="store_true", help="leave MLflow up to browse the UI"
    )
    args = parser.parse_args()
    logical_date = f"{args.date}T00:00:00+00:00"
    partition_key = args.date.replace("-", "") + "T000000"

    url = f"http://127.0.0.1:{args.port}"
    server = None
    if is_healthy(url):
        print(f"==> Using the MLflow server already answering at {url}")
    else:
        port = port_or_free(args.port)
        print(f"==> Starting MLflow on 127.0.0.1:{port} (store: {HOME / 'mlflow'})", flush=True)
        server = start_server(HOME / "mlflow", port)
        url = server.url
    try:
        env = local_airflow_env(HOME, url)
        print("==> Preparing the Airflow metadata database", flush=True)
        (HOME / "airflow").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        conf = {"rows": args.rows, "seed": args.seed, "drift": args.drift}
        code = _run_dag(env, logical_date, conf, f"mlops_training__{args.model}")
        _summary(url, partition_key, args.model)
    finally:
        if server is not None and not args.keep_running:
            stop_pid(server.pid)
            print("\n==> MLflow stopped. Browse the results again with: make mlflow")
        elif server is not None:
            (HOME / "mlflow" / "server.pid").write_text(str(server.pid))
            print(f"\n==> MLflow keeps running at {url}; stop it with: make mlflow-stop")
    return code


if __name__ == "__main__":
    sys.exit(main())

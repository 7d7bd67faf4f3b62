"""A real ``prometheus`` server on a free loopback port, for any test package: a generated config
(one job per name, static targets, a 1 s scrape interval), its own storage directory, stopped
at the end. ``promtool`` for the rule and dashboard checks. Both come from Debian's
``prometheus`` package, which ``make pytest`` installs where it is missing; without them the
tests fail (never skip) and say so."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from mlflow_server import free_port
from tests.service_process import stop_process

INSTALL_HINT = (
    "needs Debian's prometheus package (prometheus and promtool): `make pytest` installs it "
    "(apt-get install -y --no-install-recommends prometheus, as root); elsewhere put both "
    "binaries on PATH"
)
SCRAPE_INTERVAL = "1s"


def binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; the test fails (not skips) without it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: this test {INSTALL_HINT}", pytrace=False)
    return found


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    home: Path
    output: Path

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    def wait_for_scrapes(self, job: str, targets: int, timeout_s: float = 60.0) -> None:
        """Until every target of ``job`` has been scraped at least once and is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            up = self.query(f'up{{job="{job}"}}')
            if len(up) == targets and all(s["value"][1] == "1" for s in up):
                return
            time.sleep(0.2)
        raise AssertionError(f"prometheus did not scrape job {job}: {up}\n{self.log()}")

    def log(self) -> str:
        return self.output.read_text()[-3000:]


def scrape_config(jobs: Mapping[str, Sequence[str]]) -> dict:
    """A Prometheus config with one job per name, scraping ``host:port`` targets' /metrics."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(targets)}],
            }
            for job, targets in jobs.items()
        ],
    }


def host_port(url: str) -> str:
    """``http://127.0.0.1:1234`` -> ``127.0.0.1:1234`` (a scrape target)."""
    return url.split("://", 1)[-1].rstrip("/")


@contextlib.contextmanager
def running_prometheus(home: Path, jobs: Mapping[str, Sequence[str]]) -> Iterator[PrometheusServer]:
    """Prometheus scraping ``jobs`` (job name -> targets), ready when yielded, stopped after."""
    executable = binary("prometheus")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(jobs), sort_keys=False))
    port = free_port()
    output = home / "prometheus.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [executable, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, home, output)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited ({process.returncode}):\n{server.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus was not ready in 60 s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        stop_process(process)

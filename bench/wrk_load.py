"""Load from ``wrk`` on loopback: one point of the serving benchmark, parsed from its ``--latency``
report. wrk runs pinned to its own core where there is one, so the server keeps the other."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# wrk on a core of its own (the last one) when there are two or more: otherwise the scheduler
# moves it onto the server's core mid-point and the numbers measure the two fighting.
_CPUS = os.cpu_count() or 1


WRK_CPU = _CPUS - 1 if _CPUS > 1 and shutil.which("taskset") else None


WRK_TIMEOUT_S = 10  # wrk's default (2 s) would drop slow mlflow responses as "timeouts"


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


_WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what failed and where its log is."""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str | None  # "connect 0, read 0, write 0, timeout 3" when wrk reports any

    @property
    def flagged(self) -> bool:
        return bool(self.non_2xx or self.socket_errors or self.requests == 0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged}


def _match(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        raise BenchError(f"unexpected wrk output (no match for {pattern!r}):\n{text}")
    return found


def parse_wrk(output: str) -> WrkResult:
    """Read req/s, p50/p99 latency (us/ms/s -> ms) and errors from ``wrk --latency`` output."""

    def latency_ms(percent: int) -> float:
        value, unit = _match(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output).groups()
        return round(float(value) * _UNITS_MS[unit], 3)

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:\s+(.+)", output)
    return WrkResult(
        rps=round(float(_match(r"Requests/sec:\s+([\d.]+)", output).group(1)), 1),
        p50_ms=latency_ms(50),
        p99_ms=latency_ms(99),
        requests=int(_match(r"^\s+(\d+) requests in ", output).group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors.group(1).strip() if socket_errors else None,
    )


def run_wrk(url: str, body: bytes, *, connections: int, duration: int, home: Path) -> WrkResult:
    """POST ``body`` to ``url`` for ``duration`` seconds over ``connections`` connections."""
    script = home / "request.lua"
    script.write_text(_WRK_LUA.format(body=json.dumps(body.decode())))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={WRK_TIMEOUT_S}s",
               "--latency", "-s", str(script), url]  # fmt: skip
    if WRK_CPU is not None:
        command = ["taskset", "-c", str(WRK_CPU), *command]
    # subprocess.run kills wrk if anything (timeout, Ctrl-C, SIGTERM) interrupts the wait.
    completed = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=duration + WRK_TIMEOUT_S + 60
    )
    if completed.returncode != 0:
        raise BenchError(f"wrk exited with {completed.returncode}: {completed.stderr.strip()}")
    return parse_wrk(completed.stdout)

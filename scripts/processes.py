"""Loopback ports and process groups: the plumbing of every locally started server (MLflow,
Airflow components, the model service). Each server runs in its own session, so it stops with
its workers by its own PID, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_or_free(port: int) -> int:
    """``port`` when nothing listens on it on loopback, else a free one."""
    with socket.socket() as sock:
        taken = sock.connect_ex(("127.0.0.1", port)) == 0
    return free_port() if taken else port


def alive(pid: int) -> bool:
    """Whether the process group led by ``pid`` still has a process."""
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_process_groups(pids: Iterable[int], timeout: float = 30.0) -> None:
    """SIGTERM each process group (a server and its workers), wait, then SIGKILL what is left."""
    remaining = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            remaining.append(pid)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        for pid in list(remaining):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap our own children
            if not alive(pid):
                remaining.remove(pid)
        time.sleep(0.2)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def log_tails(logs: Path, chars: int = 3000) -> str:
    return "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
        for log in sorted(logs.glob("*.log"))
    )


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    logs: Path | None = None,
    errors: tuple[type[BaseException], ...] = (OSError, ValueError),
) -> Any:
    """Poll ``check`` until it returns something truthy (``errors`` count as not yet); on
    timeout, fail naming ``what``, with the tails of the logs under ``logs``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except errors:
            result = None
        if result:
            return result
        time.sleep(0.5)
    tails = f"\n{log_tails(logs)}" if logs is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{tails}")

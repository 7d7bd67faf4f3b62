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


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL process ``pid``, its group and every descendant in whatever group, as a lost
    machine takes them all, and wait up to ``timeout`` until they are gone.

    Killing the group is not enough: Airflow's task supervisor puts each task process in a
    group of its own, which would outlive its worker and keep training. The tree is frozen
    (SIGSTOP) before it is killed, so no process forks a child that escapes."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    frozen: dict[int, psutil.Process] = {}
    while True:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        found = [process for process in tree if process.pid not in frozen]
        if not found:
            break
        for process in found:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGSTOP)
            frozen[process.pid] = process
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for process in frozen.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reap our own child; the orphans are init's to reap
    deadline = time.monotonic() + timeout
    for process in frozen.values():
        while time.monotonic() < deadline:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)


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

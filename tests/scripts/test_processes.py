"""A lost machine takes every process on it (scripts/processes.py ``kill_tree``): the live fault
test kills a Celery worker this way, and the task process Airflow's supervisor runs in a process
group of its own must die with it, as it would with the machine."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from processes import alive, kill_tree

# A worker that starts a task in a group of its own (as Airflow's supervisor does with
# os.setpgid), which starts a child of its own, then reports the pids and waits.
WORKER = """
import os, subprocess, sys, time
task = subprocess.Popen([sys.executable, "-c", '''
import os, subprocess, sys, time
os.setpgid(0, 0)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(os.getpid(), child.pid, flush=True)
time.sleep(600)
'''], stdout=subprocess.PIPE, text=True)
print(os.getpid(), task.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_worker() -> tuple[subprocess.Popen[str], int, int]:
    """The worker in a session of its own, with the pids of its task and the task's child."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert worker.stdout is not None
    worker_pid, task_pid, child_pid = map(int, worker.stdout.readline().split())
    assert worker_pid == worker.pid
    return worker, task_pid, child_pid


def test_kill_tree_takes_the_tasks_in_groups_of_their_own() -> None:
    worker, task_pid, child_pid = _start_worker()
    assert os.getpgid(task_pid) == task_pid != os.getpgid(worker.pid)  # a group of its own
    try:
        kill_tree(worker.pid, timeout=10)  # returns once all three are dead (or zombies)
        assert not alive(worker.pid)
        assert not any(map(_running, (worker.pid, task_pid, child_pid)))
    finally:
        for pid in (task_pid, child_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        worker.wait(timeout=10)


def test_a_group_kill_alone_would_leave_the_task_running() -> None:
    """Why kill_tree exists: SIGKILL to the worker's group misses the task's group."""
    worker, task_pid, child_pid = _start_worker()
    try:
        os.killpg(worker.pid, 9)
        worker.wait(timeout=10)
        time.sleep(0.5)
        assert _running(task_pid)
    finally:
        kill_tree(task_pid, timeout=10)
        assert not _running(task_pid) and not _running(child_pid)

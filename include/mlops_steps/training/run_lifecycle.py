"""One live MLflow run per training key, whatever happens to the attempts that train it.

An attempt killed with SIGKILL (OOM, a lost node) leaves its run RUNNING forever; one stopped
with SIGTERM (an Airflow timeout, a deleted pod) used to end it FAILED at best. Here:

* SIGTERM while training ends the run ``KILLED`` before the process exits;
* every new attempt first marks runs of its training key that still look alive ``KILLED``
  (tagged with who did it), so a retry never leaves a zombie beside its own run;
* an attempt about to finish checks it was not retired meanwhile (then it stops, named) and that
  no other attempt finished the same key first (then it ends ``KILLED`` and reuses that run).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from mlops_steps.core.errors import StepError

KILLED_REASON_TAG = "mlops.killed_reason"
_ALIVE = "RUNNING"


class AttemptSuperseded(StepError):
    """A later attempt of the same training retired this attempt's run; its result is not
    wanted (the later attempt's run is the partition's run)."""


def _key_filter(key: str, status: str) -> str:
    return f"tags.`mlops.training_key` = '{key}' and attributes.status = '{status}'"


def retire_stale_runs(client: Any, experiment_id: str, key: str, *, by: str) -> list[str]:
    """Mark every run of ``key`` that still says RUNNING as KILLED; returns their ids.

    Airflow runs one try of a task at a time, so a RUNNING run of this key when a new try
    starts belongs to a try that is dead (SIGKILL) or lost (a zombie) and will never finish it.
    """
    stale = client.search_runs(
        [experiment_id], filter_string=_key_filter(key, _ALIVE), max_results=1000
    )
    for run in stale:
        client.set_tag(run.info.run_id, KILLED_REASON_TAG, f"retired by a later attempt ({by})")
        client.set_terminated(run.info.run_id, "KILLED")
    return [run.info.run_id for run in stale]


def finished_run(client: Any, experiment_id: str, key: str, *, other_than: str = "") -> Any:
    """The newest FINISHED run of ``key`` (other than ``other_than``), or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=_key_filter(key, "FINISHED"),
        max_results=2,
        order_by=["attributes.start_time DESC"],
    )
    return next((run for run in runs if run.info.run_id != other_than), None)


def claim_finish(client: Any, run_info: Any, key: str) -> Any | None:
    """Call inside the active run right before it records its result.

    None: this run may finish. A run object: another attempt finished this key first; this run
    is ended KILLED and the caller reuses the other. Raises :class:`AttemptSuperseded` when a
    later attempt retired this run.
    """
    import mlflow

    status = client.get_run(run_info.run_id).info.status
    if status != _ALIVE:
        mlflow.end_run(status if status in {"KILLED", "FAILED"} else "KILLED")
        raise AttemptSuperseded(
            f"run {run_info.run_id} was marked {status} by a later attempt of this training "
            f"(tag {KILLED_REASON_TAG}); this attempt stops without a result",
            subject=f"training key {key}",
            fix="nothing to do: the later attempt's run is the partition's run",
        )
    other = finished_run(client, run_info.experiment_id, key, other_than=run_info.run_id)
    if other is not None:
        mlflow.set_tag(KILLED_REASON_TAG, f"run {other.info.run_id} finished this key first")
        mlflow.end_run("KILLED")
    return other


@contextlib.contextmanager
def sigterm_ends_run_killed() -> Iterator[None]:
    """While training, SIGTERM (a task timeout, a deleted pod) ends the active run KILLED and
    exits 143, instead of dying with the run left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _terminate(signum: int, frame: object) -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.set_tag(KILLED_REASON_TAG, "SIGTERM: the task timed out or was stopped")
            mlflow.end_run("KILLED")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

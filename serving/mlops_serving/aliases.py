"""The registered model's aliases as they are now, for ``/model/info``.

Aliases move after a model is loaded (a release points ``challenger`` at the next version), so
the service reads them from the registry when asked instead of keeping the ones it saw at load
time, and caches the answer for a few seconds. The read runs in a thread of its own with a
deadline: an unreachable registry makes ``/model/info`` say so within seconds (MLflow's client
retries for minutes), never serve stale aliases.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

CACHE_SECONDS = 3.0
DEADLINE_SECONDS = 5.0


class LiveAliases:
    """``current()`` -> (alias -> version, None) or (None, why they could not be read)."""

    def __init__(
        self,
        fetch: Callable[[], dict[str, str]],
        *,
        cache_seconds: float = CACHE_SECONDS,
        deadline_seconds: float = DEADLINE_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._cache_seconds = cache_seconds
        self._deadline = deadline_seconds
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[dict[str, str]] | None = None
        self._answer: tuple[float, dict[str, str] | None, str | None] | None = None

    def current(self) -> tuple[dict[str, str] | None, str | None]:
        with self._lock:
            now = time.monotonic()
            if self._answer is not None and now - self._answer[0] < self._cache_seconds:
                return self._answer[1], self._answer[2]
            if self._pending is None:  # one read at a time, however many callers wait
                self._pending = self._start_read()
            pending = self._pending
        try:
            aliases: dict[str, str] | None = dict(pending.result(timeout=self._deadline))
            error = None
        except concurrent.futures.TimeoutError:
            return None, f"the model registry did not answer within {self._deadline:g} s"
        except Exception as exc:
            aliases, error = None, f"cannot read the aliases from the model registry: {exc}"
        with self._lock:
            if self._pending is pending:
                self._pending = None
                self._answer = (time.monotonic(), aliases, error)
        return aliases, error

    def _start_read(self) -> concurrent.futures.Future[dict[str, str]]:
        """The read in a daemon thread: one that hangs never holds up the service's exit (an
        executor's worker would be joined at exit, for as long as MLflow's client retries)."""
        future: concurrent.futures.Future[dict[str, str]] = concurrent.futures.Future()

        def read() -> None:
            try:
                future.set_result(self._fetch())
            except Exception as exc:
                future.set_exception(exc)

        threading.Thread(target=read, name="registry-aliases", daemon=True).start()
        return future


def registry_aliases(client: Any, model_name: str) -> Callable[[], dict[str, str]]:
    """A fetch for :class:`LiveAliases` from an MLflow client."""
    return lambda: dict(client.get_registered_model(model_name).aliases or {})


def by_version(aliases: dict[str, str], version: str) -> list[str]:
    return sorted(alias for alias, held_by in aliases.items() if str(held_by) == version)

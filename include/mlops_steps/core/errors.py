"""Errors a step reports to its operator, with the exit codes the runners act on."""

from __future__ import annotations

# Exit codes shared by both runners: 0 done, 1 unexpected crash (worth a retry),
# 2 the input or a decision is wrong (a retry would only repeat it).
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_REJECTED = 2
# Nothing to do (e.g. the candidate was already decided): the task is skipped, not failed.
EXIT_SKIPPED = 3


class StepError(Exception):
    """A failure caused by input, configuration or a decision, not by a bug.

    ``subject`` names the field, file or URI at fault and ``fix`` says what to change, so the
    message in the Airflow task log is enough to act on.
    """

    def __init__(self, message: str, *, subject: str | None = None, fix: str | None = None):
        self.message = message
        self.subject = subject
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        parts = [f"{self.subject}: {self.message}" if self.subject else self.message]
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return " ".join(parts)


class SourceError(StepError):
    """The data source cannot be read (unreachable, missing, empty, unparseable)."""


class ValidationFailed(StepError):
    """The data broke its expectation suite."""


class GateFailed(StepError):
    """The challenger did not pass the quality gate."""


class NothingToDo(StepError):
    """The step has no work (a duplicate event, an already decided candidate): skip it."""


class ServiceUnavailable(StepError):
    """A service the step needs (the object store, a registry) did not answer: a retry may
    succeed, so the step exits 1 (Airflow retries it) with this message instead of a traceback."""

"""What a monitoring run judges: a time window of served rows, the kinds of its features, and the
named errors for a window that cannot be judged (drift is never reported as absent for it)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mlops_steps.common.drift import AllNullFeature, FeatureKind
from mlops_steps.core.errors import StepError

# AllNullFeature and FeatureKind live in common/drift.py (training's shift check uses them too);
# monitoring keeps naming them from here.
__all__ = [
    "AllNullFeature",
    "EmptyWindow",
    "FeatureKind",
    "MonitoringDataError",
    "NullFeatureValues",
    "SchemaMismatch",
    "Window",
    "parse_time",
]


class MonitoringDataError(StepError):
    """The window's data cannot be judged; drift is never reported as absent for it."""


class EmptyWindow(MonitoringDataError):
    """No (or too few) predictions of the champion were logged in the window."""


class SchemaMismatch(MonitoringDataError):
    """Logged features do not match the champion's feature spec (missing, extra, wrong type)."""


class NullFeatureValues(MonitoringDataError):
    """A feature is null in more rows than allowed (the service itself never logs nulls)."""


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` in UTC."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise StepError(
                f"ends ({self.end.isoformat()}) at or before it starts ({self.start.isoformat()})",
                subject="window",
                fix="give --window-end after --window-start, or a positive --window-hours",
            )

    @classmethod
    def ending(cls, until: dt.datetime, hours: float) -> Window:
        return cls(until - dt.timedelta(hours=hours), until)

    @property
    def key(self) -> str:
        """A stable directory-safe name, e.g. ``20261123T091500Z_20261123T101500Z``."""
        fmt = "%Y%m%dT%H%M%SZ"
        return f"{self.start.astimezone(dt.UTC):{fmt}}_{self.end.astimezone(dt.UTC):{fmt}}"

    def days(self) -> list[dt.date]:
        """Date directories that can hold the window's lines (see the module docstring)."""
        first = self.start.astimezone(dt.UTC).date()
        last = self.end.astimezone(dt.UTC).date() + dt.timedelta(days=1)
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "key": self.key}


def parse_time(text: str, flag: str) -> dt.datetime:
    """An ISO 8601 time; a time without a zone is taken as UTC (Airflow renders UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise StepError(
            f"{text!r} is not an ISO 8601 time",
            subject=flag,
            fix="use e.g. 2026-11-23T10:15:00+00:00",
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

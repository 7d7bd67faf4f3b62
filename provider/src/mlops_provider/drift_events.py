"""The served window a drift-triggered run trains on, read from the event that woke it.

Monitoring's ``announce_drift`` puts the judged window in the extra of the model's
``mlops://<model>/drift-detected`` event (``{"window": {"start", "end"}, ...}``). In a task's
templates Airflow 3.3 gives ``triggering_asset_events``: a mapping from each asset (an ``Asset``,
its ``uri`` compared here; a plain URI string is taken as well) to the events that queued the
run, each with ``.extra``. :func:`drift_window` is the template macro that turns them into
ingest's ``--served-window``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

#: Template macro names, merged into the training DAG's ``user_defined_macros``.
MACRO = "drift_window"


def _extra(event: Any) -> Mapping[str, Any]:
    extra = event.get("extra") if isinstance(event, Mapping) else getattr(event, "extra", None)
    return extra if isinstance(extra, Mapping) else {}


def _time(text: Any) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def drift_window(triggering_asset_events: Any, asset_uri: str) -> str:
    """``START/END`` of the window in the drift events of ``asset_uri`` that woke the run ('' when
    none did: a cron run, a manual run, a run woken by new raw data). Events folded into one run
    give the span from the first start to the last end; an event without a readable window (one
    posted by hand) gives none, and the run falls back to its other data."""
    if not isinstance(triggering_asset_events, Mapping):
        return ""  # not an asset-triggered run's context
    starts, ends = [], []
    for asset, events in triggering_asset_events.items():
        uri = asset if isinstance(asset, str) else getattr(asset, "uri", None)
        if uri != asset_uri:
            continue
        for event in events or ():
            window = _extra(event).get("window")
            if not isinstance(window, Mapping):
                continue
            start, end = _time(window.get("start")), _time(window.get("end"))
            if start is not None and end is not None and start < end:
                starts.append(start)
                ends.append(end)
    if not starts:
        return ""
    return f"{min(starts).isoformat()}/{max(ends).isoformat()}"


MACROS: dict[str, Any] = {MACRO: drift_window}

"""Links a person's browser can open for the reports the steps write on the data volume.

The Airflow API server serves the data root's reports read-only behind its own login (the
provider's ``mlops_provider.reports`` app, mounted at :data:`URL_PREFIX` by
``plugins/mlops_reports_plugin.py``). This module only builds the URLs, so the steps (which never
import Airflow) and the route agree on the prefix, on what counts as a report, and on how a path
becomes a URL. Without ``MLOPS_AIRFLOW_URL`` a link falls back to the path text and says why.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import quote

from mlops_steps.core.settings import Settings, get_settings

#: Where the reports app is mounted in Airflow's API server.
URL_PREFIX = "/mlops-reports"
#: The setting that turns report paths into links (Settings.airflow_url).
AIRFLOW_URL_ENV = "MLOPS_AIRFLOW_URL"

#: The files the route serves, by suffix, with their content type: the reports (HTML, JSON) and
#: what Data Docs pages load beside them. Data files (Parquet, CSV, JSON lines) are not reports.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}


def report_parts(relative: str) -> tuple[str, ...] | None:
    """The path segments of ``relative`` (a URL path under the prefix, already decoded) when it
    names a report file below the root; None for anything else: empty, absolute, ``..`` or
    ``.`` segments, hidden names, backslashes or NUL, or a suffix that is not a report's."""
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        return None
    parts = tuple(relative.split("/"))
    if any(not part or part.startswith(".") for part in parts):
        return None  # "", ".", "..", ".hidden" (and "a//b")
    if PurePosixPath(parts[-1]).suffix.lower() not in CONTENT_TYPES:
        return None
    return parts


def relative_report_path(path: str | Path, data_root: Path, data_plane: str = "") -> str | None:
    """``path`` relative to ``data_root`` (or to the object store ``data_plane``, for a URI in it)
    as URL path text (POSIX, not yet quoted), when it is a report the route would serve; None
    otherwise. Lexical: the route checks the real file."""
    if data_plane and str(path).startswith(f"{data_plane}/"):
        relative = str(path)[len(data_plane) + 1 :]
        return relative if report_parts(relative) is not None else None
    candidate = Path(path)
    if not candidate.is_absolute():
        return None
    try:
        relative = candidate.relative_to(data_root.absolute()).as_posix()
    except ValueError:
        return None
    return relative if report_parts(relative) is not None else None


def url_for_report(
    path: str | Path, *, data_root: Path, airflow_url: str, data_plane: str = ""
) -> str | None:
    """``<airflow_url>/mlops-reports/<path relative to data_root>``, or None when there is no
    base URL or ``path`` is not a report under ``data_root`` (or in the store ``data_plane``)."""
    relative = relative_report_path(path, data_root, data_plane)
    if not airflow_url or relative is None:
        return None
    # "=" (partition=..., window=...) and ":" are legal in a path segment: kept readable.
    return f"{airflow_url.rstrip('/')}{URL_PREFIX}/{quote(relative, safe='/=:@,')}"


def report_url(path: str | Path | None, settings: Settings | None = None) -> str | None:
    """The report's URL under the settings' data root and ``MLOPS_AIRFLOW_URL``, or None."""
    if path is None or str(path) == "":
        return None
    settings = settings or get_settings()
    return url_for_report(path, data_root=settings.data_root, airflow_url=settings.airflow_url,
                          data_plane=settings.data_plane)  # fmt: skip


def report_link(path: str | Path | None, settings: Settings | None = None) -> str | None:
    """What a person is shown for a report: its URL, else the path text with the reason it is not
    a link (no ``MLOPS_AIRFLOW_URL``, or not a report file under the data root). None stays None."""
    if path is None or str(path) == "":
        return None
    settings = settings or get_settings()
    url = report_url(path, settings)
    if url is not None:
        return url
    if not settings.airflow_url:
        return f"{path} (a path on the data volume: set {AIRFLOW_URL_ENV} for a link)"
    return f"{path} (not a report file under {settings.data_root}: no link)"

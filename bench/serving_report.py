"""The serving benchmark's results as the README's markdown tables (ratios between the servers of
one run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _ratio(a: float | None, b: float | None, digits: int) -> str:
    return f"{a / b:.{digits}f}x" if a and b else "-"


def render_markdown(report: dict[str, Any], servers: Sequence[str], batch_rows: int) -> str:
    """The per-point table (req/s, p50/p99 ms, ratios) and the batch table (rows/s)."""
    lines = [
        "| rows/request | connections | service req/s (p50/p99 ms) | mlflow serve | bare "
        "| service / mlflow | service / bare |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point, results in report["points"].items():
        rows, connections = point.split("x")
        cells = []
        for server in servers:
            r = results.get(server)
            flag = " ⚠ errors" if r and r.get("flagged") else ""
            cells.append(f"{r['rps']:,.0f} ({r['p50_ms']}/{r['p99_ms']}){flag}" if r else "-")
        service, mlflow, bare = (results.get(s, {}).get("rps") for s in servers)
        lines.append(
            f"| {rows} | {connections} | {' | '.join(cells)} "
            f"| {_ratio(service, mlflow, 1)} | {_ratio(service, bare, 2)} |"
        )
    lines += [
        "",
        f"| {batch_rows:,}-row batches, 1 connection | rows/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for server, r in report["batch"].items():
        flag = " ⚠ errors" if r.get("flagged") else ""
        lines.append(f"| {server} | {r['rows_per_s']:,}{flag} | {r['p50_ms']} | {r['p99_ms']} |")
    flagged = [
        f"{point} {server}"
        for point, results in [*report["points"].items(), *({"batch": report["batch"]}.items())]
        for server, r in results.items()
        if r.get("flagged")
    ]
    if flagged:
        lines += ["", "⚠ points with non-2xx responses or socket errors: " + ", ".join(flagged)]
    log = report.get("prediction_logs", {}).get("service")
    if log:
        lines += [
            "",
            f"Prediction log under that load: {log['rows_scored']:,} rows scored, "
            f"{log['rows_logged']:,} rows logged, {log['log_rows_dropped']:,} dropped.",
        ]
    if report.get("same_scores") is False:
        lines += ["", "⚠ the servers returned different scores for the same rows"]
    return "\n".join(lines)

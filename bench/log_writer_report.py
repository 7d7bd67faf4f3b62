"""The serving benchmark's comparison of the service's two prediction log writers (JSON lines
and Parquet), point by point, as ratios measured in the same run."""

from __future__ import annotations

from typing import Any

JSONL_SERVICE, PARQUET_SERVICE = "service", "service-parquet"


def log_writer_ratios(report: dict[str, Any]) -> dict[str, Any]:
    """The Parquet writer's service against the JSON lines one, point by point (req/s and p99;
    rows/s of the batch point): within noise is the target."""
    out: dict[str, Any] = {}
    for point, results in report["points"].items():
        parquet, jsonl = results.get(PARQUET_SERVICE), results.get(JSONL_SERVICE)
        if parquet and jsonl:
            out[point] = {"rps": round(parquet["rps"] / jsonl["rps"], 3),
                          "p99": round(parquet["p99_ms"] / jsonl["p99_ms"], 3)}  # fmt: skip
    parquet, jsonl = report["batch"].get(PARQUET_SERVICE), report["batch"].get(JSONL_SERVICE)
    if parquet and jsonl:
        out["batch"] = {"rows_per_s": round(parquet["rows_per_s"] / jsonl["rows_per_s"], 3),
                        "p99": round(parquet["p99_ms"] / jsonl["p99_ms"], 3)}  # fmt: skip
    return out


def render_log_writers(report: dict[str, Any]) -> str:
    """The service with each prediction log writer: req/s and p99 side by side, as ratios."""
    ratios = report.get("log_writer_ratios") or {}
    if not ratios:
        return ""
    lines = ["| point (rows x connections) | JSON lines req/s (p99 ms) | Parquet req/s (p99 ms) "
             "| Parquet / JSON lines req/s | p99 |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for point, ratio in ratios.items():
        results = report["batch"] if point == "batch" else report["points"][point]
        jsonl, parquet = results[JSONL_SERVICE], results[PARQUET_SERVICE]
        speed = "rows_per_s" if point == "batch" else "rps"
        lines.append(f"| {point} | {jsonl[speed]:,.0f} ({jsonl['p99_ms']}) | "
                     f"{parquet[speed]:,.0f} ({parquet['p99_ms']}) | {ratio[speed]:.2f}x | "
                     f"{ratio['p99']:.2f}x |")  # fmt: skip
    for name in (JSONL_SERVICE, PARQUET_SERVICE):
        log = report.get("prediction_logs", {}).get(name)
        if log:
            lines.append(f"\n{name}: {log['rows_scored']:,} rows scored, {log['rows_logged']:,} "
                         f"logged, {log['log_rows_dropped']:,} dropped.")  # fmt: skip
    return "\n".join(lines)

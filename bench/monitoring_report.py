"""The monitoring benchmark's results as the README's markdown tables (phases per size and log
format, ratios measured in the same run)."""

from __future__ import annotations

from typing import Any

PHASES = ("import", "read_log", "check", "decision", "prediction", "report")
TARGET_S, TARGET_MB = 30.0, 3072


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_markdown(results: dict[str, Any]) -> str:
    """Seconds per phase (and peak RSS) per size and mode, then the ratios per size."""
    lines = [
        "| window rows | log read as | " + " | ".join(PHASES) + " | total s | peak RSS MB |",
        "|---:|---|" + "---:|" * (len(PHASES) + 2),
    ]
    for rows, size in results["sizes"].items():
        for mode, run in size["modes"].items():
            label = {"frames": "(no read: frames in memory)"}.get(mode, mode)
            cells = " | ".join(_seconds(run["seconds"].get(p)) for p in PHASES)
            lines.append(f"| {int(rows):,} | {label} | {cells} | **{run['total_s']:.2f}** | "
                         f"{run['peak_rss_mb']:,} |")  # fmt: skip
    lines += ["", "| window rows | ratio (same run) | value |", "|---:|---|---:|"]
    for rows, size in results["sizes"].items():
        for name, value in size["ratios"].items():
            lines.append(f"| {int(rows):,} | {name.replace('_', ' ')} | "
                         f"{'-' if value is None else f'{value:.2f}x'} |")  # fmt: skip
    lines += [
        "",
        "| window rows | log | files | MB on disk | written in s |",
        "|---:|---|---:|---:|---:|",
    ]
    for rows, size in results["sizes"].items():
        log = size["log"]
        for fmt in ("parquet", "jsonl"):
            lines.append(f"| {int(rows):,} | {fmt} | {log['files'][fmt]} | "
                         f"{log['bytes'][fmt] / 1e6:,.0f} | {log['write_s'][fmt]} |")  # fmt: skip
    largest = max(results["sizes"], key=int)
    parquet = results["sizes"][largest]["modes"]["parquet"]
    met = parquet["total_s"] <= TARGET_S and parquet["peak_rss_mb"] <= TARGET_MB
    lines += ["", f"Target at {int(largest):,} rows (Parquet, read included): <= {TARGET_S:.0f} s "
              f"and <= {TARGET_MB:,} MB: {parquet['total_s']:.1f} s, {parquet['peak_rss_mb']:,} MB"
              f" -- {'met' if met else 'missed'}."]  # fmt: skip
    return "\n".join(lines)

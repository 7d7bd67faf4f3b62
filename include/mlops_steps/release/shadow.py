"""The shadow phase's judgement: the candidate scored a copy of real requests, answering none.

The service (serving/mlops_serving/shadow.py) scores a share of the requests the stable version
answers with the candidate as well, after the answer is sent, and counts the copies under the
variant ``shadow``: requests by status, its own scoring latency, the score histogram (or the
predicted classes) and ``serving_shadow_agreement_total`` -- whether its answer agreed with the
stable answer to the same request. Judged per round: enough shadow requests, their error rate and
p99 latency; on everything since the phase began (a round holds a few dozen copies): the shift of
the prediction distribution against the stable answers, and the agreement rate. Every check that
cannot be computed (no copies, NaN) fails.
"""

from __future__ import annotations

import math
from typing import Any

from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.release.judgement import (
    Judged,
    Snapshot,
    class_mix_shift,
    delta,
    histogram_quantile,
    psi,
    psi_noise_allowance,
)
from mlops_steps.release.replay import STABLE, Replay

SHADOW = "shadow"


def agreement_rate(snapshot: Snapshot) -> tuple[float, float]:
    """(share of compared answers that agreed, answers compared); NaN share with none."""
    agreed = snapshot.agreement.get("agree", 0.0)
    compared = agreed + snapshot.agreement.get("disagree", 0.0)
    return (agreed / compared if compared else math.nan), compared


def judge_shadow_round(
    policy: AnalysisPolicy,
    *,
    before: dict[str, Snapshot],
    after: dict[str, Snapshot],
    since_start: dict[str, Snapshot],
    replay: Replay,
    judged: Judged,
) -> dict[str, Any]:
    """One shadow round's checks (the same shape as a canary round's)."""
    empty = Snapshot()
    stats: dict[str, dict[str, float]] = {}
    for variant in (STABLE, SHADOW):
        now, then = after.get(variant, empty), before.get(variant, empty)
        statuses = {s: now.requests.get(s, 0.0) - then.requests.get(s, 0.0) for s in now.requests}
        total = sum(statuses.values())
        errors = sum(n for s, n in statuses.items() if not s.startswith("2"))
        stats[variant] = {
            "requests": total,
            "error_rate": errors / total if total else math.nan,
            "p99_ms": histogram_quantile(0.99, delta(now.latency_buckets, then.latency_buckets))
            * 1000.0,
        }
    base, copy = since_start.get(STABLE, empty), since_start.get(SHADOW, empty)
    if judged.task == "multiclass":
        shift, noise = class_mix_shift(base.classes, copy.classes, judged.classes)
        shift_limit = policy.max_psi + noise
    else:
        shift = psi(base.score_buckets, copy.score_buckets)
        shift_limit = policy.max_psi + psi_noise_allowance(base.score_buckets, copy.score_buckets)
    agreement, compared = agreement_rate(copy)
    shadow = stats[SHADOW]
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, limit: float, ok: bool) -> None:
        checks.append({"check": name, "value": value, "limit": limit, "passed": bool(ok)})

    check(
        "client_errors",
        replay.failures,
        policy.max_error_rate * replay.sent,
        replay.sent > 0 and replay.failures <= policy.max_error_rate * replay.sent,
    )
    check(
        "shadow_requests",
        shadow["requests"],
        policy.min_canary_requests,
        shadow["requests"] >= policy.min_canary_requests,
    )
    check(
        "shadow_error_rate",
        shadow["error_rate"],
        policy.max_error_rate,
        shadow["error_rate"] <= policy.max_error_rate,
    )
    check(
        "shadow_p99_ms", shadow["p99_ms"], policy.max_p99_ms, shadow["p99_ms"] <= policy.max_p99_ms
    )
    check(judged.shift_check, shift, shift_limit, shift <= shift_limit)
    check(
        "shadow_agreement",
        agreement,
        policy.min_shadow_agreement,
        agreement >= policy.min_shadow_agreement,
    )
    return {
        "passed": all(c["passed"] for c in checks),  # NaN compared False: already failed
        "checks": checks,
        "variants": stats,
        "agreement": {"rate": agreement, "compared": compared},
        "prediction_shift": {"check": judged.shift_check, "psi": shift, "limit": shift_limit},
        "requests_sent": replay.sent,
        "client_errors": replay.failures,
    }

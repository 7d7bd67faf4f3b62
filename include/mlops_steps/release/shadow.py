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
    Checks,
    Judged,
    Snapshot,
    prediction_shift,
    served_stats,
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
    stats = {
        variant: served_stats(before.get(variant, empty), after.get(variant, empty))
        for variant in (STABLE, SHADOW)
    }
    base, copy = since_start.get(STABLE, empty), since_start.get(SHADOW, empty)
    shift, shift_limit = prediction_shift(policy, judged, base, copy)
    agreement, compared = agreement_rate(copy)
    checks = Checks()
    checks.client_errors(replay, policy)
    checks.served(SHADOW, stats[SHADOW], policy)
    checks.add(judged.shift_check, shift, shift_limit, shift <= shift_limit)
    checks.add("shadow_agreement", agreement, policy.min_shadow_agreement,
               agreement >= policy.min_shadow_agreement)  # fmt: skip
    return {
        "passed": checks.passed,
        "checks": list(checks),
        "variants": stats,
        "agreement": {"rate": agreement, "compared": compared},
        "prediction_shift": {"check": judged.shift_check, "psi": shift, "limit": shift_limit},
        "requests_sent": replay.sent,
        "client_errors": replay.failures,
    }

"""Automated canary analysis: replay an independent golden set through the service and judge.

Each round sends ``requests_per_round`` labelled rows of a golden set that is not the candidate's
own data (release/golden.py: a pinned reference set, else the champion's hold-out) through
``/predict`` (release/replay.py) and reads the service's Prometheus metrics before and after,
counting only the samples of the versions judged (the canary's and the stable one's ``version``
label). The judgement (release/judgement.py) compares the canary with the stable variant on what
the service itself measured (error rate, p99 latency, the prediction distribution: score, class
mix or value, by the model's task), on the task's quality metric against the replayed labels
(accuracy, or RMSE/MAE for a regressor), and on the requests that got no usable answer at all
(client errors). Rates and latency are judged per round; distribution and quality on everything
seen so far (a round of a few dozen canary rows is too noisy on its own), and each limit grows by
what two samples of that size reach by chance, so a small canary is not rejected for noise. The
model's contract may override the bounds (its ``canary`` section).

Fail closed: a round with no canary traffic, no stable traffic while a stable version serves,
missing series or a NaN is a failed round; metrics without a version label, a traffic change
during the analysis or no independent golden set stop it. The run passes only when it completed
every round it was asked for and failed fewer than ``max_failed_rounds`` (at most ``rounds``,
a cross check of the policy); reaching that many ends it early with a rejection. The verdict and
every round's numbers go to ``analysis.json``.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.core.settings import Settings
from mlops_steps.release.golden import current_champion, golden_set
from mlops_steps.release.judgement import (
    Judged,
    Snapshot,
    accuracy_noise_allowance,
    class_mix_shift,
    delta,
    error_noise_allowance,
    histogram_quantile,
    judge_round,
    overall,
    psi,
    psi_noise_allowance,
)
from mlops_steps.release.metrics_source import open_metrics_source
from mlops_steps.release.replay import CANARY, STABLE, Replay, replay_round
from mlops_steps.release.shadow import SHADOW, judge_shadow_round
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import TrafficState

# The judgement's names, where callers have always found them.
__all__ = [
    "CanaryFailed",
    "Judged",
    "Snapshot",
    "accuracy_noise_allowance",
    "class_mix_shift",
    "error_noise_allowance",
    "histogram_quantile",
    "judge_round",
    "merge",
    "overall",
    "parse_metrics",
    "psi",
    "psi_noise_allowance",
    "run_analysis",
]

_JUDGED = ("serving_requests_total", "serving_request_latency_seconds_bucket")
_SCORES = "serving_prediction_score_bucket"
_CLASSES = "serving_predicted_class_total"
_AGREEMENT = "serving_shadow_agreement_total"


class CanaryFailed(StepError):
    """The canary did worse than allowed; the deployment DAG rolls it back."""


def parse_metrics(
    text: str, versions: Mapping[str, str | None], endpoint: str = "predict"
) -> dict[str, Snapshot]:
    """Per-variant counters of the versions judged, from the service's Prometheus text.

    A sample counts only when its ``version`` label is the version ``versions`` names for its
    variant (another version's samples, e.g. of a canary retired before this one, are ignored);
    a sample without the label (a service older than it) fails closed.
    """
    from prometheus_client.parser import text_string_to_metric_families

    snapshots: dict[str, Snapshot] = defaultdict(Snapshot)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            variant = labels.get("variant")
            if variant is None or variant not in versions:
                continue
            judged = sample.name in _JUDGED and labels.get("endpoint") == endpoint
            if not judged and sample.name not in (_SCORES, _CLASSES, _AGREEMENT):
                continue
            if "version" not in labels:
                raise CanaryFailed(
                    f"has no 'version' label on {sample.name}, so the metrics of the version "
                    "judged cannot be told from any other's",
                    subject="the service's /metrics",
                    fix="upgrade the model service to one that labels its metrics by version",
                )
            if labels["version"] != versions.get(variant):
                continue
            snap = snapshots[variant]
            if sample.name == "serving_requests_total":
                status = labels["status"]
                snap.requests[status] = snap.requests.get(status, 0.0) + sample.value
            elif sample.name == _AGREEMENT:
                outcome = labels.get("outcome", "")
                snap.agreement[outcome] = snap.agreement.get(outcome, 0.0) + sample.value
            elif sample.name == _CLASSES:
                name = labels.get("class", "")
                snap.classes[name] = snap.classes.get(name, 0.0) + sample.value
            else:
                le = float(labels["le"])
                buckets = snap.score_buckets if sample.name == _SCORES else snap.latency_buckets
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return dict(snapshots)


def _add(into: dict[Any, float], more: dict[Any, float]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0.0) + value


def merge(snapshots: Iterable[dict[str, Snapshot]]) -> dict[str, Snapshot]:
    """The sum of several processes' counters, per variant."""
    total: dict[str, Snapshot] = defaultdict(Snapshot)
    for per_variant in snapshots:
        for variant, snap in per_variant.items():
            _add(total[variant].requests, snap.requests)
            _add(total[variant].latency_buckets, snap.latency_buckets)
            _add(total[variant].score_buckets, snap.score_buckets)
            _add(total[variant].classes, snap.classes)
            _add(total[variant].agreement, snap.agreement)
    return dict(total)


def _candidate_tags(settings: Settings, version: str) -> dict[str, str]:
    """The candidate version's registry tags (its training-time ``mlops.holdout_*``)."""
    from mlops_steps.common.tracking import connect

    found = connect().get_model_version(settings.model_name, version)
    return dict(found.tags or {})


def run_analysis(
    settings: Settings,
    version: str,
    partition_key: str,
    policy: AnalysisPolicy,
    *,
    phase: str = CANARY,
    result_name: str = "analysis",
) -> dict[str, Any]:
    """Drive traffic round by round and judge; raises CanaryFailed on a rejection.

    ``partition_key`` is the candidate's own partition: never replayed (release/golden.py).
    ``policy`` is taken as given (the CLI applies the contract's ``canary`` overrides).
    ``phase`` ``shadow`` judges the candidate's shadow copies against the stable answers
    (release/shadow.py) instead of its own answers; the result goes to ``<result_name>.json``.
    """
    import requests

    from mlops_steps.contract.loader import load_contract

    contract = load_contract(settings.model_name)
    target = open_target(settings)
    traffic = target.state()
    shadow = phase == SHADOW
    _require_canary(traffic, traffic, version, shadow=shadow)
    has_stable = traffic.stable_version is not None and traffic.canary_weight < 1.0
    golden = golden_set(
        settings,
        policy,
        candidate_partition=partition_key,
        champion=current_champion(settings),
        contract=contract,
    )
    # A regressor's first release is judged against its own training-time hold-out error.
    tags = _candidate_tags(settings, version) if contract.task == "regression" else {}
    judged = Judged.of(contract, tags)
    versions = {STABLE: traffic.stable_version, SHADOW if shadow else CANARY: version}
    base = settings.deploy.service_url
    rng = random.Random(f"{version}-{golden.partition}")  # noqa: S311 (sampling, not security)
    replay, rounds = Replay(task=contract.task), list[dict[str, Any]]()
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=policy.concurrency)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    source = open_metrics_source(settings, target, session, subject=f"canary v{version}")

    # Enough requests a round that the candidate's share holds twice the minimum it is judged
    # on: a 5 % step would otherwise see ~15 of 300 and fail for want of traffic, not quality.
    share = traffic.shadow_share if shadow else traffic.canary_weight
    per_round = max(policy.requests_per_round, math.ceil(2 * policy.min_canary_requests / share))

    def scrape() -> dict[str, Snapshot]:
        return source.snapshot(versions, not_before=time.time())

    start = scrape()
    for number in range(1, policy.rounds + 1):
        _require_canary(target.state(), traffic, version, shadow=shadow)
        before = scrape()
        sample = [golden.rows[rng.randrange(len(golden.rows))] for _ in range(per_round)]
        tag = f"canary-v{version}-r{number}"
        replay_round(
            session,
            f"{base}/predict",
            sample,
            concurrency=policy.concurrency,
            tag=tag,
            replay=replay,
        )
        after = scrape()
        since_start = {
            v: Snapshot(
                score_buckets=delta(after[v].score_buckets, start.get(v, Snapshot()).score_buckets),
                classes=delta(after[v].classes, start.get(v, Snapshot()).classes),
                agreement=delta(after[v].agreement, start.get(v, Snapshot()).agreement),
            )
            for v in after
        }
        if shadow:
            verdict = judge_shadow_round(
                policy,
                before=before,
                after=after,
                since_start=since_start,
                replay=replay,
                judged=judged,
            )
        else:
            verdict = judge_round(
                policy,
                before=before,
                after=after,
                since_start=since_start,
                replay=replay,
                has_stable=has_stable,
                judged=judged,
            )
        verdict["round"] = number
        rounds.append(verdict)
        if overall(policy, rounds)["failed_rounds"] >= policy.max_failed_rounds:
            break
        if number < policy.rounds:
            time.sleep(policy.interval_s)
    summary = overall(policy, rounds)
    result = {
        "version": version,
        "phase": phase,
        **summary,
        "rounds": rounds,
        "compared_with_stable": has_stable,
        "task": contract.task,
        "judged": asdict(judged),
        "golden_set": golden.describe(),
        "traffic": traffic.as_dict(),
        "policy": asdict(policy),
        "requests_per_round": per_round,
    }
    from mlops_steps.release.ledger import write_result

    write_result(settings, version, result_name, result)
    if not summary["passed"]:
        raise CanaryFailed(
            f"failed {summary['failed_rounds']} of {len(rounds)} {phase} rounds (asked for "
            f"{policy.rounds}; {', '.join(summary['failed_checks']) or 'no check failed'})",
            subject=f"canary v{version}",
            fix="see analysis.json for each round's numbers; the rollback task restores traffic",
        )
    return result


def _require_canary(
    now: TrafficState, at_start: TrafficState, version: str, *, shadow: bool = False
) -> None:
    """The canary is ``version`` -- answering a share, or in shadow only scoring copies -- and
    the stable version is the one the analysis started with."""
    serving = now.shadow_share > 0 and now.canary_weight == 0 if shadow else now.canary_weight > 0
    if now.canary_version != version or not serving:
        raise CanaryFailed(
            f"is not serving as the {'shadow' if shadow else 'canary'} (target: canary "
            f"v{now.canary_version} at {now.canary_weight}, shadow share {now.shadow_share})",
            subject=f"v{version}",
            fix="the canary task must run first; something else changed the traffic",
        )
    if now.stable_version != at_start.stable_version:
        raise CanaryFailed(
            f"was being compared with stable v{at_start.stable_version}, but the stable version "
            f"is now v{now.stable_version}",
            subject=f"canary v{version}",
            fix="releases must not overlap (the promotion pool serialises them); re-run",
        )

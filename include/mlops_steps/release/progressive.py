"""Progressive delivery: the candidate meets traffic in steps, judged at every one.

As Argo Rollouts' canary steps with an analysis run per step, or Flagger's stepped canary: the
``canary`` step puts the candidate in at its first position -- in shadow (scoring a share of the
requests, answering none) when a shadow share is set, else at the first traffic step -- and the
``analyze`` step walks the rest: the shadow phase judged against the stable answers to the same
requests, then each traffic step below 100 % set on the target and judged by the canary analysis.
The final 100 % is the promotion (release/deploy.py). Each judged step writes a ledger line
(``"kind": "traffic_step"``) and its own ``analysis-<phase>-<n>.json``; ``analysis.json`` holds
the whole walk and its verdict, which the promotion and the rollback record.

A step that fails raises CanaryFailed naming it; the rollback task then takes the candidate to 0 %
with the aliases untouched. A retried ``analyze`` walks from the first judged step again (the
target only changes shares), so a retry never skips a judgement. The first release ever has no
stable version to compare with or to shadow: it takes all traffic and is judged once on absolute
thresholds, and a shadow share is refused.
"""

from __future__ import annotations

from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import AnalysisPolicy, CanaryPolicy
from mlops_steps.core.settings import Settings
from mlops_steps.release.analysis import CanaryFailed, run_analysis
from mlops_steps.release.ledger import analysis_result, record_step, write_result
from mlops_steps.release.replay import CANARY
from mlops_steps.release.shadow import SHADOW
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import DeployTarget, Release, TrafficState

FIRST = "first"  # the first release: all traffic, judged on absolute thresholds


def _phases(before: TrafficState, canary: CanaryPolicy) -> list[tuple[str, float]]:
    """The judged positions in order: (phase, share): the shadow share, then each step."""
    if before.stable_version is None or before.stable_version == before.canary_version:
        return [(FIRST, 1.0)]
    shadow = [(SHADOW, canary.shadow_share)] if canary.shadow_share > 0 else []
    return shadow + [(CANARY, weight) for weight in canary.weights]


def _require_judgeable_shadow(
    settings: Settings, before: TrafficState, canary: CanaryPolicy, subject: str
) -> None:
    """A shadow phase the analysis could not judge is refused before anything changes."""
    if canary.shadow_share <= 0:
        return
    if settings.deploy.target != "service":
        raise StepError(
            "cannot be judged in shadow on the kubernetes target: its pods score mirrored "
            "copies as ordinary requests, so no copy is compared with the stable answer to the "
            "same request (the service target does that in one process)",
            subject=subject,
            fix="release it without a shadow phase (shadow_share 0), or through the service target",
        )
    if before.stable_version is None:
        raise StepError(
            "has no stable version to shadow: nothing answers the requests whose copies it "
            "would score, so the shadow comparison could not be made",
            subject=subject,
            fix="release it without a shadow phase (shadow_share 0); the first release is "
            "judged alone on absolute thresholds",
        )


def _move(target: DeployTarget, release: Release, phase: str, share: float) -> TrafficState:
    after = (
        target.start_shadow(release, share)
        if phase == SHADOW
        else target.start_canary(release, share)
    )
    if after.canary_version != release.version:
        raise StepError(
            f"the target serves canary v{after.canary_version} after the update",
            subject=f"{release.model_name} v{release.version}",
        )
    return after


def run_start(settings: Settings, release: Release, canary: CanaryPolicy) -> dict[str, Any]:
    """Put the candidate in at its first position: shadow, the first step, or (the first
    release ever, nothing to compare with) all traffic."""
    target = open_target(settings)
    before = target.state()
    _require_judgeable_shadow(settings, before, canary, f"{release.model_name} v{release.version}")
    phase, share = _phases(before, canary)[0]
    after = _move(target, release, phase, share)
    return {
        "phase": phase,
        "share": share,
        "steps": canary.steps,
        "before": before.as_dict(),
        "after": after.as_dict(),
        "image_ref": release.image_ref,
    }


def run_progressive(
    settings: Settings,
    release: Release,
    partition_key: str,
    analysis: AnalysisPolicy,
    canary: CanaryPolicy,
) -> dict[str, Any]:
    """Walk the shadow phase and the traffic steps, each judged; CanaryFailed at the first
    failure (the rollback task then restores the traffic)."""
    version = release.version
    target = open_target(settings)
    now = target.state()
    if now.canary_version != version:
        raise CanaryFailed(
            f"is not the canary (the target serves canary v{now.canary_version})",
            subject=f"v{version}",
            fix="the canary task must run first; something else changed the traffic",
        )
    _require_judgeable_shadow(settings, now, canary, f"{release.model_name} v{version}")
    # The walk is planned from the stable version, whatever share a retry finds the canary at.
    phases = _phases(now, canary)
    walked: list[dict[str, Any]] = []
    judged_on: dict[str, Any] = {}  # the golden set replayed (the same at every step)
    for number, (phase, share) in enumerate(phases, start=1):
        state = _move(target, release, phase, share)
        name = f"analysis-{phase}-{number}"
        outcome: dict[str, Any] | CanaryFailed
        try:
            outcome = run_analysis(
                settings,
                version,
                partition_key,
                analysis,
                phase=SHADOW if phase == SHADOW else CANARY,
                result_name=name,
            )
        except CanaryFailed as failure:
            outcome = failure
        found = outcome if isinstance(outcome, dict) else analysis_result(settings, version, name)
        result = found or {}  # a step stopped before it wrote its result has none
        judged_on = {key: result.get(key) for key in ("golden_set", "task")}
        position = {"phase": phase, "number": number, "share": share}
        walked.append(_step_line(settings, version, position, state, outcome, result=result))
        if isinstance(outcome, CanaryFailed):
            _summarise(settings, version, canary, walked, judged_on, passed=False)
            raise CanaryFailed(
                f"failed at step {number} of {len(phases)} ({_label(phase, share)}): "
                f"{outcome.message}",
                subject=f"canary v{version}",
                fix=f"see {name}.json and the ledger; the rollback task takes it to 0 %",
            )
    return _summarise(settings, version, canary, walked, judged_on, passed=True)


def _label(phase: str, share: float) -> str:
    if phase == SHADOW:
        return f"shadow of {share:.0%} of requests"
    if phase == FIRST:
        return "first release: 100% of traffic, judged alone"
    return f"{share:.0%} of traffic"


def _step_line(
    settings: Settings,
    version: str,
    position: dict[str, Any],
    state: TrafficState,
    outcome: dict[str, Any] | CanaryFailed,
    *,
    result: dict[str, Any],
) -> dict[str, Any]:
    """The step's ledger line: its share, the traffic, the verdict and the failed checks
    (``result``: the step's analysis, as returned or, after a failure, as written)."""
    phase, number, share = position["phase"], position["number"], position["share"]
    if isinstance(outcome, CanaryFailed):
        details = {"passed": False, "reason": outcome.message, **_numbers(result)}
    else:
        details = {"passed": True, **_numbers(result)}
    details |= {"share": share, "label": _label(phase, share), "traffic": state.as_dict()}
    return record_step(settings, version=version, phase=phase, step=number, details=details)


def _numbers(result: dict[str, Any]) -> dict[str, Any]:
    """What a ledger line keeps of a step's analysis (its file keeps every round)."""
    keep = ("failed_checks", "failed_rounds", "rounds_completed", "rounds_asked")
    return {key: result[key] for key in keep if key in result}


def _summarise(
    settings: Settings,
    version: str,
    canary: CanaryPolicy,
    walked: list[dict[str, Any]],
    judged_on: dict[str, Any],
    *,
    passed: bool,
) -> dict[str, Any]:
    """``analysis.json``: the walk and its verdict (what promotion and rollback record)."""
    failed = sorted({c for step in walked for c in step.get("failed_checks") or ()})
    summary = {
        "version": version,
        "passed": passed,
        "steps_asked": canary.steps,
        "shadow_share": canary.shadow_share,
        "steps": walked,
        "failed_checks": failed,
        **judged_on,
    }
    write_result(settings, version, "analysis", summary)
    return summary

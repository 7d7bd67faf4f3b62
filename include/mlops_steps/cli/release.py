"""The deployment pipeline's verbs: they act on a model version, not a data partition."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

from mlops_steps.cli.base import AddVerb, Handler
from mlops_steps.core.options import add_cli_options, cross_checked, from_args
from mlops_steps.core.policies import AnalysisPolicy, CanaryPolicy
from mlops_steps.core.settings import Settings

_Policy = TypeVar("_Policy")


def policy_for_model(
    policy_cls: type[_Policy],
    args: argparse.Namespace,
    defaults: _Policy,
    section: str,
    settings: Settings,
    **extra: Any,
) -> _Policy:
    """The policy a step applies: the deployment's ``defaults`` (class defaults and the
    environment), then the model contract's ``section`` overrides, then each flag given a value
    other than the deployment's default (a DAG Param, or the command line). A flag left at the
    deployment's default takes the contract's value, so the contract binds unless a run says
    otherwise."""
    from mlops_steps.contract.loader import load_contract

    model = load_contract(settings.model_name).policy(section, defaults)
    flags = vars(args)
    merged = dict(flags)
    chosen = dict(extra)
    for item in dataclasses.fields(policy_cls):  # type: ignore[arg-type]
        if not item.init or item.name in extra:
            continue
        given = item.name in flags and flags[item.name] != getattr(defaults, item.name)
        value = flags[item.name] if given else getattr(model, item.name)
        if item.name in flags:
            merged[item.name] = value
        else:
            chosen[item.name] = value
    return from_args(policy_cls, argparse.Namespace(**merged), **chosen)


def _analysis_policy(args: argparse.Namespace, settings: Settings) -> AnalysisPolicy:
    return policy_for_model(AnalysisPolicy, args, settings.analysis, "canary", settings)


def _release(args: argparse.Namespace, settings: Settings) -> Any:
    from mlops_steps.release.targets.base import Release

    return Release(
        model_name=settings.model_name,
        version=args.version,
        image_ref=args.image_ref,
        bundle_path=args.bundle_path or None,
    )


def _resolve(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_resolve

    # The run's first step: analysis settings that break a cross check, or traffic steps that
    # judge nothing, end it here, before anything changes (Airflow validates each Param alone).
    _analysis_policy(args, settings)
    _canary_policy(args, settings)
    return run_resolve(settings, args.version or None)


def _build_image(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.build_image import run_build_image

    return run_build_image(settings, args.version)


def _canary_policy(args: argparse.Namespace, settings: Settings) -> CanaryPolicy:
    return policy_for_model(CanaryPolicy, args, settings.canary, "canary", settings)


def _canary(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.progressive import run_start

    return run_start(settings, _release(args, settings), _canary_policy(args, settings))


def _analyze(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.progressive import run_progressive

    return run_progressive(
        settings,
        _release(args, settings),
        args.data_partition,
        _analysis_policy(args, settings),
        _canary_policy(args, settings),
    )


def _promote(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_promote

    return run_promote(
        settings, _release(args, settings), args.expected_champion or None, args.approved_by
    )


def _rollback(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_rollback

    return run_rollback(settings, args.version, args.reason, args.approved_by, args.status)


def _restore(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_restore_previous

    return run_restore_previous(settings, args.requested_by, args.reason)


def _add_release_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--image-ref", required=True, help="the image built for the version")
    sub.add_argument("--bundle-path", default="", help="its local model-store bundle, if any")


def add_verbs(verb: AddVerb, settings: Settings) -> None:
    def release_verb(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = verb(name, handler, help_text, partition=False)
        sub.add_argument("--version", required=True, help="the model version being released")
        return sub

    resolve = verb(
        "resolve",
        _resolve,
        "Pick the candidate (a version, else the challenger) and re-check its gate.",
        partition=False,
    )
    resolve.add_argument("--version", default="", help="a version number; empty = challenger")
    add_cli_options(resolve, AnalysisPolicy, settings.analysis, only=cross_checked(AnalysisPolicy))
    add_cli_options(resolve, CanaryPolicy, settings.canary)
    release_verb("build-image", _build_image, "Build (or find) the version's serving image.")
    canary = release_verb(
        "canary", _canary, "Put the version in at its first position (shadow or first step)."
    )
    _add_release_args(canary)
    add_cli_options(canary, CanaryPolicy, settings.canary)
    analyze = release_verb(
        "analyze", _analyze, "Walk the shadow phase and traffic steps, judging each."
    )
    _add_release_args(analyze)
    add_cli_options(analyze, CanaryPolicy, settings.canary)
    analyze.add_argument(
        "--data-partition",
        required=True,
        help="the version's own data partition (never replayed: see --reference-set)",
    )
    add_cli_options(analyze, AnalysisPolicy, settings.analysis)
    promote = release_verb("promote", _promote, "Make the canary the champion.")
    _add_release_args(promote)
    promote.add_argument("--expected-champion", default="", help="champion at evaluation time")
    promote.add_argument("--approved-by", default="", help="who approved, for the ledger")
    rollback = release_verb("rollback", _rollback, "Retire the canary; aliases untouched.")
    rollback.add_argument("--reason", required=True)
    rollback.add_argument("--approved-by", default="")
    rollback.add_argument("--status", choices=["rejected", "rolled_back"], default="rejected")
    restore = verb(
        "restore",
        _restore,
        "Manual rollback: previous_champion becomes champion again.",
        partition=False,
    )
    restore.add_argument("--requested-by", default="")
    restore.add_argument("--reason", default="")

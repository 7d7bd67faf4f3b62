"""The deployment pipeline's verbs: they act on a model version, not a data partition."""

from __future__ import annotations

import argparse
from typing import Any

from mlops_steps.cli.base import AddVerb, Handler
from mlops_steps.core.options import add_cli_options, cross_checked, from_args
from mlops_steps.core.policies import AnalysisPolicy, CanaryPolicy
from mlops_steps.core.settings import Settings


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

    # The run's first step: analysis settings that break a cross check end it here, before
    # anything changes (Airflow validates each Param alone).
    from_args(AnalysisPolicy, args)
    return run_resolve(settings, args.version or None)


def _build_image(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.build_image import run_build_image

    return run_build_image(settings, args.version)


def _canary(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.deploy import run_canary

    return run_canary(settings, _release(args, settings), args.weight)


def _analyze(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from mlops_steps.release.analysis import run_analysis

    policy = from_args(AnalysisPolicy, args)
    return run_analysis(settings, args.version, args.data_partition, policy)


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
    release_verb("build-image", _build_image, "Build (or find) the version's serving image.")
    canary = release_verb("canary", _canary, "Put the version live as the canary.")
    _add_release_args(canary)
    add_cli_options(canary, CanaryPolicy, settings.canary)
    analyze = release_verb("analyze", _analyze, "Replay traffic and judge the canary.")
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

"""``mlops-step <verb>``: the one command line every pipeline step runs through.

Both runners execute exactly this: the local runner as a subprocess, the Kubernetes runner as the
task pod's command. A step prints its result as the last stdout line (``MLOPS_RESULT {json}``) and,
inside a pod that has the Airflow XCom volume, also writes it where the XCom sidecar reads it.
Exit codes: 0 done, 1 crash (retry may help), 2 rejected input or decision (a retry repeats it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mlops_steps.cli import monitoring, release, training
from mlops_steps.cli.base import verb_adder
from mlops_steps.core.errors import (
    EXIT_CRASH,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SKIPPED,
    NothingToDo,
    StepError,
)
from mlops_steps.core.results import emit_result
from mlops_steps.core.settings import ConfigError, Settings, load_settings

log = logging.getLogger("mlops_steps")


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """Every verb, with defaults from ``settings`` (flags derive from core/policies.py)."""
    parser = argparse.ArgumentParser(prog="mlops-step", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    verb = verb_adder(parser.add_subparsers(dest="verb", required=True, metavar="VERB"))
    for stage in (training, release, monitoring):
        stage.add_verbs(verb, settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return EXIT_REJECTED
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.info("mlops-step %s %s", args.verb, getattr(args, "partition", "") or "")
    try:
        result = args.handler(args, settings)
    except NothingToDo as exc:
        log.warning("nothing to do: %s", exc.render())
        emit_result({"skipped": True, "reason": exc.render()})
        return EXIT_SKIPPED
    except StepError as exc:
        log.error("%s", exc.render())
        return EXIT_REJECTED
    except Exception:
        log.exception("step %s crashed", args.verb)
        return EXIT_CRASH
    emit_result(result)
    return EXIT_OK

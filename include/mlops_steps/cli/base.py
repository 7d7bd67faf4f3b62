"""What every stage's verbs share: how a verb is declared and how its handler is called."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol

from mlops_steps.core.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], dict[str, Any]]


class AddVerb(Protocol):
    """Declares ``mlops-step <name>``; a verb that acts on a data partition gets --partition."""

    def __call__(
        self, name: str, handler: Handler, help_text: str, *, partition: bool = True
    ) -> argparse.ArgumentParser: ...


def verb_adder(verbs: Any) -> AddVerb:
    """An :class:`AddVerb` over argparse's sub-parsers."""

    def add(
        name: str, handler: Handler, help_text: str, *, partition: bool = True
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = verbs.add_parser(name, help=help_text, description=help_text)
        if partition:
            sub.add_argument("--partition", required=True, help="partition key of the logical run")
        sub.set_defaults(handler=handler)
        return sub

    return add

"""One declaration per default: a policy field carries its value, bounds and help, and the step's
command-line flags and the DAG's Params are derived from it.

A field declared with :func:`option` becomes ``--field-name`` on the step's verb (validated against
the same bounds) and, in a DAG, a typed Param (``param_schemas``) whose rendered value is passed
back to that flag (``cli_template``). Defaults may come from the settings (an environment
variable named by ``env``), so a deployment changes a default in one place and the CLI, the Params
and the policy agree. Standard library only: DAG files import this at parse time.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

_KEY = "mlops_option"
_PARSER_DEST = "_mlops_parser"  # the (sub)parser that declared a policy's flags
#: What the CLI and the DAG templates write for "no value: let the method choose".
AUTO = "auto"
_AUTO_WORDS = {"", AUTO, "none", "None", "null"}

_Policy = TypeVar("_Policy")


@dataclass(frozen=True)
class Option:
    """How one policy field is exposed: its help, bounds and names."""

    help: str
    title: str = ""  # the DAG Param's title (default: the help text)
    description: str = ""  # the DAG Param's description, when the title needs one
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""  # a text value must match it whole (also the Param's JSON Schema pattern)
    param: str = ""  # the DAG Param's name when it differs from the field's
    flag: str = ""  # the CLI flag when it differs from --field-name
    env: str = ""  # the environment variable (or AIRFLOW_VAR_<it>) that changes the default


def option(default: Any, *, help: str, **details: Any) -> Any:
    """A dataclass field whose flag and Param are derived from this one declaration."""
    return dataclasses.field(default=default, metadata={_KEY: Option(help=help, **details)})


@dataclass(frozen=True)
class Declared:
    """A declared field as the derivations see it."""

    name: str
    option: Option
    kind: type  # int, float, str or bool
    nullable: bool  # None is allowed (written "auto" on the command line)

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")

    @property
    def param(self) -> str:
        return self.option.param or self.name

    def check(self, value: Any) -> Any:
        """``value`` if it is within the declared bounds, else ValueError saying which."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError("needs a value")
        opt = self.option
        if opt.choices and value not in opt.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(opt.choices)}")
        if opt.pattern and not re.fullmatch(opt.pattern, str(value)):
            raise ValueError(f"{value!r} does not match {opt.pattern}")
        if self.kind in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{value} is not a finite number")
            if opt.minimum is not None and value < opt.minimum:
                raise ValueError(f"{value} is below the minimum {opt.minimum:g}")
            if opt.maximum is not None and value > opt.maximum:
                raise ValueError(f"{value} is above the maximum {opt.maximum:g}")
            if opt.exclusive_minimum is not None and value <= opt.exclusive_minimum:
                raise ValueError(f"{value} is not above {opt.exclusive_minimum:g}")
        return value

    def parse(self, text: str) -> Any:
        """The command-line text as a checked value (argparse ``type=``); ValueError says why."""
        if self.nullable and text.strip() in _AUTO_WORDS:
            return None
        if self.kind is bool:
            value: Any = _boolean(text)
        else:
            try:
                value = self.kind(text.strip())
            except ValueError:
                noun = {int: "an integer", float: "a number"}.get(self.kind, "a value")
                raise ValueError(f"{text!r} is not {noun}") from None
        return self.check(value)

    def cli_type(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ValueError(f"{text!r} is not true or false")


def declared(policy_cls: type) -> tuple[Declared, ...]:
    """The fields of ``policy_cls`` declared with :func:`option`, in declaration order."""
    return _declared(policy_cls)


@functools.cache
def _declared(policy_cls: Any) -> tuple[Declared, ...]:
    hints = typing.get_type_hints(policy_cls)
    found = []
    for f in dataclasses.fields(policy_cls):
        opt = f.metadata.get(_KEY)
        if opt is None:
            continue
        members = typing.get_args(hints[f.name]) or (hints[f.name],)  # X | None, or X
        kinds = [k for k in members if k is not type(None)]
        if len(kinds) != 1 or kinds[0] not in (int, float, str, bool):
            raise TypeError(f"{policy_cls.__name__}.{f.name}: one of int, float, str, bool")
        found.append(Declared(f.name, opt, kinds[0], nullable=type(None) in members))
    return tuple(found)


def _selected(policy_cls: type, only: Sequence[str] | None) -> Iterator[Declared]:
    fields = declared(policy_cls)
    if only is not None:
        unknown = set(only) - {d.name for d in fields}
        if unknown:
            raise KeyError(f"{policy_cls.__name__} declares no option {sorted(unknown)}")
    yield from (d for d in fields if only is None or d.name in only)


def add_cli_options(
    parser: argparse.ArgumentParser | Any,
    policy_cls: type,
    defaults: Any = None,
    *,
    only: Sequence[str] | None = None,
) -> None:
    """``--field-name`` for each declared field, defaulting to ``defaults`` (else the class's)."""
    source = defaults if defaults is not None else policy_cls()
    parser.set_defaults(**{_PARSER_DEST: parser})  # from_args reports a broken cross check
    for item in _selected(policy_cls, only):
        default = getattr(source, item.name)
        shown = AUTO if default is None else default
        parser.add_argument(
            item.flag,
            dest=item.name,
            type=item.cli_type,
            default=default,
            metavar=_metavar(item),
            help=f"{item.option.help} (default: {shown}{_bounds(item.option)})",
        )


def _bounds(opt: Option) -> str:
    """The declared bounds as the help shows them: "; 0..1", "; > 0", "; >= 20"."""
    low = opt.minimum if opt.minimum is not None else opt.exclusive_minimum
    if low is None and opt.maximum is None:
        return ""
    if low is not None and opt.maximum is not None and opt.exclusive_minimum is None:
        return f"; {low:g}..{opt.maximum:g}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if opt.exclusive_minimum is not None else '>='} {low:g}")
    if opt.maximum is not None:
        parts.append(f"<= {opt.maximum:g}")
    return "; " + ", ".join(parts)


def _metavar(item: Declared) -> str | None:
    if not item.option.choices:
        return None
    return "{" + ",".join((AUTO,) * item.nullable + item.option.choices) + "}"


def from_args(policy_cls: type[_Policy], args: argparse.Namespace, **extra: Any) -> _Policy:
    """The policy the parsed flags describe (fields without a flag keep their defaults); flags
    that break one of its ``cross_checks`` end the command as a usage error naming both."""
    flags = vars(args)
    values = {d.name: flags[d.name] for d in declared(policy_cls) if d.name in flags}
    try:
        return policy_cls(**values, **extra)
    except ValueError as exc:  # a cross check, or a field's own rule (e.g. the canary steps)
        parser: argparse.ArgumentParser | None = flags.get(_PARSER_DEST)
        if parser is None:
            raise
        if isinstance(exc, CrossFieldError):
            parser.error(exc.with_names(lambda name: _flag_of(policy_cls, name)))
        parser.error(str(exc))


@dataclass(frozen=True)
class AtMost:
    """A rule between two fields of one policy: ``field`` may not exceed ``limit``.

    Declared once in a policy's ``cross_checks``; the policy enforces it on construction, so the
    flags (a usage error), the environment (a configuration error) and a DAG run's Params (its
    first step task parses them) all refuse the same combination. Airflow 3.3 validates each
    Param alone against its own JSON schema; it has no hook for a rule between two of them.
    """

    field: str
    limit: str
    why: str

    def broken_by(self, policy: Any) -> bool:
        value, bound = getattr(policy, self.field), getattr(policy, self.limit)
        return value is not None and bound is not None and value > bound


class CrossFieldError(ValueError):
    """A policy's fields break one of its ``cross_checks``; the message names both fields."""

    def __init__(self, policy: Any, rule: AtMost) -> None:
        self.policy, self.rule = policy, rule
        super().__init__(self.with_names(lambda name: _all_names(type(policy), name)))

    def with_names(self, name: Callable[[str], str]) -> str:
        rule, policy = self.rule, self.policy
        return (
            f"{name(rule.field)} {getattr(policy, rule.field)} is above {name(rule.limit)} "
            f"{getattr(policy, rule.limit)}: {rule.why}"
        )


def cross_checks(policy_cls: type) -> tuple[AtMost, ...]:
    """The rules between fields that ``policy_cls`` declares (its ``cross_checks``)."""
    return tuple(getattr(policy_cls, "cross_checks", ()))


def cross_checked(policy_cls: type) -> list[str]:
    """The declared fields that take part in a cross check, in declaration order."""
    names = {n for rule in cross_checks(policy_cls) for n in (rule.field, rule.limit)}
    return [d.name for d in declared(policy_cls) if d.name in names]


def check_cross_fields(policy: Any) -> None:
    """Raise :class:`CrossFieldError` for the first of the policy's cross checks it breaks
    (called from the policy's ``__post_init__``)."""
    for rule in cross_checks(type(policy)):
        if rule.broken_by(policy):
            raise CrossFieldError(policy, rule)


def _declared_field(policy_cls: type, name: str) -> Declared | None:
    return next((d for d in declared(policy_cls) if d.name == name), None)


def _flag_of(policy_cls: type, name: str) -> str:
    """A field as a step's log shows it (a DAG run sets the Param): "--rounds (Param x)"."""
    item = _declared_field(policy_cls, name)
    return f"{item.flag} (Param {item.param})" if item else name


def _all_names(policy_cls: type, name: str) -> str:
    """A field as every caller may know it: "rounds (--rounds, Param analysis_rounds)"."""
    item = _declared_field(policy_cls, name)
    return f"{name} ({item.flag}, Param {item.param})" if item else name


def lookup_env(name: str) -> tuple[str, str]:
    """``MLOPS_X`` from the environment, else the env-backed Airflow Variable
    ``AIRFLOW_VAR_MLOPS_X`` (the one Variable form DAG parsing reads without a database query,
    and the form a task pod receives). Returns the name the value came from, for error
    messages, and the value ("" when unset)."""
    value = os.environ.get(name, "").strip()
    if not value and name.startswith("MLOPS_"):
        variable = f"AIRFLOW_VAR_{name}"
        if os.environ.get(variable, "").strip():
            return variable, os.environ[variable].strip()
    return name, value


def from_env(policy_cls: type[_Policy], error: type[Exception] = ValueError) -> _Policy:
    """The policy with each field that names an ``env`` variable read from it (checked against
    the same bounds as the flag); ``error`` carries a message naming the variable and the fix."""
    values: dict[str, Any] = {}
    for item in declared(policy_cls):
        if not item.option.env:
            continue
        name, raw = lookup_env(item.option.env)
        if not raw:
            continue
        try:
            values[item.name] = item.parse(raw)
        except ValueError as exc:
            default = getattr(policy_cls(), item.name)
            raise error(f"{name}={raw!r}: {exc}; set it to e.g. {default}") from None
    try:
        return policy_cls(**values)
    except CrossFieldError as exc:
        raise error(f"the environment's defaults break a rule: {exc}") from None


def param_schemas(
    policy_cls: type, defaults: Any = None, *, only: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """A DAG Param (default + JSON schema keywords) per declared field, by Param name."""
    source = defaults if defaults is not None else policy_cls()
    schemas: dict[str, dict[str, Any]] = {}
    for item in _selected(policy_cls, only):
        opt = item.option
        json_type = {int: "integer", float: "number", str: "string", bool: "boolean"}[item.kind]
        default = getattr(source, item.name)
        schema: dict[str, Any] = {"default": default}
        if item.nullable and item.kind is str:
            # Methods: "auto" is a choice of its own in the form.
            schema["default"] = AUTO if default is None else default
            schema["type"] = json_type
            schema["enum"] = [AUTO, *opt.choices]
        else:
            schema["type"] = ["null", json_type] if item.nullable else json_type
            if opt.choices:
                schema["enum"] = list(opt.choices)
            if opt.pattern:
                schema["pattern"] = f"^(?:{opt.pattern})$"
        for keyword, bound in (
            ("minimum", opt.minimum),
            ("maximum", opt.maximum),
            ("exclusiveMinimum", opt.exclusive_minimum),
        ):
            if bound is not None:
                schema[keyword] = int(bound) if float(bound).is_integer() else bound
        schema["title"] = opt.title or opt.help
        if opt.description:
            schema["description"] = opt.description
        schemas[item.param] = schema
    return schemas


def cli_template(policy_cls: type, *, only: Sequence[str] | None = None) -> tuple[str, ...]:
    """``("--flag", "{{ params.name }}", ...)`` for a DAG task: each Param back to its flag (a
    null Param is written ``auto``, which the flag reads as None)."""
    argv: list[str] = []
    for item in _selected(policy_cls, only):
        value = f"params.{item.param}"
        if item.nullable and item.kind is not str:
            value = f"{value} if {value} is not none else '{AUTO}'"
        argv += [item.flag, f"{{{{ {value} }}}}"]
    return tuple(argv)

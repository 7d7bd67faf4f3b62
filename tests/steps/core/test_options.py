"""The derivations from one policy declaration: flags, env overrides, Params and templates."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from mlops_steps.core.options import (
    add_cli_options,
    cli_template,
    from_args,
    from_env,
    option,
    param_schemas,
)
from mlops_steps.core.policies import AnalysisPolicy


@dataclass(frozen=True)
class Policy:
    share: float = option(0.1, help="a share", title="Share", minimum=0, maximum=1, env="MLOPS_T_S")
    method: str | None = option(None, help="a method", choices=("ks", "psi"))
    limit: float | None = option(None, help="a limit", exclusive_minimum=0, param="the_limit")
    count: int = option(3, help="a count", minimum=1, flag="--n")
    internal: int = 7


def _parse(*argv: str) -> Policy:
    parser = argparse.ArgumentParser()
    add_cli_options(parser, Policy)
    return from_args(Policy, parser.parse_args(argv))


def test_flags_take_the_declared_defaults_and_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parse() == Policy()
    assert _parse("--share", "0.5", "--method", "psi", "--limit", "2", "--n", "4") == Policy(
        share=0.5, method="psi", limit=2.0, count=4
    )
    assert _parse("--method", "auto", "--limit", "auto") == Policy()
    for argv in (["--share", "1.5"], ["--n", "0"], ["--limit", "0"], ["--method", "chi"]):
        with pytest.raises(SystemExit):
            _parse(*argv)
        assert argv[0] in capsys.readouterr().err


def test_env_overrides_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_T_S", "0.4")
    assert from_env(Policy).share == 0.4
    monkeypatch.setenv("MLOPS_T_S", "0.3")  # MLOPS_* wins over the Variable
    assert from_env(Policy).share == 0.3
    monkeypatch.setenv("MLOPS_T_S", "2")
    with pytest.raises(ValueError, match=r"MLOPS_T_S='2': 2.0 is above the maximum 1"):
        from_env(Policy)


def test_params_and_templates_mirror_the_flags() -> None:
    assert param_schemas(Policy) == {
        "share": {"default": 0.1, "type": "number", "minimum": 0, "maximum": 1, "title": "Share"},
        "method": {
            "default": "auto",
            "type": "string",
            "enum": ["auto", "ks", "psi"],
            "title": "a method",
        },
        "the_limit": {
            "default": None,
            "type": ["null", "number"],
            "exclusiveMinimum": 0,
            "title": "a limit",
        },
        "count": {"default": 3, "type": "integer", "minimum": 1, "title": "a count"},
    }
    assert cli_template(Policy, only=["limit", "count"]) == (
        "--limit",
        "{{ params.the_limit if params.the_limit is not none else 'auto' }}",
        "--n",
        "{{ params.count }}",
    )
    with pytest.raises(KeyError, match="internal"):
        cli_template(Policy, only=["internal"])


def test_the_canary_analysis_defaults_agree_everywhere() -> None:
    """They once disagreed (max_psi 0.2 in the policy, 0.25 on the flag and in the DAG)."""
    parser = argparse.ArgumentParser()
    add_cli_options(parser, AnalysisPolicy)
    assert from_args(AnalysisPolicy, parser.parse_args([])) == AnalysisPolicy()
    assert param_schemas(AnalysisPolicy)["max_psi"]["default"] == AnalysisPolicy().max_psi == 0.25

"""The service's settings: the ``SERVING_*`` variables, their defaults, and what fails start-up."""

from __future__ import annotations

import os

import pytest

from mlops_serving.config import ServingConfigError, ServingSettings

TOKEN = "0123456789abcdef-admin"
DEFAULTS = {
    "model_name": "churn",
    "stable_ref": "champion",
    "canary_ref": "",
    "canary_weight": 0.0,
    "track": "stable",
    "admin_token": TOKEN,
    "dev_mode": False,
    "prediction_log": ".mlops/predictions",
    "prediction_log_flush_ms": 250,
    "prediction_log_format": "jsonl",
    "max_batch_rows": 10_000,
    "max_body_bytes": None,
    "model_store": "",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without SERVING_* variables (in any case)."""
    for name in list(os.environ):
        if name.upper().startswith("SERVING_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _settings(env: pytest.MonkeyPatch, **variables: str) -> ServingSettings:
    for name, value in variables.items():
        env.setenv(name, value)
    return ServingSettings()


def test_defaults_and_every_variable_stripped(env: pytest.MonkeyPatch) -> None:
    assert _settings(env, SERVING_ADMIN_TOKEN=TOKEN).model_dump() == DEFAULTS
    settings = _settings(
        env,
        SERVING_MODEL_NAME=" churn2 ",
        SERVING_STABLE_ALIAS=" 7 ",
        SERVING_CANARY_REF=" challenger ",
        SERVING_CANARY_WEIGHT=" 0.25 ",
        SERVING_TRACK=" canary ",
        SERVING_ADMIN_TOKEN=f" {TOKEN} ",
        SERVING_DEV_MODE=" On ",
        SERVING_PREDICTION_LOG=" s3://bucket/log ",
        SERVING_PREDICTION_LOG_FLUSH_MS=" 200 ",
        SERVING_PREDICTION_LOG_FORMAT=" Parquet ",
        SERVING_MAX_BATCH_ROWS=" 500 ",
        SERVING_MAX_BODY_BYTES=" 2000000 ",
        SERVING_MODEL_STORE=" /store ",
    )
    assert settings.model_dump() == {
        "model_name": "churn2",
        "stable_ref": "7",
        "canary_ref": "challenger",
        "canary_weight": 0.25,
        "track": "canary",
        "admin_token": TOKEN,
        "dev_mode": True,
        "prediction_log": "s3://bucket/log",
        "prediction_log_flush_ms": 200,
        "prediction_log_format": "parquet",
        "max_batch_rows": 500,
        "max_body_bytes": 2_000_000,
        "model_store": "/store",
    }
    assert settings.body_limit_bytes == 2_000_000


def test_the_body_limit_is_derived_from_the_largest_batch_unless_set(
    env: pytest.MonkeyPatch,
) -> None:
    default = _settings(env, SERVING_ADMIN_TOKEN=TOKEN)
    assert default.body_limit_bytes == 10_000 * 1024 + 4 * 1024 * 1024  # 14 MiB
    assert _settings(env, SERVING_MAX_BATCH_ROWS="200").body_limit_bytes == 200 * 1024 + (4 << 20)
    assert "SERVING_MAX_BATCH_ROWS x 1024 bytes" in str(
        ServingSettings.model_fields["max_body_bytes"].description
    )


def test_blank_values_are_defaults_and_only_the_exact_names_count(
    env: pytest.MonkeyPatch,
) -> None:
    variables = [
        str(f.validation_alias)
        for f in ServingSettings.model_fields.values()
        if f.validation_alias != "SERVING_ADMIN_TOKEN"
    ]
    blank = dict.fromkeys(variables, "  ") | {"SERVING_STABLE_ALIAS": ""}
    other_spellings = {"serving_model_name": "x", "model_name": "y", "Serving_Track": "z"}
    settings = _settings(env, **blank, **other_spellings, SERVING_ADMIN_TOKEN=TOKEN)
    assert settings.model_dump() == DEFAULTS


@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("maybe", False)],
)
def test_dev_mode_is_on_for_true_words_only(env: pytest.MonkeyPatch, value: str, on: bool) -> None:
    assert _settings(env, SERVING_DEV_MODE=value, SERVING_ADMIN_TOKEN=TOKEN).dev_mode is on


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("SERVING_CANARY_WEIGHT", "half", "is not a number between 0 and 1"),
        ("SERVING_CANARY_WEIGHT", "1.5", "is not between 0 and 1"),
        ("SERVING_CANARY_WEIGHT", "nan", "is not between 0 and 1"),
        ("SERVING_MAX_BATCH_ROWS", "0", "is not a positive integer"),
        ("SERVING_MAX_BATCH_ROWS", "5.0", "is not a positive integer"),
        ("SERVING_PREDICTION_LOG_FLUSH_MS", "-5", "is not a positive integer"),
        ("SERVING_PREDICTION_LOG_FORMAT", "csv", "is not one of jsonl, parquet"),
        ("SERVING_MAX_BODY_BYTES", "1MB", "is not a positive integer"),
        ("SERVING_MAX_BODY_BYTES", "0", "is not a positive integer"),
    ],
)
def test_bad_values_fail_naming_the_variable(
    env: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    with pytest.raises(ServingConfigError) as error:
        _settings(env, SERVING_ADMIN_TOKEN=TOKEN, **{name: value})
    assert str(error.value) == f"{name}={value!r} {problem}"


@pytest.mark.parametrize("token", ["", "changeme", "CHANGEME", "short-secret-1"])
def test_placeholder_or_short_tokens_are_refused_outside_dev_mode(
    env: pytest.MonkeyPatch, token: str
) -> None:
    with pytest.raises(ServingConfigError) as error:
        _settings(env, SERVING_ADMIN_TOKEN=token)
    message = str(error.value)
    assert message.startswith("SERVING_ADMIN_TOKEN is empty, a placeholder or shorter than 16")
    assert "openssl rand -hex 24" in message and "SERVING_DEV_MODE=true" in message
    assert not token or token not in message
    assert _settings(env, SERVING_DEV_MODE="true").admin_token == token


def test_keyword_arguments_override_the_environment_by_variable_name(
    env: pytest.MonkeyPatch,
) -> None:
    env.setenv("SERVING_MAX_BATCH_ROWS", "5")
    settings = ServingSettings(SERVING_DEV_MODE=True, SERVING_TRACK="canary")
    assert (settings.dev_mode, settings.track, settings.max_batch_rows) == (True, "canary", 5)
    with pytest.raises(ServingConfigError, match=r"^SERVING_TRACK: Input should be a valid string"):
        ServingSettings(SERVING_DEV_MODE=True, SERVING_TRACK=3)

"""Service settings, read from ``SERVING_*`` environment variables when the app is created."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values people leave in templates; a service with one of these as its admin token refuses to start.
PLACEHOLDER_TOKENS = frozenset(
    {"", "changeme", "change-me", "change_me", "token", "secret", "admin", "password",
     "placeholder", "dev", "test", "xxx", "todo"}
)  # fmt: skip
MIN_TOKEN_LENGTH = 16
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
# The default body limit: generous bytes per batch row plus headroom (see ``max_body_bytes``).
BODY_BYTES_PER_ROW = 1024
BODY_HEADROOM_BYTES = 4 << 20
#: How the prediction log is written (mlops_serving/predlog.py); every reader of the log
#: (include/mlops_steps/common/predictions.py) reads both.
PREDICTION_LOG_FORMATS = ("jsonl", "parquet")
DEFAULT_PREDICTION_LOG_FORMAT = "jsonl"


class ServingConfigError(ValueError):
    """A setting is missing or unsafe; the message names the variable and the fix."""


class ServingSettings(BaseSettings):
    """What the service serves and how.

    Each field is read from exactly the environment variable its alias names (case-sensitive,
    no other spellings); in code, pass them by those names too. Values are stripped, and a blank
    one counts as unset (a template's ``SERVING_TRACK=``). Invalid or unsafe settings raise
    :class:`ServingConfigError` naming the variable.
    """

    model_config = SettingsConfigDict(case_sensitive=True, frozen=True)

    model_name: str = Field("churn", validation_alias="SERVING_MODEL_NAME")
    # alias (or version number) of the stable variant
    stable_ref: str = Field("champion", validation_alias="SERVING_STABLE_ALIAS")
    # alias or version of the canary variant; empty = no canary
    canary_ref: str = Field("", validation_alias="SERVING_CANARY_REF")
    canary_weight: float = Field(0.0, validation_alias="SERVING_CANARY_WEIGHT")
    # the variant name of the primary model (a canary Deployment: canary)
    track: str = Field("stable", validation_alias="SERVING_TRACK")
    admin_token: str = Field("", validation_alias="SERVING_ADMIN_TOKEN")
    dev_mode: bool = Field(False, validation_alias="SERVING_DEV_MODE")
    # a directory or s3://bucket/prefix
    prediction_log: str = Field(".mlops/predictions", validation_alias="SERVING_PREDICTION_LOG")
    prediction_log_flush_ms: int = Field(250, validation_alias="SERVING_PREDICTION_LOG_FLUSH_MS")
    prediction_log_format: str = Field(
        DEFAULT_PREDICTION_LOG_FORMAT,
        validation_alias="SERVING_PREDICTION_LOG_FORMAT",
        description=(
            "jsonl: a JSON line per prediction, appended as it is flushed; parquet: typed "
            "columns, a file per writer every ~30 s (monitoring reads 10M rows 7x faster)."
        ),
    )
    max_batch_rows: int = Field(10_000, validation_alias="SERVING_MAX_BATCH_ROWS")
    max_body_bytes: int | None = Field(
        None,
        validation_alias="SERVING_MAX_BODY_BYTES",
        description=(
            "Largest request body in bytes; a larger one gets 413 before it is read. Unset: "
            "derived from the largest allowed batch, SERVING_MAX_BATCH_ROWS x "
            f"{BODY_BYTES_PER_ROW} bytes (a 16-feature row is ~400 bytes of JSON) + "
            f"{BODY_HEADROOM_BYTES >> 20} MiB "
            "for entity ids and formatting: 14 MiB at the default 10,000 rows."
        ),
    )
    # directory of local bundles (``bundle:<dir>`` refs); empty = none
    model_store: str = Field("", validation_alias="SERVING_MODEL_STORE")

    def __init__(self, **values: Any) -> None:
        """Read the environment (``values`` override it); a clean error instead of pydantic's."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ServingConfigError("; ".join(map(_explain, exc.errors()))) from None

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        stripped = {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}
        return {k: v for k, v in stripped.items() if v != ""}

    @field_validator("dev_mode", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        """Anything but 1/true/yes/on (any case) is off, as before: no start-up failure."""
        return value.lower() in _TRUE_WORDS if isinstance(value, str) else value

    @field_validator("prediction_log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any, info: ValidationInfo) -> str:
        text = str(value).lower()
        if text not in PREDICTION_LOG_FORMATS:
            raise ServingConfigError(
                f"{_variable(info)}={value!r} is not one of {', '.join(PREDICTION_LOG_FORMATS)}"
            )
        return text

    @field_validator("canary_weight", mode="before")
    @classmethod
    def _fraction(cls, value: Any, info: ValidationInfo) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ServingConfigError(
                f"{_variable(info)}={value!r} is not a number between 0 and 1"
            ) from None
        if not 0.0 <= number <= 1.0:
            raise ServingConfigError(f"{_variable(info)}={value!r} is not between 0 and 1")
        return number

    @field_validator("prediction_log_flush_ms", "max_batch_rows", "max_body_bytes", mode="before")
    @classmethod
    def _positive_int(cls, value: Any, info: ValidationInfo) -> int | None:
        if value is None and info.field_name == "max_body_bytes":
            return None  # unset: derived (body_limit_bytes)
        text = str(value)
        if not text.isdecimal() or int(text) < 1:
            raise ServingConfigError(f"{_variable(info)}={value!r} is not a positive integer")
        return int(text)

    @property
    def body_limit_bytes(self) -> int:
        """The request body limit in force: the setting, or the one derived from the batch size."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_batch_rows * BODY_BYTES_PER_ROW + BODY_HEADROOM_BYTES

    @model_validator(mode="after")
    def _safe_admin_token(self) -> ServingSettings:
        """Refuse to run with an unusable admin token outside dev mode."""
        if not self.dev_mode and (
            self.admin_token.lower() in PLACEHOLDER_TOKENS
            or len(self.admin_token) < MIN_TOKEN_LENGTH
        ):
            raise ServingConfigError(
                "SERVING_ADMIN_TOKEN is empty, a placeholder or shorter than "
                f"{MIN_TOKEN_LENGTH} characters; set a random token (e.g. `openssl rand -hex 24`) "
                "or SERVING_DEV_MODE=true on a development machine"
            )
        return self


def _variable(info: ValidationInfo) -> str:
    """The environment variable of the field being validated."""
    assert info.field_name is not None
    return str(ServingSettings.model_fields[info.field_name].validation_alias)


def _explain(error: Any) -> str:
    """One pydantic error as a line: our own message, or pydantic's after the variable's name
    (never the value, which may be the admin token)."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ServingConfigError):
        return str(cause)
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"

"""Service settings, read from ``SERVING_*`` environment variables when the app is created."""

from __future__ import annotations

import os
from dataclasses import dataclass

# Values people leave in templates; a service with one of these as its admin token refuses to start.
PLACEHOLDER_TOKENS = frozenset(
    {"", "changeme", "change-me", "change_me", "token", "secret", "admin", "password",
     "placeholder", "dev", "test", "xxx", "todo"}
)  # fmt: skip
MIN_TOKEN_LENGTH = 16


class ServingConfigError(ValueError):
    """A setting is missing or unsafe; the message names the variable and the fix."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _fraction(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ServingConfigError(f"{name}={raw!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise ServingConfigError(f"{name}={raw!r} is not between 0 and 1")
    return value


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ServingConfigError(f"{name}={raw!r} is not a positive integer")
    return int(raw)


@dataclass(frozen=True)
class ServingSettings:
    """What the service serves and how."""

    model_name: str = "churn"
    stable_ref: str = "champion"  # alias (or version number) of the stable variant
    canary_ref: str = ""  # alias or version of the canary variant; empty = no canary
    canary_weight: float = 0.0
    track: str = "stable"  # the variant name of the primary model (a canary Deployment: canary)
    admin_token: str = ""
    dev_mode: bool = False
    prediction_log: str = ".mlops/predictions"  # a directory or s3://bucket/prefix
    prediction_log_flush_s: float = 0.25
    max_batch_rows: int = 10_000
    load_retry_max_s: float = 30.0
    model_store: str = ""  # directory of local bundles (``bundle:<dir>`` refs); empty = none

    @classmethod
    def from_env(cls) -> ServingSettings:
        settings = cls(
            model_name=os.environ.get("SERVING_MODEL_NAME", "").strip() or cls.model_name,
            stable_ref=os.environ.get("SERVING_STABLE_ALIAS", "").strip() or cls.stable_ref,
            canary_ref=os.environ.get("SERVING_CANARY_REF", "").strip(),
            canary_weight=_fraction("SERVING_CANARY_WEIGHT", 0.0),
            track=os.environ.get("SERVING_TRACK", "").strip() or cls.track,
            admin_token=os.environ.get("SERVING_ADMIN_TOKEN", "").strip(),
            dev_mode=_flag("SERVING_DEV_MODE"),
            prediction_log=os.environ.get("SERVING_PREDICTION_LOG", "").strip()
            or cls.prediction_log,
            max_batch_rows=_positive_int("SERVING_MAX_BATCH_ROWS", cls.max_batch_rows),
            model_store=os.environ.get("SERVING_MODEL_STORE", "").strip(),
            prediction_log_flush_s=float(
                _positive_int("SERVING_PREDICTION_LOG_FLUSH_MS", 250) / 1000.0
            ),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse to run with an unusable admin token outside dev mode."""
        if self.dev_mode:
            return
        if (
            self.admin_token.lower() in PLACEHOLDER_TOKENS
            or len(self.admin_token) < MIN_TOKEN_LENGTH
        ):
            raise ServingConfigError(
                "SERVING_ADMIN_TOKEN is empty, a placeholder or shorter than "
                f"{MIN_TOKEN_LENGTH} characters; set a random token (e.g. `openssl rand -hex 24`) "
                "or SERVING_DEV_MODE=true on a development machine"
            )

"""What one app serves: the stable and canary variants, the split between them, and where their
predictions are counted and logged."""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import threading
import zlib
from collections.abc import Callable
from typing import Any

from mlops_serving.aliases import LiveAliases
from mlops_serving.config import ServingSettings
from mlops_serving.metrics import ServingMetrics
from mlops_serving.model import LoadedModel, ModelLoadError
from mlops_serving.predlog import PredictionLog

log = logging.getLogger("mlops_serving")
STABLE, CANARY = "stable", "canary"
LOAD_RETRY_MAX_S = 30.0  # longest wait between start-up attempts to load the stable model


class ServingState:
    """The variants being served and how to load more; swaps are single assignments. Also
    holds the settings, metrics and prediction log, so a request needs one lookup for all."""

    def __init__(
        self,
        settings: ServingSettings,
        metrics: ServingMetrics,
        predictions: PredictionLog,
        loader: Callable[[str, str], LoadedModel],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.predictions = predictions
        self._loader = loader
        self.stable: LoadedModel | None = None
        self.canary: LoadedModel | None = None
        self.canary_weight = 0.0
        # Shadow mode (mlops_serving/shadow.py): the canary scores copies of this share of the
        # requests the stable model answers; set only while the canary's weight is 0.
        self.shadow_share = 0.0
        self.last_errors: dict[str, str] = {}
        self.admin_lock = threading.Lock()
        self.stop = threading.Event()
        # The registry's aliases as they are now (for /model/info); None without a registry.
        self.aliases: LiveAliases | None = None

    @property
    def routed_canary_weight(self) -> float:
        """The canary's share of traffic; 0 while there is no canary."""
        return self.canary_weight if self.canary else 0.0

    def versions(self) -> dict[str, Any]:
        """Which version each variant serves, and the canary's share."""
        return {
            "stable": self.stable.version if self.stable else None,
            "canary": self.canary.version if self.canary else None,
            "canary_weight": self.routed_canary_weight,
            "shadow_share": self.shadow_share if self.canary else 0.0,
        }

    def load(self, variant: str, ref: str) -> LoadedModel:
        """Load ``ref`` beside whatever is serving; on failure record why and raise
        ModelLoadError (also for a loader's unexpected error: the loader thread and the admin
        routes rely on it, and the model serving keeps serving)."""
        try:
            try:
                model = self._loader(self.settings.model_name, ref)
            except ModelLoadError:
                raise
            except Exception as exc:
                log.exception("unexpected error loading %r", ref)
                raise ModelLoadError(
                    f"cannot load {ref!r}: unexpected {type(exc).__name__}: {exc}"
                ) from exc
        except ModelLoadError as exc:
            self.metrics.load_failures.labels(variant).inc()
            self.last_errors[variant] = str(exc)
            log.error("loading %s variant from %r failed: %s", variant, ref, exc)
            raise
        self.last_errors.pop(variant, None)
        return model

    def publish(self) -> None:
        """Show the served versions and the canary's share in the metrics."""
        self.metrics.model_info.clear()
        for variant, model in ((STABLE, self.stable), (CANARY, self.canary)):
            if model is not None:
                self.metrics.model_info.labels(variant, model.version, model.run_id).set(1)
        self.metrics.canary_weight.set(self.routed_canary_weight)

    def route(self, entity_id: str | None) -> tuple[str, LoadedModel | None]:
        """Sticky by entity id (same customer, same variant), random without one."""
        canary, weight = self.canary, self.canary_weight
        if canary is not None and weight > 0.0:
            if entity_id is not None:
                bucket = zlib.crc32(entity_id.encode()) / 0x1_0000_0000
            else:
                bucket = random.random()  # noqa: S311 (traffic split, not security)
            if bucket < weight:
                return CANARY, canary
        return self.settings.track, self.stable

    def load_at_startup(self) -> None:
        """Keep trying the stable model (MLflow may start after us), then the canary once."""
        delay = 1.0
        while not self.stop.is_set() and self.stable is None:
            try:
                self.stable = self.load(STABLE, self.settings.stable_ref)
            except ModelLoadError:
                self.stop.wait(delay)
                delay = min(delay * 2, LOAD_RETRY_MAX_S)
        if self.settings.canary_ref and not self.stop.is_set():
            with contextlib.suppress(ModelLoadError):
                self.canary = self.load(CANARY, self.settings.canary_ref)
                self.canary_weight = self.settings.canary_weight
        self.publish()
        # Move everything loaded so far (mlflow, lightgbm, the app) out of the collector's reach:
        # full collections then only scan request garbage, which keeps tail latency flat.
        gc.collect()
        gc.freeze()

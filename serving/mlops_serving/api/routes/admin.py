"""``/admin/*``: the canary and model swaps the release steps drive, behind the admin token.

Each change holds the state's admin lock, so two release steps never interleave; a model that
fails to load changes nothing (502) and the previous one keeps serving.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from mlops_serving.api.deps import require_admin, serving_state
from mlops_serving.model import ModelLoadError, ModelNotFound
from mlops_serving.state import CANARY, STABLE, ServingState

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class WeightRequest(BaseModel):
    weight: float = Field(
        ge=0.0,
        le=1.0,
        description="Share of traffic the canary answers; with shadow, the share of the stable "
        "model's requests it scores as copies, answering none",
    )
    shadow: bool = Field(default=False, description="Shadow mode: the canary answers nobody")

    def shares(self) -> tuple[float, float]:
        """(canary weight, shadow share) as the state holds them."""
        return (0.0, self.weight) if self.shadow else (self.weight, 0.0)


class CanaryRequest(WeightRequest):
    ref: str = Field(
        description="Alias (e.g. challenger), version number, or bundle:<dir> in the model store"
    )


class ReloadRequest(BaseModel):
    variant: str = Field(default=STABLE, pattern="^(stable|canary)$")


def _published(state: ServingState) -> dict[str, Any]:
    """The served versions after a change, also shown in the metrics."""
    state.publish()
    return state.versions()


@router.post("/canary")
def set_canary(body: CanaryRequest, request: Request) -> dict[str, Any]:
    """Load a model version as the canary (beside the stable one) and route a share to it."""
    state = serving_state(request)
    with state.admin_lock:
        try:
            model = state.load(CANARY, body.ref)
        except ModelNotFound as exc:
            raise HTTPException(404, f"canary not loaded, nothing changed: {exc}") from None
        except ModelLoadError as exc:
            raise HTTPException(502, f"canary not loaded, nothing changed: {exc}") from None
        state.canary = model
        state.canary_weight, state.shadow_share = body.shares()
        return _published(state)


@router.post("/canary/weight")
def set_weight(body: WeightRequest, request: Request) -> dict[str, Any]:
    state = serving_state(request)
    with state.admin_lock:
        if state.canary is None:
            raise HTTPException(409, "no canary loaded; POST /admin/canary first")
        state.canary_weight, state.shadow_share = body.shares()
        return _published(state)


@router.post("/promote")
def promote(request: Request) -> dict[str, Any]:
    """The canary becomes the stable model and takes all traffic."""
    state = serving_state(request)
    with state.admin_lock:
        if state.canary is None:
            raise HTTPException(409, "no canary to promote")
        state.stable, state.canary, state.canary_weight = state.canary, None, 0.0
        state.shadow_share = 0.0
        return _published(state)


@router.post("/rollback")
def rollback(request: Request) -> dict[str, Any]:
    """Stop routing to the canary and unload it; the stable model is untouched."""
    state = serving_state(request)
    with state.admin_lock:
        state.canary, state.canary_weight, state.shadow_share = None, 0.0, 0.0
        return _published(state)


@router.post("/reload")
def reload(body: ReloadRequest, request: Request) -> dict[str, Any]:
    """Re-resolve a variant's alias in the registry and swap in the new version once it
    has loaded and passed a smoke prediction; on failure the old one keeps serving."""
    state = serving_state(request)
    with state.admin_lock:
        current = state.stable if body.variant == STABLE else state.canary
        ref = state.settings.stable_ref if body.variant == STABLE else (
            current.ref if current else state.settings.canary_ref
        )  # fmt: skip
        if not ref:
            raise HTTPException(409, f"no reference to reload the {body.variant} variant from")
        try:
            model = state.load(body.variant, ref)
        except ModelNotFound as exc:
            state.publish()
            raise HTTPException(
                404, f"reload failed, still serving the previous model: {exc}"
            ) from None
        except ModelLoadError as exc:
            state.publish()
            raise HTTPException(
                502, f"reload failed, still serving the previous model: {exc}"
            ) from None
        if body.variant == STABLE:
            state.stable = model
        else:
            state.canary = model
        return {**_published(state), "reloaded": body.variant, "version": model.version}

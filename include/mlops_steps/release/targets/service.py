"""The ``service`` deployment target: the model service's admin API (the embedded default).

The service (serving/mlops_serving) holds a stable and a canary variant in one process and splits
traffic itself, so a release is a few bearer-token calls: load the candidate as the canary at a
share, promote it to stable, or drop it. The admin token comes from ``SERVING_ADMIN_TOKEN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings, required_secret
from mlops_steps.release.targets.base import Release, TrafficState

ADMIN_TOKEN_ENV = "SERVING_ADMIN_TOKEN"  # noqa: S105 (the variable's name, not a token)
_TIMEOUT_S = 120.0  # loading a model beside the running one downloads and smoke-tests it


@dataclass(frozen=True)
class ServiceTarget:
    base_url: str
    token: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceTarget:
        token = required_secret(
            ADMIN_TOKEN_ENV,
            needed_for="the deployment steps need the service's admin token",
            fix="export the same token the service runs with (a Kubernetes Secret in pods)",
        )
        return cls(settings.deploy.service_url, token)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import requests

        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {self.token}"} if path.startswith("/admin") else {}
        try:
            response = requests.request(method, url, json=body, headers=headers, timeout=_TIMEOUT_S)
        except requests.RequestException as exc:
            raise StepError(
                f"the model service is unreachable ({type(exc).__name__})",
                subject=url,
                fix="start the service (make serve) or fix MLOPS_SERVICE_URL",
            ) from None
        if response.status_code in (401, 403):
            raise StepError(
                f"the service refused the admin token (HTTP {response.status_code})",
                subject=ADMIN_TOKEN_ENV,
                fix="use the token the service was started with",
            )
        payload: dict[str, Any] = response.json() if response.content else {}
        # /ready answers 503 with the traffic state while no stable model is loaded yet.
        if response.status_code >= 400 and not (path == "/ready" and response.status_code == 503):
            raise StepError(
                f"HTTP {response.status_code}: {payload.get('detail', response.text)[:500]}",
                subject=f"{method} {url}",
            )
        return payload

    def state(self) -> TrafficState:
        return self._state_of(self._call("GET", "/ready"))

    def _state_of(self, payload: dict[str, Any]) -> TrafficState:
        return TrafficState(
            stable_version=_version(payload.get("stable")),
            canary_version=_version(payload.get("canary")),
            canary_weight=float(payload.get("canary_weight") or 0.0),
            shadow_share=float(payload.get("shadow_share") or 0.0),
        )

    def metrics_urls(self) -> list[str]:
        return [f"{self.base_url}/metrics"]  # one process serves both variants

    def start_canary(self, release: Release, weight: float) -> TrafficState:
        return self._route(release, weight=weight, shadow_share=0.0)

    def start_shadow(self, release: Release, share: float) -> TrafficState:
        return self._route(release, weight=0.0, shadow_share=share)

    def _route(self, release: Release, *, weight: float, shadow_share: float) -> TrafficState:
        """``release`` as the canary with these shares; a loaded canary only changes shares."""
        current = self.state()
        shadow = shadow_share > 0
        shares = {"weight": shadow_share if shadow else weight, "shadow": shadow}
        if current.canary_version == release.version:
            if (current.canary_weight, current.shadow_share) == (weight, shadow_share):
                return current
            return self._state_of(self._call("POST", "/admin/canary/weight", shares))
        ref = f"bundle:{Path(release.bundle_path).name}" if release.bundle_path else release.version
        return self._state_of(self._call("POST", "/admin/canary", {"ref": ref, **shares}))

    def promote(self, release: Release) -> TrafficState:
        current = self.state()
        if current.stable_version == release.version and current.canary_version is None:
            return current  # a retry after the promotion went through
        if current.canary_version != release.version:
            self.start_canary(release, 0.0)
        return self._state_of(self._call("POST", "/admin/promote"))

    def rollback(self, stable: Release | None) -> TrafficState:
        state = self._state_of(self._call("POST", "/admin/rollback"))
        if stable is not None and state.stable_version != stable.version:
            # The service re-resolves its stable alias (champion) in the registry.
            reloaded = self._call("POST", "/admin/reload", {"variant": "stable"})
            state = self._state_of(reloaded)
            if state.stable_version != stable.version:
                raise StepError(
                    f"the service reloaded v{state.stable_version}, expected v{stable.version}",
                    subject=f"{self.base_url} stable variant",
                    fix="check the champion alias and the service's SERVING_STABLE_ALIAS",
                )
        return state


def _version(value: Any) -> str | None:
    return None if value in (None, "") else str(value)

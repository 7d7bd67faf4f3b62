"""Where the canary analysis reads the service's counters (``MLOPS_ANALYSIS_BACKEND``).

* ``scrape`` (the default): every serving process's ``/metrics`` the target lists, summed
  (:func:`mlops_steps.release.analysis.parse_metrics`, :func:`~mlops_steps.release.analysis.merge`).
* ``prometheus``: the Prometheus server that scrapes those processes, through PromQL over its HTTP
  API (:mod:`mlops_steps.release.prometheus`); what a cluster with many pods behind a load balancer
  uses, since no step can reach every pod.

Both answer the same question -- the cumulative counters of each variant's judged version, now --
so the judgement (release/judgement.py) is one, whichever source fed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlops_steps.core.settings import Settings
    from mlops_steps.release.judgement import Snapshot
    from mlops_steps.release.targets.base import DeployTarget


class MetricsSource(Protocol):
    """The service's counters per variant (``stable``, ``canary``, ``shadow``)."""

    def snapshot(
        self, versions: Mapping[str, str | None], *, not_before: float
    ) -> dict[str, Snapshot]:
        """Each variant's counters, counting only samples whose ``version`` label is the version
        ``versions`` names for that variant; ``not_before`` (epoch seconds): the counters must
        include everything served up to then (a Prometheus source waits for a fresh scrape)."""
        ...


class ScrapeSource:
    """Every ``/metrics`` endpoint the deploy target lists, read directly and summed."""

    def __init__(self, target: DeployTarget, session: Any, *, subject: str) -> None:
        self._target, self._session, self._subject = target, session, subject

    def snapshot(
        self, versions: Mapping[str, str | None], *, not_before: float
    ) -> dict[str, Snapshot]:
        from mlops_steps.release.analysis import CanaryFailed, merge, parse_metrics

        del not_before  # a direct read is always current
        urls = self._target.metrics_urls()
        if not urls:
            raise CanaryFailed("no serving process exposes metrics", subject=self._subject)
        texts = []
        for url in urls:
            response = self._session.get(url, timeout=10)
            response.raise_for_status()
            texts.append(response.text)
        return merge(parse_metrics(text, versions) for text in texts)


def open_metrics_source(
    settings: Settings, target: DeployTarget, session: Any, *, subject: str
) -> MetricsSource:
    """The source the settings name (``MLOPS_ANALYSIS_BACKEND``)."""
    if settings.deploy.analysis_backend == "prometheus":
        from mlops_steps.release.prometheus import PrometheusSource

        return PrometheusSource.from_settings(settings, session=session, subject=subject)
    return ScrapeSource(target, session, subject=subject)

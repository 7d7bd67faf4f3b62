"""The canary analysis' counters from the Prometheus server that scrapes the model service
(``MLOPS_ANALYSIS_BACKEND=prometheus``): what a cluster uses, where no step can reach every pod.

The answer is the one :func:`~mlops_steps.release.analysis.parse_metrics` gives for every
process's ``/metrics``, summed (:func:`~mlops_steps.release.analysis.merge`): per variant, the
counters whose ``version`` label is the version judged, the request and latency series of
``/predict`` only. Each family is one ``sum by (...)`` instant query over the HTTP API; the sum
keeps ``instance`` so that the source can sum the processes itself and see each one's counters.

Fail closed, always as :class:`~mlops_steps.release.analysis.CanaryFailed`:

* freshness: a snapshot waits (bounded) until every target of the selector was scraped at or
  after ``not_before`` and is up; the counters then include everything served until then. The
  step's clock and Prometheus' are compared, so they must agree to well under a scrape interval;
* Prometheus unreachable, an HTTP error, a status other than ``success``, no target matching the
  selector, a NaN, or a series without a ``version`` label;
* counter resets: the judge diffs raw cumulative counters, and a process that restarted (or left)
  makes the sum go down. The source remembers each process's counters and fails when one went
  down or vanished between two snapshots. A process that restarted *and* served more than it had
  counted before, between two snapshots, is not seen (Prometheus' ``resets()`` would need a
  range per series); the traffic check of the analysis (the service's state) is the backstop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_steps.core.sections import DeploySettings
from mlops_steps.release.analysis import CanaryFailed
from mlops_steps.release.judgement import Snapshot

if TYPE_CHECKING:
    from mlops_steps.core.settings import Settings

#: The settings' defaults (core/sections.py DeploySettings, the one source): the job the
#: ServiceMonitor (deploy/monitoring/servicemonitor.yaml) gives a model's targets, and how long
#: a snapshot waits for a scrape after ``not_before``.
DEFAULT_SELECTOR_TEMPLATE = DeploySettings.prometheus_selector_template
DEFAULT_FRESHNESS_TIMEOUT_S = DeploySettings.prometheus_freshness_timeout_s
_POLL_S = 0.25
_HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class _Family:
    """One counter family of the service: which series, and where its samples go."""

    metric: str
    matcher: str  # extra label matchers ("" for none)
    key_label: str  # the label a Snapshot field is keyed by
    field: str  # the Snapshot field


_PREDICT = 'endpoint="predict"'
_FAMILIES = (
    _Family("serving_requests_total", _PREDICT, "status", "requests"),
    _Family("serving_request_latency_seconds_bucket", _PREDICT, "le", "latency_buckets"),
    _Family("serving_prediction_score_bucket", "", "le", "score_buckets"),
    _Family("serving_predicted_class_total", "", "class", "classes"),
    _Family("serving_shadow_agreement_total", "", "outcome", "agreement"),
)
_BUCKETED = ("latency_buckets", "score_buckets")

# (instance, variant, version, family field, key) -> counter value
_Counters = dict[tuple[str, str, str, str, Any], float]


def label_matchers(selector: str) -> str:
    """PromQL label matchers (without braces) for a job name or a ``{...}`` matcher list.

    ``churn-serving`` becomes ``job="churn-serving"``; ``{namespace="mlops",service="x"}`` is
    taken as written.
    """
    selector = selector.strip()
    if selector.startswith("{") and selector.endswith("}"):
        inner = selector[1:-1].strip()
        if inner:
            return inner
    elif selector and "{" not in selector and "}" not in selector:
        escaped = selector.replace("\\", "\\\\").replace('"', '\\"')
        return f'job="{escaped}"'
    raise CanaryFailed(
        f"selector {selector!r} is neither a job name nor a PromQL label matcher list",
        subject="the Prometheus selector",
        fix='name the job (churn-serving) or write matchers in braces: {namespace="mlops"}',
    )


class PrometheusSource:
    """The service's counters per variant, read from Prometheus with PromQL instant queries."""

    def __init__(
        self,
        url: str,
        session: Any,
        *,
        selector: str,
        subject: str,
        freshness_timeout_s: float = DEFAULT_FRESHNESS_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        self.matchers = label_matchers(selector)
        self._session, self._subject = session, subject
        self._freshness_timeout_s = freshness_timeout_s
        self._last: _Counters = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        session: Any,
        subject: str,
        selector: str | None = None,
        freshness_timeout_s: float | None = None,
    ) -> PrometheusSource:
        """The Prometheus of ``MLOPS_PROMETHEUS_URL``, the model's series of
        ``MLOPS_PROMETHEUS_SELECTOR`` (``<model>-serving``) unless ``selector``."""
        deploy = settings.deploy
        return cls(
            deploy.prometheus_url,
            session,
            selector=selector or deploy.prometheus_selector,
            subject=subject,
            freshness_timeout_s=freshness_timeout_s or deploy.prometheus_freshness_timeout_s,
        )

    def snapshot(
        self, versions: Mapping[str, str | None], *, not_before: float
    ) -> dict[str, Snapshot]:
        """Each variant's counters, summed over every process, once all were scraped after
        ``not_before`` (epoch seconds)."""
        self._wait_for_scrapes(not_before)
        counters: _Counters = {}
        for family in _FAMILIES:
            counters.update(self._family(family, versions))
        self._refuse_resets(counters, versions)
        self._last = counters
        snapshots: dict[str, Snapshot] = {}
        for (_, variant, _, field, key), value in counters.items():
            into = getattr(snapshots.setdefault(variant, Snapshot()), field)
            into[key] = into.get(key, 0.0) + value
        return snapshots

    def _wait_for_scrapes(self, not_before: float) -> None:
        """Return once every target of the selector is up and was scraped at ``not_before`` or
        later; fail when that has not happened within the freshness timeout."""
        deadline = time.monotonic() + self._freshness_timeout_s
        while True:
            health = {
                _instance(s): _value(s, "up", self._subject)
                for s in self.query(f"up{{{self.matchers}}}")
            }
            scraped = {
                _instance(s): _value(s, "timestamp(up)", self._subject)
                for s in self.query(f"timestamp(up{{{self.matchers}}})")
            }
            stale = sorted(i for i, at in scraped.items() if at < not_before)
            down = sorted(i for i, up in health.items() if up != 1.0)
            if scraped and not stale and not down:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S)
        waited = f"within {self._freshness_timeout_s:g} s"
        if not scraped:
            raise CanaryFailed(
                f"Prometheus at {self.url} has no target matching {{{self.matchers}}} {waited}",
                subject=self._subject,
                fix="deploy deploy/monitoring/servicemonitor.yaml (or a scrape job) for the "
                "model's service, or point the selector at the job that scrapes it",
            )
        problems = [f"down: {', '.join(down)}"] if down else []
        if stale:
            problems.append(f"not scraped since {not_before:.3f}: {', '.join(stale)}")
        raise CanaryFailed(
            f"Prometheus at {self.url} has no fresh scrape of every target of "
            f"{{{self.matchers}}} {waited} ({'; '.join(problems)}), so its counters may miss "
            "what was served",
            subject=self._subject,
            fix="check the targets on Prometheus' /targets page and the serving pods; a longer "
            "scrape interval needs a longer freshness timeout; the step's and Prometheus' clocks "
            "must agree",
        )

    def _family(self, family: _Family, versions: Mapping[str, str | None]) -> _Counters:
        """One family's counters of the judged versions, per process."""
        matchers = ",".join(m for m in (self.matchers, family.matcher) if m)
        grouping = f"instance, variant, version, {family.key_label}"
        query = f"sum by ({grouping}) ({family.metric}{{{matchers}}})"
        counters: _Counters = {}
        for series in self.query(query):
            labels = series.get("metric", {})
            variant = labels.get("variant")
            if variant is None or variant not in versions:
                continue
            if "version" not in labels:
                raise CanaryFailed(
                    f"has no 'version' label on {family.metric} in Prometheus at {self.url}, so "
                    "the metrics of the version judged cannot be told from any other's",
                    subject=self._subject,
                    fix="upgrade the model service to one that labels its metrics by version",
                )
            if labels["version"] != versions.get(variant):
                continue
            raw_key = labels.get(family.key_label, "")
            key = float(raw_key) if family.field in _BUCKETED else raw_key
            value = _value(series, family.metric, self._subject)
            counters[(_instance(series), variant, labels["version"], family.field, key)] = value
        return counters

    def _refuse_resets(self, counters: _Counters, versions: Mapping[str, str | None]) -> None:
        """Fail when a process's counter of a judged version went down or vanished since the
        last snapshot: a restart (or a process gone) that the judge's deltas would misread."""
        judged = {(variant, version) for variant, version in versions.items()}
        for key, before in self._last.items():
            instance, variant, version, field, label = key
            if (variant, version) not in judged:
                continue
            now = counters.get(key)
            if now is None or now < before:
                seen = "vanished" if now is None else f"went from {before:g} to {now:g}"
                raise CanaryFailed(
                    f"a counter of {variant} v{version} on {instance} {seen} ({field} "
                    f"{label!r}) between two reads of Prometheus at {self.url}: the process "
                    "restarted or stopped, so the counters before and after cannot be compared",
                    subject=self._subject,
                    fix="find why the serving process restarted (its pod's events and logs), "
                    "then run the analysis again",
                )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector, or CanaryFailed naming Prometheus and what it said."""
        import requests

        endpoint = f"{self.url}/api/v1/query"
        try:
            response = self._session.get(
                endpoint, params={"query": promql}, timeout=_HTTP_TIMEOUT_S
            )
        except requests.RequestException as exc:
            raise CanaryFailed(
                f"cannot reach Prometheus at {self.url} ({type(exc).__name__}: {exc})",
                subject=self._subject,
                fix="start Prometheus or set MLOPS_PROMETHEUS_URL to the one that scrapes the "
                "model's service (MLOPS_ANALYSIS_BACKEND=scrape reads the processes directly)",
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            said = body.get("error") or response.text[:200]
            raise CanaryFailed(
                f"Prometheus at {self.url} answered {response.status_code} "
                f"({body.get('errorType', 'no JSON')}: {said}) to {promql!r}",
                subject=self._subject,
                fix="check MLOPS_PROMETHEUS_URL and the selector; Prometheus' log says more",
            )
        data = body.get("data", {})
        if data.get("resultType") != "vector":
            raise CanaryFailed(
                f"Prometheus at {self.url} answered a {data.get('resultType')!r}, not a vector, "
                f"to {promql!r}",
                subject=self._subject,
                fix="point MLOPS_PROMETHEUS_URL at a Prometheus-compatible query API",
            )
        result: list[dict[str, Any]] = data.get("result", [])
        return result


def _instance(series: Mapping[str, Any]) -> str:
    return str(series.get("metric", {}).get("instance", ""))


def _value(series: Mapping[str, Any], name: str, subject: str) -> float:
    """A sample's value; NaN (or no value) fails closed."""
    try:
        value = float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        value = math.nan
    if math.isnan(value):
        raise CanaryFailed(
            f"Prometheus has no number for {name}{series.get('metric', {})}",
            subject=subject,
            fix="check the service's /metrics and the recording of this series in Prometheus",
        )
    return value

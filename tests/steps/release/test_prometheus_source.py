"""The canary analysis' Prometheus backend against a real ``prometheus`` scraping two real
processes of the model service (a multiclass model served from bundles: v1 stable, v2 canary in
one process and shadow in the other): its snapshot is the summed ``/metrics`` of both processes
(what the scrape backend reads), it waits for a scrape after ``not_before``, and everything it
cannot vouch for -- Prometheus away, an unknown job, a target down, a counter reset, a query
Prometheus refuses -- is a CanaryFailed naming Prometheus and the fix."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from mlflow_server import free_port
from mlops_steps.core.sections import for_model
from mlops_steps.release.analysis import CanaryFailed
from mlops_steps.release.metrics_source import ScrapeSource
from mlops_steps.release.prometheus import (
    DEFAULT_SELECTOR_TEMPLATE,
    PrometheusSource,
    label_matchers,
)
from tests.loopback_proxy import Proxy, reverse_proxy
from tests.prometheus_server import PrometheusServer, host_port, running_prometheus
from tests.service_process import Service
from tests.serving import sklearn_models
from tests.steps.release.test_run_analysis import release  # noqa: F401 (a fixture)

pytestmark = pytest.mark.serving

MODEL = "wine"
JOB = "wine-serving"  # the default selector's job for model wine
PROXIED, DEAD = "wine-proxied", "wine-dead"
TOKEN = "prometheus-source-admin-token-0123456789"
VERSIONS = {"stable": "1", "canary": "2", "shadow": "2"}


@dataclass
class Served:
    bundle: sklearn_models.Bundle
    canary: Service  # v1 stable, v2 canary at half the traffic
    shadow: Service  # v1 stable, v2 scoring a copy of every request
    prometheus: PrometheusServer
    proxy: Proxy  # job PROXIED scrapes the canary process through it


class _Processes:
    """The deploy target's one duty ScrapeSource uses: the processes' /metrics URLs."""

    def __init__(self, *services: Service) -> None:
        self._urls = [f"{s.url}/metrics" for s in services]

    def metrics_urls(self) -> list[str]:
        return self._urls


@pytest.fixture(scope="module")
def served(
    mlflow_server: str,
    service_starter: Callable[..., Service],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("prometheus-source")
    store = directory / "store"
    store.mkdir()
    bundle = sklearn_models.build(MODEL, store, directory)
    shutil.copytree(store / "current", store / "next")  # v2: the same files, its own version
    manifest = json.loads((store / "next" / "manifest.json").read_text())
    (store / "next" / "manifest.json").write_text(json.dumps({**manifest, "version": "2"}))

    def start(**canary: float | bool) -> Service:
        service = service_starter(
            mlflow_server,
            model_name=MODEL,
            admin_token=TOKEN,
            SERVING_MODEL_STORE=str(store),
            SERVING_STABLE_ALIAS="bundle:current",
        )
        assert service.process.poll() is None, service.output.read_text()[-3000:]
        with service.admin() as admin:
            answer = admin.post("/admin/canary", json={"ref": "bundle:next", **canary})
            assert answer.status_code == 200, answer.text
        return service

    canary = start(weight=0.5)
    shadow = start(weight=1.0, shadow=True)  # scores a copy of every request, answers none
    with reverse_proxy(canary.url) as proxy:
        jobs = {
            JOB: [host_port(canary.url), host_port(shadow.url)],
            PROXIED: [host_port(proxy.url)],
            DEAD: [f"127.0.0.1:{free_port()}"],  # nothing listens there
        }
        with running_prometheus(directory / "prometheus", jobs) as prometheus:
            prometheus.wait_for_scrapes(JOB, targets=2)
            yield Served(bundle, canary, shadow, prometheus, proxy)


def _source(served: Served, selector: str = JOB, timeout_s: float = 30.0) -> PrometheusSource:
    return PrometheusSource(
        served.prometheus.url,
        requests.Session(),
        selector=selector,
        subject="canary v2",
        freshness_timeout_s=timeout_s,
    )


def _predict(service: Service, records: list[dict]) -> None:
    with service.client() as http:
        for record in records:
            response = http.post("/predict", json={"features": record})
            assert response.status_code == 200, response.text
        assert http.post("/predict/batch", json={"instances": records[:5]}).status_code == 200
        assert http.post("/predict", json={"features": {}}).status_code == 422


def _shadow_copies(service: Service) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "serving_shadow_agreement_total"
    )


def _serve(served: Served, rows: int, start: int) -> None:
    """``rows`` single predictions, a batch of 5 and a 422 to each process; returns once the
    shadow process counted its copies (scored after the answer) of every row."""
    records = served.bundle.records(rows, start=start)
    expected = _shadow_copies(served.shadow) + rows + 5
    _predict(served.canary, records)
    _predict(served.shadow, records)
    deadline = time.monotonic() + 30
    while (counted := _shadow_copies(served.shadow)) < expected:
        assert time.monotonic() < deadline, f"{counted} of {expected} shadow copies counted"
        time.sleep(0.1)


def test_the_snapshot_is_the_sum_of_every_processs_metrics(served: Served) -> None:
    _serve(served, 60, start=0)
    from_prometheus = _source(served).snapshot(VERSIONS, not_before=time.time())
    processes: Any = _Processes(served.canary, served.shadow)  # all ScrapeSource asks of a target
    scraped = ScrapeSource(processes, requests.Session(), subject="canary v2").snapshot(
        VERSIONS, not_before=0
    )
    assert from_prometheus == scraped
    assert set(from_prometheus) == {"stable", "canary", "shadow"}
    stable, canary, shadow = (from_prometheus[v] for v in ("stable", "canary", "shadow"))
    # 120 single predictions and one 422 per process; batches are not /predict.
    assert stable.requests["200"] + canary.requests["200"] == 60 + 60
    assert sum(stable.requests.values()) + sum(canary.requests.values()) == 122
    assert stable.latency_buckets[float("inf")] + canary.latency_buckets[float("inf")] == 122
    assert sum(shadow.agreement.values()) == 65 and shadow.agreement["agree"] == 65  # same model
    assert sum(canary.classes.values()) == canary.score_buckets[float("inf")] > 0
    assert set(stable.classes) <= {"class_0", "class_1", "class_2"}


def test_a_snapshot_waits_for_a_scrape_after_not_before(served: Served) -> None:
    source = _source(served)
    before = source.snapshot(VERSIONS, not_before=time.time())
    _serve(served, 20, start=60)
    began = time.monotonic()
    after = source.snapshot(VERSIONS, not_before=time.time() + 2.0)
    assert time.monotonic() - began >= 2.0  # no scrape from before then was taken
    sent = sum(after[v].requests.get("200", 0) - before[v].requests.get("200", 0) for v in VERSIONS)
    assert sent == 20 * 2 + 20  # stable+canary in both processes, and the shadow's copies


def test_no_scrape_since_not_before_fails_closed_naming_prometheus_and_the_job(
    served: Served,
) -> None:
    began = time.monotonic()
    with pytest.raises(CanaryFailed, match="no fresh scrape of every target") as failed:
        _source(served, timeout_s=1.5).snapshot(VERSIONS, not_before=time.time() + 3600)
    assert 1.5 <= time.monotonic() - began < 10
    assert served.prometheus.url in str(failed.value) and f'job="{JOB}"' in str(failed.value)
    assert "not scraped since" in str(failed.value) and "Fix:" in str(failed.value)


def test_a_target_that_is_down_fails_closed(served: Served) -> None:
    (dead,) = served.prometheus.query(f'up{{job="{DEAD}"}}')
    with pytest.raises(CanaryFailed, match=f"down: {dead['metric']['instance']}"):
        _source(served, DEAD, timeout_s=1.0).snapshot(VERSIONS, not_before=time.time())


def test_a_job_prometheus_does_not_scrape_fails_closed(served: Served) -> None:
    with pytest.raises(CanaryFailed, match=re.escape('no target matching {job="churn-serving"}')):
        _source(served, "churn-serving", timeout_s=1.0).snapshot(VERSIONS, not_before=0)


def test_a_counter_that_goes_down_is_a_reset_and_fails_closed(served: Served) -> None:
    source = _source(served, PROXIED)
    first = source.snapshot(VERSIONS, not_before=time.time())
    assert first["canary"].requests["200"] > 0
    served.proxy.upstream = served.shadow.url  # "the process restarted": other counters
    try:
        with pytest.raises(CanaryFailed, match="restarted or stopped") as failed:
            source.snapshot(VERSIONS, not_before=time.time())
        assert "canary v2" in str(failed.value)
    finally:
        served.proxy.upstream = served.canary.url


def test_unreachable_prometheus_fails_closed() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = PrometheusSource(url, requests.Session(), selector=JOB, subject="canary v2")
    with pytest.raises(CanaryFailed, match=f"cannot reach Prometheus at {url}.*Fix: start"):
        source.snapshot(VERSIONS, not_before=0)


def test_a_query_prometheus_refuses_fails_closed_with_its_error(served: Served) -> None:
    with pytest.raises(CanaryFailed, match=r"answered 400 \(bad_data: .*Fix:"):
        _source(served, '{job=~"("}', timeout_s=1.0).snapshot(VERSIONS, not_before=0)


@pytest.mark.parametrize(
    ("selector", "matchers"),
    [
        ("churn-serving", 'job="churn-serving"'),
        (
            '{namespace="mlops", service="churn-serving"}',
            'namespace="mlops", service="churn-serving"',
        ),
        ('odd"job', 'job="odd\\"job"'),
    ],
)
def test_a_selector_is_a_job_name_or_label_matchers(selector: str, matchers: str) -> None:
    assert label_matchers(selector) == matchers


@pytest.mark.parametrize("selector", ["", "{}", "job{x}"])
def test_a_selector_that_is_neither_is_refused(selector: str) -> None:
    with pytest.raises(CanaryFailed, match="neither a job name nor"):
        label_matchers(selector)


def test_the_settings_select_the_models_job(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_steps.core.settings import get_settings, load_settings
    from mlops_steps.release.metrics_source import open_metrics_source

    monkeypatch.setenv("MLOPS_ANALYSIS_BACKEND", "prometheus")
    monkeypatch.setenv("MLOPS_PROMETHEUS_URL", "http://127.0.0.1:9999/")
    monkeypatch.setenv("MLOPS_MODEL_NAME", "Churn_Model")
    get_settings.cache_clear()
    no_target: Any = None  # the Prometheus source never asks the deploy target
    source = open_metrics_source(load_settings(), no_target, requests.Session(), subject="v2")
    assert isinstance(source, PrometheusSource)
    assert (source.url, source.matchers) == ("http://127.0.0.1:9999", 'job="churn-model-serving"')


@pytest.mark.parametrize(("candidate", "passes"), [("1", True), ("2", False)])
def test_run_analysis_judges_a_canary_from_prometheus(
    release: tuple[Any, dict[str, Any]],  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    candidate: str,
    passes: bool,
) -> None:
    """The analysis of tests/steps/release/test_run_analysis.py with the Prometheus backend: a
    canary scoring like the champion passes; one trained on flipped labels fails on accuracy."""
    from mlops_steps.core.policies import AnalysisPolicy
    from mlops_steps.core.settings import get_settings, load_settings
    from mlops_steps.release.analysis import run_analysis
    from tests.steps.release.standin_service import StandIn, serving
    from tests.steps.release.test_run_analysis import CANDIDATE, FAST

    settings, scorers = release
    policy = AnalysisPolicy(rounds=2, max_failed_rounds=1, max_psi=1000, **FAST)
    standin = StandIn(stable=("1", scorers["1"]), canary=("2", scorers[candidate]), weight=0.5)
    job = for_model(DEFAULT_SELECTOR_TEMPLATE, settings.deploy.serving_name)
    with (
        serving(standin),
        running_prometheus(tmp_path / "prometheus", {job: [host_port(standin.url)]}) as prometheus,
    ):
        prometheus.wait_for_scrapes(job, targets=1)
        monkeypatch.setenv("MLOPS_SERVICE_URL", standin.url)
        monkeypatch.setenv("SERVING_ADMIN_TOKEN", "standin-token")
        monkeypatch.setenv("MLOPS_ANALYSIS_BACKEND", "prometheus")
        monkeypatch.setenv("MLOPS_PROMETHEUS_URL", prometheus.url)
        get_settings.cache_clear()
        if passes:
            result = run_analysis(load_settings(), "2", CANDIDATE, policy)
            assert result["passed"] is True and result["rounds_completed"] == 2
            # Every request the replay sent was counted by Prometheus, none twice.
            for judged in result["rounds"]:
                counted = sum(v["requests"] for v in judged["variants"].values())
                assert counted == judged["requests_sent"], judged
        else:
            with pytest.raises(CanaryFailed, match="canary_accuracy"):
                run_analysis(load_settings(), "2", CANDIDATE, policy)

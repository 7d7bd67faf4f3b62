"""The policy scanner (`make scan`, checkov) as CI runs it: part of `make test`, offline, in its own
pinned virtualenv, failing on any failed check; and every exception it is told to skip sits in the
manifest or Dockerfile it concerns, with its reason."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+\-]+$")
#: The deliberate exceptions, by file: adding one is a decision this list records.
EXPECTED_SKIPS = {
    "serving/k8s/deployment-stable.yaml": {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"},
    "serving/k8s/deployment-canary.yaml": {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"},
    # The serving chart's templates (each model's Deployments), scanned as they stand.
    "deploy/helm/mlops-serving/templates/deployment-stable.yaml": {
        "CKV_K8S_15",
        "CKV_K8S_35",
        "CKV_K8S_43",
    },
    "deploy/helm/mlops-serving/templates/deployment-canary.yaml": {
        "CKV_K8S_15",
        "CKV_K8S_35",
        "CKV_K8S_43",
    },
    "Dockerfile.task": {"CKV_DOCKER_2"},
}


def _dry_run(target: str) -> list[str]:
    """The commands `make <target>` would run, in order (nothing is run)."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed: CI runs `make test`")
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.replace("\\\n", " ").splitlines()


def test_make_test_runs_the_scan_before_the_tests() -> None:
    commands = _dry_run("test")
    scans = [i for i, c in enumerate(commands) if "/bin/checkov " in c]
    tests = [i for i, c in enumerate(commands) if "-m pytest" in c]
    installs = [i for i, c in enumerate(commands) if "-r requirements.txt" in c]
    assert len(scans) == 1 and len(tests) == 1 and installs, commands
    assert installs[0] < tests[0] and scans[0] < tests[0]


def test_the_scan_is_offline_covers_both_frameworks_and_fails_on_any_failure() -> None:
    (scan,) = [c for c in _dry_run("scan") if "/bin/checkov " in c]
    words = scan.split()
    checkov = next(w for w in words if w.endswith("/bin/checkov"))
    assert checkov == ".venv-scan/bin/checkov", "the scanner has its own virtualenv"
    # No platform: no API key, no policy metadata download, no upload, no PyPI version check.
    assert {"--skip-download", "--skip-results-upload"} <= set(words)
    assert {"BC_SKIP_MAPPING=TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK=true"} <= set(words)
    assert not any(w.startswith(("--bc-api-key", "--prisma-api-url")) for w in words)
    # The whole repository, both frameworks; a file it cannot parse fails too.
    assert words[words.index("--directory") + 1] == "."
    assert words[words.index("--framework") + 1 : words.index("--framework") + 3] == [
        "kubernetes",
        "dockerfile",
    ]
    assert "CKV_PARSE_ERROR_FAIL=true" in words
    assert not any(w.startswith(("--soft-fail", "--skip-check", "--baseline", "-s")) for w in words)


def test_the_scanner_is_pinned_apart_from_the_project() -> None:
    lines = [
        line.split("#", 1)[0].strip()
        for line in (REPO / "requirements-scan.txt").read_text().splitlines()
    ]
    pins = [line for line in lines if line]
    assert [p for p in pins if not PIN.match(p)] == []
    assert "checkov==3.3.30" in pins
    for shared in ("requirements.txt", "requirements-dev.txt", "constraints.txt"):
        assert "checkov" not in (REPO / shared).read_text(), f"{shared} must not pull checkov"
    assert ".venv-scan/" in (REPO / ".gitignore").read_text().splitlines()
    assert ".venv-scan" in (REPO / ".dockerignore").read_text().splitlines()


def _manifest_skips(path: Path) -> dict[str, str]:
    skips: dict[str, str] = {}
    for document in yaml.safe_load_all(path.read_text()):
        annotations = (document or {}).get("metadata", {}).get("annotations") or {}
        for key, value in annotations.items():
            if key.startswith("checkov.io/skip"):
                # checkov splits the value at "=": exactly one, a reason after it.
                check, reason = value.split("=")
                skips[check] = reason
    return skips


def _dockerfile_skips(path: Path) -> dict[str, str]:
    found = re.findall(r"^# checkov:skip=([A-Z0-9_]+):(.*)$", path.read_text(), re.MULTILINE)
    return dict(found)


def test_every_skip_is_expected_and_gives_its_reason() -> None:
    found: dict[str, dict[str, str]] = {}
    manifests = [*REPO.glob("deploy/**/*.yaml"), *REPO.glob("serving/k8s/*.yaml")]
    for path in manifests:
        if skips := _manifest_skips(path):
            found[str(path.relative_to(REPO))] = skips
    for dockerfile in ("Dockerfile", "Dockerfile.task", "serving/Dockerfile"):
        if skips := _dockerfile_skips(REPO / dockerfile):
            found[dockerfile] = skips
    assert {name: set(skips) for name, skips in found.items()} == EXPECTED_SKIPS
    for name, skips in found.items():
        for check, reason in skips.items():
            assert len(reason.split()) >= 8, f"{name}: {check} needs its reason"

"""The three images (Airflow, task, serving), checked without a Docker engine: every file they copy
exists and reaches the build context, bases are pinned, pip installs only pinned requirement files,
the images that run pipeline code or serve requests run as a non-root user."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.task", "serving/Dockerfile"]
PIN = re.compile(r"^[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+\-]+(\s*;.*)?$")


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (REPO / dockerfile).read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_copy_sources_exist(dockerfile: str) -> None:
    copies = [args for keyword, args in _instructions(dockerfile) if keyword == "COPY"]
    assert copies
    for arguments in copies:
        if any(a.startswith("--from=") for a in arguments.split()):
            continue  # copies from another stage, not from the build context
        parts = [p for p in shlex.split(arguments) if not p.startswith("--")]
        if parts and parts[0].startswith("["):
            parts = json.loads(" ".join(parts))
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"{dockerfile}: COPY {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_base_images_are_pinned(dockerfile: str) -> None:
    images = [args.split()[0] for keyword, args in _instructions(dockerfile) if keyword == "FROM"]
    assert images
    stages = {
        args.split()[-1].lower()
        for keyword, args in _instructions(dockerfile)
        if keyword == "FROM" and " as " in args.lower()
    }
    for image in images:
        if image.lower() in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{dockerfile}: FROM {image} has no tag"
        assert tag != "latest", f"{dockerfile}: FROM {image} is not a version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_pip_installs_only_constrained_requirements_or_no_deps(dockerfile: str) -> None:
    commands = [
        command
        for keyword, args in _instructions(dockerfile)
        if keyword == "RUN"
        for command in re.split(r"&&|;", args)
        if re.search(r"\bpip3? install\b", command)
    ]
    assert commands
    for command in commands:
        words = shlex.split(command.split("install", 1)[1])
        requirements: list[str] = []
        constraints: list[str] = []
        positional: list[str] = []
        flags: set[str] = set()
        while words:
            word = words.pop(0)
            if word in {"-r", "--requirement"}:
                requirements.append(words.pop(0))
            elif word in {"-c", "--constraint"}:
                constraints.append(words.pop(0))
            elif word.startswith("-"):
                flags.add(word)
            else:
                positional.append(word)
        assert flags <= {"--no-cache-dir", "--no-deps"}, f"{dockerfile}: {command}"
        if "--no-deps" in flags:
            continue
        assert requirements and not positional, f"{dockerfile}: {command} installs unpinned"
        assert [Path(c).name for c in constraints] == ["constraints.txt"], (
            f"{dockerfile}: {command} is not constrained by constraints.txt"
        )


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str) -> bool:
    return any(
        fnmatch.fnmatch(path, pattern) or path.startswith(f"{pattern}/")
        for pattern in _dockerignore()
    )


def test_dockerignore_keeps_local_state_and_secrets_out_but_not_what_is_copied() -> None:
    for kept_out in (".env", "airflow_settings.yaml", ".mlops", ".venv", ".git", "mlflow.db"):
        assert _ignored(kept_out), f".dockerignore lets {kept_out} into the build context"
    for dockerfile in DOCKERFILES:
        for keyword, arguments in _instructions(dockerfile):
            if keyword != "COPY" or "--from=" in arguments:
                continue
            sources = [p for p in shlex.split(arguments) if not p.startswith("--")][:-1]
            for source in sources:
                assert not _ignored(source.rstrip("/")), f"{dockerfile} copies ignored {source}"


def test_constraints_pin_every_package_exactly() -> None:
    lines = [
        line.split("#", 1)[0].strip()
        for line in (REPO / "constraints.txt").read_text().splitlines()
    ]
    pins = [line for line in lines if line]
    assert len(pins) > 50
    unpinned = [line for line in pins if not PIN.match(line)]
    assert unpinned == [], f"constraints.txt entries without an exact pin: {unpinned}"
    pinned = {re.split(r"[=\[]", line, maxsplit=1)[0].lower().replace("_", "-") for line in pins}
    for requirements in ("requirements.txt", "requirements-task.txt", "serving/requirements.txt"):
        for raw in (REPO / requirements).read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if line:
                name = re.split(r"[=<>!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-")
                assert name in pinned, f"{requirements}: {name} is not pinned in constraints.txt"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.task", "serving/Dockerfile"])
def test_task_and_serving_images_are_multi_stage_and_non_root(dockerfile: str) -> None:
    instructions = _instructions(dockerfile)
    assert [k for k, _ in instructions].count("FROM") == 2, "build stage + slim runtime stage"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in {"0", "root"}, f"{dockerfile} runs as root"
    runtime = instructions[[k for k, _ in instructions].index("FROM", 1) :]
    assert not any(k == "RUN" and "pip install" in a for k, a in runtime), "no builds at runtime"


def test_airflow_image_is_the_official_base_with_the_project_on_it() -> None:
    instructions = _instructions("Dockerfile")
    (base,) = [args for keyword, args in instructions if keyword == "FROM"]
    requirements = (REPO / "requirements.txt").read_text()
    version = re.search(r"apache-airflow==([0-9.]+)", requirements)
    assert version and base == f"apache/airflow:{version[1]}-python3.11"
    copied = {shlex.split(a)[-2].rstrip("/") for k, a in instructions if k == "COPY"}
    assert {"dags", "plugins", "include"} <= copied
    environment = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "MLOPS_RUNNER=kubernetes" in environment


def test_serving_image_runs_as_non_root_with_a_health_check() -> None:
    instructions = dict(_instructions("serving/Dockerfile"))
    assert instructions["USER"] == "50000"
    assert "http://127.0.0.1:8000/health" in instructions["HEALTHCHECK"]
    assert instructions["EXPOSE"] == "8000"
    command = json.loads(instructions["CMD"])
    assert command[:3] == ["uvicorn", "--factory", "mlops_serving.app:create_app"]


def test_airflow_image_states_its_non_root_user_before_any_build_step() -> None:
    keywords = [keyword for keyword, _ in _instructions("Dockerfile")]
    users = [args for keyword, args in _instructions("Dockerfile") if keyword == "USER"]
    assert users == ["airflow"]
    assert keywords.index("USER") < keywords.index("RUN")


def test_airflow_image_health_check_is_the_per_component_script() -> None:
    instructions = _instructions("Dockerfile")
    (check,) = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command == ["bash", "/opt/mlops/healthcheck.sh"]
    copies = [shlex.split(a) for k, a in instructions if k == "COPY"]
    assert ["--chown=airflow:0", "deploy/airflow/healthcheck.sh", command[1]] in copies


def test_task_image_declares_no_health_check_and_says_why() -> None:
    text = (REPO / "Dockerfile.task").read_text()
    assert dict(_instructions("Dockerfile.task"))["HEALTHCHECK"] == "NONE"
    assert re.search(r"^# checkov:skip=CKV_DOCKER_2:\S.+$", text, re.MULTILINE)


#: PID 1's command line -> the check the script runs (None: healthy without a check).
COMPONENT_CHECKS = {
    "/usr/bin/dumb-init -- /entrypoint api-server": (
        "curl --fail --silent --show-error --max-time 10 --output /dev/null "
        "http://127.0.0.1:8080/api/v2/monitor/health"
    ),
    "/usr/bin/dumb-init -- /entrypoint scheduler": (
        "airflow jobs check --job-type SchedulerJob --local"
    ),
    "/usr/bin/dumb-init -- /entrypoint bash -c exec airflow triggerer": (
        "airflow jobs check --job-type TriggererJob --local"
    ),
    "/usr/bin/dumb-init -- /entrypoint dag-processor": (
        "airflow jobs check --job-type DagProcessorJob --local"
    ),
    "/usr/bin/dumb-init -- /entrypoint airflow tasks run mlops_training__churn train": None,
    "/usr/bin/dumb-init -- /entrypoint db migrate": None,
}


@pytest.mark.parametrize("cmdline", sorted(COMPONENT_CHECKS))
@pytest.mark.parametrize("check_fails", [False, True])
def test_airflow_health_check_script_runs_the_components_check(
    cmdline: str, check_fails: bool, tmp_path: Path
) -> None:
    import subprocess

    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("airflow", "curl"):  # stand-ins that record their argv and pass or fail
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit {int(check_fails)}\n')
        stub.chmod(0o755)
    proc_cmdline = tmp_path / "cmdline"
    proc_cmdline.write_bytes(b"\0".join(w.encode() for w in cmdline.split()) + b"\0")
    result = subprocess.run(
        ["bash", str(REPO / "deploy/airflow/healthcheck.sh")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "AIRFLOW_HEALTHCHECK_CMDLINE": str(proc_cmdline)},
        capture_output=True,
        text=True,
        check=False,
    )
    expected = COMPONENT_CHECKS[cmdline]
    ran = calls.read_text().splitlines() if calls.exists() else []
    assert ran == ([expected] if expected else [])
    assert result.returncode == (1 if expected and check_fails else 0), result.stderr

"""The distributed profile on Docker Compose (deploy/compose/), checked without a Docker engine: the
file is valid against the Compose Specification's JSON Schema (vendored: tests/fixtures/
compose-spec.json, its source in compose-spec.SOURCE), and a broken copy is not; its services are
the profile's (PostgreSQL, Redis, MinIO, MLflow, two schedulers, two Celery workers, the model
service) and build from files in the repository; every Airflow component runs the CeleryExecutor
on the object-store data plane, as the Helm values do; no secret is written in it, and every
variable it reads is listed in .env.example."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SCHEMA_FILE = REPO / "tests" / "fixtures" / "compose-spec.json"
SCHEMA_SOURCE = REPO / "tests" / "fixtures" / "compose-spec.SOURCE"
HELM_VALUES = REPO / "deploy" / "airflow" / "values.yaml"

SERVICES = {
    "postgres", "redis", "minio", "minio-init", "mlflow", "airflow-init", "airflow-apiserver",
    "airflow-scheduler-1", "airflow-scheduler-2", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker-1", "airflow-worker-2", "serving",
}  # fmt: skip
#: ${NAME}, ${NAME:-default}, ${NAME:?error}, ... ("$$" is a literal dollar, removed first).
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
UNBRACED = re.compile(r"\$[A-Za-z_]")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|KEY_ID$")
#: The whole value is one variable that must be set: ${NAME:?message}.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
DATA_PLANE = ("MLOPS_DATA_ROOT", "MLOPS_PREDICTION_LOG", "MLOPS_LABELS", "MLOPS_MODEL_STORE")
PIN = re.compile(r"^[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+$")


@functools.cache
def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@functools.cache
def _schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(schema, dict)
    return schema


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(_schema())
    return jsonschema.Draft7Validator(_schema())


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env(name: str) -> dict[str, str]:
    environment = _services()[name].get("environment") or {}
    assert isinstance(environment, dict), f"{name}: environment as a mapping"
    return {key: str(value) for key, value in environment.items()}


def _command(name: str) -> list[str]:
    command = _services()[name].get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _airflow_services() -> list[str]:
    return sorted(name for name in _services() if name.startswith("airflow-"))


def _strings(node: Any) -> Iterator[str]:
    """Every string value in the document (keys are not interpolated by Compose)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _interpolations(text: str) -> list[tuple[str, str]]:
    """(variable, modifier) of each interpolation in ``text``."""
    return INTERPOLATION.findall(text.replace("$$", ""))


def _masked(text: str) -> str:
    """``text`` with every interpolation removed: what is left is written in the file."""
    return INTERPOLATION.sub("", text.replace("$$", ""))


def _env_example() -> dict[str, str]:
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            entries[name.strip()] = value.strip()
    return entries


def _flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` / ``--name value`` / ``--flag`` of a command line, by name."""
    flags: dict[str, str] = {}
    for i, word in enumerate(command):
        if word.startswith("--"):
            name, sep, value = word.partition("=")
            if not sep and i + 1 < len(command) and not command[i + 1].startswith("--"):
                value = command[i + 1]
            flags[name] = value
    return flags


def _build_context(build: dict[str, Any]) -> Path:
    return (COMPOSE_DIR / str(build.get("context", "."))).resolve()


def _dockerfile_lines(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


# The schema


def test_the_vendored_schema_is_draft_7_and_the_recorded_file() -> None:
    assert _schema()["$schema"].rstrip("#/").endswith("draft-07/schema")
    source = SCHEMA_SOURCE.read_text()
    assert "github.com/compose-spec/compose-spec" in source
    assert re.search(r"^Commit: [0-9a-f]{40}\b", source, re.MULTILINE)
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert f"SHA-256: {digest}" in source, "compose-spec.json differs from the recorded file"


def test_the_compose_file_is_valid_against_the_compose_spec() -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator().iter_errors(_compose())
    ]
    assert errors == []


def _misspelled_key(document: dict[str, Any]) -> None:
    document["services"]["airflow-worker-1"]["hostnmae"] = "airflow-worker-1"


def _unknown_condition(document: dict[str, Any]) -> None:
    document["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"


def _build_as_a_list(document: dict[str, Any]) -> None:
    document["services"]["serving"]["build"] = ["../..", "serving/Dockerfile"]


def _misspelled_top_level_key(document: dict[str, Any]) -> None:
    document["volume"] = document.pop("volumes")


@pytest.mark.parametrize(
    "breakage",
    [_misspelled_key, _unknown_condition, _build_as_a_list, _misspelled_top_level_key],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_broken_copy_fails_the_schema(breakage: Any) -> None:
    """The schema check is not vacuous: each of these mistakes is caught."""
    broken = copy.deepcopy(_compose())
    breakage(broken)
    assert not _validator().is_valid(broken)


# The services and their images


def test_the_profile_services_exist() -> None:
    assert set(_services()) == SERVICES
    assert set(_compose()["volumes"]) >= {"postgres-data", "minio-data"}


def _check_inline_dockerfile(name: str, build: dict[str, Any], context: Path) -> None:
    """Bases pinned or another service's image; COPY sources in the context (and not dropped by
    .dockerignore); pip installs pinned packages or requirement files under constraints."""
    ignored = set((REPO / ".dockerignore").read_text().split())
    contexts = build.get("additional_contexts") or {}
    for keyword, arguments in _dockerfile_lines(build["dockerfile_inline"]):
        if keyword == "FROM":
            base = arguments.split()[0]
            if base in contexts:
                other = contexts[base].removeprefix("service:")
                assert "build" in _services().get(other, {}), f"{name}: FROM {base} ({other})"
            else:
                assert ":" in base and not base.endswith(":latest"), f"{name}: pin {base}"
        elif keyword == "COPY":
            words = [w for w in shlex.split(arguments) if not w.startswith("--")]
            for source in words[:-1]:
                assert (context / source).exists(), f"{name}: COPY {source} does not exist"
                assert source not in ignored, f"{name}: .dockerignore drops {source}"
        elif keyword == "RUN":
            for command in re.split(r"&&|;", arguments):
                if not re.search(r"\bpip3? install\b", command):
                    continue
                words = shlex.split(command.split("install", 1)[1])
                packages = [w for w in words if not w.startswith("-")]
                if "-r" in words:  # requirement files (copied above), under the constraints
                    assert "-c" in words, f"{name}: {command}"
                    assert all((context / Path(p).name).is_file() for p in packages), command
                else:
                    assert packages and all(PIN.match(p) for p in packages), command


def test_builds_and_bind_mounts_use_files_of_the_repository() -> None:
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            image = service["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
            continue
        assert isinstance(build, dict), name
        context = _build_context(build)
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        if "dockerfile" in build:
            assert "dockerfile_inline" not in build, name
            assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"
        else:
            _check_inline_dockerfile(name, build, context)
    for name, service in _services().items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: mounts {source}, not found"


def test_airflow_components_run_the_project_image() -> None:
    for name in _airflow_services():
        build = _services()[name]["build"]
        assert _build_context(build) == REPO, name
        if name.startswith("airflow-worker-"):
            continue
        assert build["dockerfile"] == "Dockerfile", name
    commands = {name: _command(name) for name in _airflow_services()}
    assert commands["airflow-apiserver"] == ["api-server"]
    assert commands["airflow-dag-processor"] == ["dag-processor"]
    assert commands["airflow-triggerer"] == ["triggerer"]
    assert commands["airflow-init"][-1].startswith("airflow db migrate")


def test_two_schedulers_and_two_celery_workers_with_distinct_hostnames() -> None:
    services = _services()
    schedulers = [n for n in _airflow_services() if _command(n) == ["scheduler"]]
    workers = [n for n in _airflow_services() if _command(n)[:2] == ["celery", "worker"]]
    assert len(schedulers) == 2 and len(workers) == 2
    for group in (schedulers, workers):
        hostnames = [services[n].get("hostname") for n in group]
        assert all(hostnames) and len(set(hostnames)) == len(group), hostnames
    for name in workers:
        # Celery names the node celery@<hostname>; its health check pings that node.
        (probe,) = [t for t in services[name]["healthcheck"]["test"] if "inspect ping" in t]
        assert "celery@$${HOSTNAME}" in probe, probe


def test_workers_have_the_step_package_dependencies() -> None:
    """The local runner starts steps with the worker's interpreter: the worker image is the
    Airflow image plus requirements-task.txt, under constraints.txt."""
    for name in _airflow_services():
        assert _env(name)["MLOPS_RUNNER"] == "local", name
        if not name.startswith("airflow-worker-"):
            continue
        build = _services()[name]["build"]
        (base,) = [
            a.split()[0] for k, a in _dockerfile_lines(build["dockerfile_inline"]) if k == "FROM"
        ]
        airflow_image = build["additional_contexts"][base].removeprefix("service:")
        assert _services()[airflow_image]["build"]["dockerfile"] == "Dockerfile"
        assert re.search(
            r"pip install .*-r \S*requirements-task\.txt -c \S*constraints\.txt",
            build["dockerfile_inline"],
        )


def test_every_airflow_component_runs_celery_on_the_object_store() -> None:
    for name in _airflow_services():
        env = _env(name)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        )
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["AIRFLOW_CONN_MLFLOW_DEFAULT"] == "http://mlflow:5000", name
        for setting in DATA_PLANE:
            assert env[setting].startswith("s3://"), f"{name}: {setting}={env[setting]}"
        for setting in DATA_PLANE[1:]:
            assert "{model}" in env[setting], f"{name}: {setting} is per model"
    # The pipeline's settings as the DAG processor reads them (it builds the tasks the workers
    # run) are every component's.
    parsed = {k: v for k, v in _env("airflow-dag-processor").items() if k.startswith("MLOPS_")}
    for name in _airflow_services():
        assert parsed.items() <= _env(name).items(), name


def test_the_data_plane_is_the_helm_values_and_the_buckets_exist() -> None:
    env = _env("airflow-worker-1")
    serving = _env("serving")
    model = serving["SERVING_MODEL_NAME"]
    assert serving["SERVING_PREDICTION_LOG"] == env["MLOPS_PREDICTION_LOG"].format(model=model)
    assert serving["SERVING_MODEL_STORE"] == env["MLOPS_MODEL_STORE"].format(model=model)
    assert serving["MLFLOW_TRACKING_URI"] == env["AIRFLOW_CONN_MLFLOW_DEFAULT"]
    helm = {e["name"]: e["value"] for e in yaml.safe_load(HELM_VALUES.read_text())["env"]}
    assert helm["MLOPS_DATA_ROOT"] == env["MLOPS_DATA_ROOT"]
    for setting in DATA_PLANE:
        if setting in helm:
            assert helm[setting] == env[setting], setting
    artifacts = _flags(_command("mlflow"))["--artifacts-destination"]
    used = {
        uri.removeprefix("s3://").split("/")[0]
        for uri in [artifacts, *env.values(), *serving.values()]
        if uri.startswith("s3://")
    }
    (script,) = _command("minio-init")
    (make_buckets,) = [line.split() for line in script.splitlines() if " mb " in f" {line} "]
    created = {word.split("/", 1)[1] for word in make_buckets if "/" in word}
    assert used <= created, f"minio-init creates {created}, the services use {used}"


def test_mlflow_server_on_postgres_with_s3_artifacts_reachable_by_name() -> None:
    command = _command("mlflow")
    assert command[:2] == ["mlflow", "server"]
    flags = _flags(command)
    assert re.fullmatch(
        r"postgresql\+psycopg2://[^@]+@postgres:5432/mlflow", flags["--backend-store-uri"]
    )
    assert flags["--artifacts-destination"].startswith("s3://")
    assert "--serve-artifacts" in flags
    # The server rejects Host headers it does not allow: the one its clients send must be allowed.
    allowed = flags["--allowed-hosts"].split(",")
    for client in (
        _env("airflow-worker-1")["AIRFLOW_CONN_MLFLOW_DEFAULT"],
        _env("serving")["MLFLOW_TRACKING_URI"],
    ):
        assert client.removeprefix("http://").rstrip("/") in allowed, client
    assert _env("mlflow")["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_postgres_creates_the_databases_the_services_use() -> None:
    init = COMPOSE_DIR / "postgres-init.sql"
    created = set(re.findall(r"CREATE DATABASE (\w+);", init.read_text()))
    mounts = _services()["postgres"]["volumes"]
    assert any(m.startswith("./postgres-init.sql:/docker-entrypoint-initdb.d/") for m in mounts)
    uris = [
        _env("airflow-scheduler-1")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        _env("airflow-scheduler-1")["AIRFLOW__CELERY__RESULT_BACKEND"],
        _flags(_command("mlflow"))["--backend-store-uri"],
    ]
    assert {uri.rsplit("/", 1)[1] for uri in uris} == created == {"airflow", "mlflow"}


def test_dependencies_wait_for_health_or_completion() -> None:
    services = _services()
    for name, service in services.items():
        for other, condition in (service.get("depends_on") or {}).items():
            assert other in services, f"{name} depends on unknown {other}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other}'s health"
            if condition["condition"] == "service_completed_successfully":
                assert services[other].get("restart") == "no", f"{other} is not a one-shot"
    for name in _airflow_services():
        if name != "airflow-init":
            assert services[name]["depends_on"]["airflow-init"]["condition"] == (
                "service_completed_successfully"
            )


# Secrets and variables


def test_no_secret_is_written_in_the_file() -> None:
    for name in _services():
        for key, value in _env(name).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {key} must be ${{VAR:?...}}"
            if key.startswith("AIRFLOW_CONN_") and value.lstrip().startswith("{"):
                password = json.loads(value).get("password", "")
                assert not password or REQUIRED_VARIABLE.fullmatch(password), f"{name}: {key}"
    for text in _strings(_compose()):
        # Credentials in URLs (scheme://user:password@host): the password is a variable.
        for userinfo in re.findall(r"://([^/@\s\"']*)@", _masked(text)):
            assert userinfo.partition(":")[2] == "", f"a password written in {text!r}"
        for variable, modifier in _interpolations(text):
            if SECRET_NAME.search(variable):
                assert modifier.startswith(":?"), f"${{{variable}}} must be required: {text!r}"
        assert not UNBRACED.search(text.replace("$$", "")), f"use ${{NAME}} in {text!r}"


def test_every_variable_is_in_env_example_without_a_value() -> None:
    used = {v for text in _strings(_compose()) for v, _ in _interpolations(text)}
    listed = _env_example()
    assert used == set(listed), (
        f"only used: {used - set(listed)}; only listed: {set(listed) - used}"
    )
    assert {name: value for name, value in listed.items() if value} == {}, "no values in a template"

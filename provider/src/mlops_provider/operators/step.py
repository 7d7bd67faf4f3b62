"""Render one :class:`~mlops_steps.spec.StepSpec` as an Airflow task, on either runner.

* ``kubernetes``: a :class:`KubernetesPodOperator` running the task image, with requests/limits,
  secrets only by ``secretKeyRef``, the shared data volume, labels tying the pod to the DAG run,
  logs and events on failure, and the pod deleted when it finishes.
* ``local`` (the embedded default): :class:`LocalStepOperator` runs the same argv with the same
  environment as a child process of the worker.

The runner comes from :func:`mlops_steps.config.get_settings` (``MLOPS_RUNNER`` or the Airflow
Variable ``mlops_runner`` set as ``AIRFLOW_VAR_MLOPS_RUNNER``) unless a caller names one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from mlops_provider.operators.env_guard import (
    mlflow_tracking_uri_for_steps,
    refuse_credentials_in_url,
)
from mlops_steps.core.errors import EXIT_REJECTED, EXIT_SKIPPED
from mlops_steps.core.results import RESULT_MARKER
from mlops_steps.core.settings import RunnerMode, Settings, for_model, get_settings
from mlops_steps.core.spec import Resources, SecretEnv, StepSpec

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import Context


def model_service_url(conn_id: str) -> str:
    """Template macro: the URL of a model's own service from its serving connection
    (``mlops_serving__<model>``), as the HTTP provider reads one: a host holding ``://`` is the
    URL, else ``<schema or http>://<host>[:<port>]``. Empty when the connection or its host is
    absent: the step then uses the deployment-wide ``MLOPS_SERVICE_URL``. A URL with
    credentials is refused (the token belongs in the connection's password)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return ""
    host = (connection.host or "").strip().rstrip("/")
    if not host:
        return ""
    if "://" in host:
        url = host
    else:
        url = f"{connection.schema or 'http'}://{host}"
        if connection.port:
            url = f"{url}:{connection.port}"
    return refuse_credentials_in_url(url, source=f"Airflow connection {conn_id!r} (host)")


#: Template macros the step environment uses; pass as ``user_defined_macros`` on the DAG.
STEP_MACROS: dict[str, Any] = {
    "mlflow_tracking_uri": mlflow_tracking_uri_for_steps,
    "model_service_url": model_service_url,
}

#: The partition key of a DAG run: its logical date, or when it was asked to run for runs that
#: have none (asset-triggered runs in Airflow 3).
PARTITION_KEY = "{{ (dag_run.logical_date or dag_run.run_after) | ts_nodash }}"

#: Process basics a local child inherits from the worker; a pod gets these from its image.
#: MLOPS_MODELS_DIR: the child must read its model's contract where the worker built the DAG
#: from (without it, a model outside the repository's models/ stops every step with exit 2).
LOCAL_PASSTHROUGH_ENV = (
    "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "VIRTUAL_ENV", "MLOPS_CODE_SHA", "MLOPS_MODELS_DIR",
)  # fmt: skip

POD_LABELS = {"app.kubernetes.io/part-of": "airflow-mlops", "app.kubernetes.io/name": "mlops-step"}
#: Capability labels the NetworkPolicies select on (deploy/k8s/network-policies.yaml): a pod holding
#: the serving admin token may reach the serving pods; one with a service account token, the API.
SERVING_CLIENT_LABEL = "mlops.airflow.apache.org/serving-client"
KUBERNETES_API_LABEL = "mlops.airflow.apache.org/kubernetes-api"
_NON_ROOT_UID = 50000  # the airflow user of the official images; the task image uses it too


def step_environment(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every step gets, identical on both runners."""
    return {
        "MLFLOW_TRACKING_URI": f"{{{{ mlflow_tracking_uri({settings.mlflow_conn_id!r}) }}}}",
        "MLOPS_DATA_ROOT": str(settings.data_root),
        "MLOPS_MODEL_NAME": settings.model_name,
        "MLOPS_EXPERIMENT": settings.experiment_name,
        "MLOPS_AIRFLOW_DAG_ID": "{{ dag.dag_id }}",
        "MLOPS_AIRFLOW_RUN_ID": "{{ run_id }}",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLOPS_MLFLOW_VERSION_SKEW": settings.mlflow_version_skew,
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def step_secrets(settings: Settings) -> tuple[SecretEnv, ...]:
    """Credentials a step may need; each optional (absent keys/vars are simply not set). Pods
    get them from Kubernetes Secrets, local steps from the worker's env or Airflow connections."""
    k8s, mlflow, aws = settings.kubernetes, settings.mlflow_conn_id, settings.aws_conn_id
    return (
        SecretEnv("MLFLOW_TRACKING_USERNAME", k8s.mlflow_secret, "username", mlflow, "login"),
        SecretEnv("MLFLOW_TRACKING_PASSWORD", k8s.mlflow_secret, "password", mlflow, "password"),
        SecretEnv("AWS_ACCESS_KEY_ID", k8s.s3_secret, "access_key_id", aws, "login"),
        SecretEnv("AWS_SECRET_ACCESS_KEY", k8s.s3_secret, "secret_access_key", aws, "password"),
    )


def release_environment(settings: Settings) -> dict[str, str]:
    """What the release steps need beyond :func:`step_environment`: where releases go and how
    images are built (the worker's settings, handed to the step so both runners agree)."""
    build, deploy = settings.image_build, settings.deploy
    env = {
        "MLOPS_HOME": str(settings.home),
        "MLOPS_IMAGE_BUILDER": build.builder,
        "MLOPS_SERVING_IMAGE": build.serving_image,
        "MLOPS_DEPLOY_TARGET": deploy.target,
        # The model's own service when its serving connection exists (rendered when the task
        # runs: connections are not read while DAGs are parsed), else the deployment-wide URL.
        "MLOPS_MODEL_SERVICE_URL": f"{{{{ model_service_url({deploy.model_serving_conn_id!r}) }}}}",
        "MLOPS_SERVICE_URL": deploy.service_url,
        "MLOPS_STABLE_DEPLOYMENT": deploy.stable_deployment,
        "MLOPS_CANARY_DEPLOYMENT": deploy.canary_deployment,
        "MLOPS_STABLE_REPLICAS": str(deploy.stable_replicas),
        "MLOPS_ROLLOUT_TIMEOUT_S": str(deploy.rollout_timeout_s),
        "MLOPS_K8S_NAMESPACE": settings.kubernetes.namespace,
        # The analysis' golden set is the deployment's choice, not a trigger Param.
        "MLOPS_ANALYSIS_REFERENCE_SET": settings.analysis.reference_set,
        "MLOPS_ANALYSIS_FIRST_RELEASE": settings.analysis.first_release,
    }
    if build.builder == "ci":
        env |= {
            "MLOPS_CI_DISPATCH_URL": build.ci_dispatch_url,
            "MLOPS_CI_REF": build.ci_ref,
            "MLOPS_CI_POLL_INTERVAL_S": str(build.ci_poll_interval_s),
            "MLOPS_CI_TIMEOUT_S": str(build.ci_timeout_s),
        }
    if build.builder == "kaniko":
        env |= {
            "MLOPS_KANIKO_IMAGE": build.kaniko_image,
            "MLOPS_BUILD_CONTEXT": build.build_context,
            "MLOPS_KANIKO_PUSH_SECRET": build.kaniko_push_secret,
            "MLOPS_KANIKO_TIMEOUT_S": str(build.kaniko_timeout_s),
        }
    return env


def release_secrets(settings: Settings) -> tuple[SecretEnv, ...]:
    """The pipeline secrets plus the service's admin token and the CI token.

    The admin token is listed twice, in the order it is looked for: the model's own serving
    connection, then the deployment-wide one (the local runner takes the first connection that
    exists, so a model's own service never gets another service's token; a pod gets one
    ``secretKeyRef``, to ``MLOPS_K8S_SERVING_SECRET`` with ``{model}`` filled in)."""
    k8s, deploy = settings.kubernetes, settings.deploy
    serving_secret = for_model(k8s.serving_secret, deploy.serving_name)
    return (
        *step_secrets(settings),
        SecretEnv("SERVING_ADMIN_TOKEN", serving_secret, "admin_token",
                  deploy.model_serving_conn_id, "password"),
        SecretEnv("SERVING_ADMIN_TOKEN", serving_secret, "admin_token",
                  deploy.serving_conn_id, "password"),
        SecretEnv("MLOPS_CI_TOKEN", k8s.ci_secret, "token",
                  settings.image_build.ci_conn_id, "password"),
    )  # fmt: skip


def release_step(
    task_id: str,
    verb: str,
    args: Sequence[str] = (),
    *,
    settings: Settings | None = None,
    **spec_fields: Any,
) -> StepSpec:
    """A StepSpec for the deployment pipeline (release env and secrets, Kubernetes API access
    when the target or the builder is Kubernetes)."""
    settings = settings or get_settings()
    k8s_api = settings.deploy.target == "kubernetes" or settings.image_build.builder == "kaniko"
    return pipeline_step(
        task_id,
        verb,
        args,
        settings=settings,
        env=release_environment(settings),
        secrets=release_secrets(settings),
        resources=spec_fields.pop("resources", Resources(cpu="250m", memory="512Mi",
                                                        cpu_limit="1", memory_limit="1Gi")),
        uses_kubernetes_api=spec_fields.pop("uses_kubernetes_api", k8s_api),
        **spec_fields,
    )  # fmt: skip


def pipeline_step(
    task_id: str,
    verb: str,
    args: Sequence[str] = (),
    *,
    settings: Settings | None = None,
    **spec_fields: Any,
) -> StepSpec:
    """A StepSpec with the pipeline-wide environment and secrets filled in."""
    settings = settings or get_settings()
    return StepSpec(
        task_id=task_id,
        verb=verb,
        args=tuple(args),
        env=step_environment(settings, spec_fields.pop("env", None)),
        secrets=spec_fields.pop("secrets", step_secrets(settings)),
        **spec_fields,
    )


class LocalStepOperator(BaseOperator):
    """Run a step's command line as a local child process (the embedded default runner).

    Output streams into the task log; the step's result line becomes the task's XCom. Exit code 2
    (bad input or a negative decision) fails the task without retries: a retry would repeat it.
    Secrets come from the worker's environment, else from the Airflow connection field each one
    names (``secret_connections``: variable -> (conn_id, field), or several such pairs in the
    order to look: the first connection that exists decides, even without that field, so a
    model's own connection never falls through to another's secret); values are never logged.
    """

    template_fields: Sequence[str] = ("arguments", "env_vars")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        cmds: list[str],
        arguments: list[str],
        env_vars: dict[str, str],
        secret_env: Sequence[str] = (),
        secret_connections: Mapping[str, tuple[str, str] | Sequence[tuple[str, str]]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cmds = cmds
        self.arguments = arguments
        self.env_vars = env_vars
        self.secret_env = tuple(secret_env)
        #: variable -> the (conn_id, field) pairs to look in, in order.
        self.secret_connections: dict[str, tuple[tuple[str, str], ...]] = {
            name: _connection_candidates(where)
            for name, where in (secret_connections or {}).items()
        }
        self._process: subprocess.Popen[str] | None = None

    def process_environment(self) -> dict[str, str]:
        """What the child sees: the declared env, secrets present in the worker's env, and the
        process basics (PATH puts this interpreter's scripts first, so ``mlops-step`` resolves to
        the environment Airflow runs in)."""
        bin_dir = str(Path(sys.executable).parent)
        env = {k: os.environ[k] for k in LOCAL_PASSTHROUGH_ENV if k in os.environ}
        env["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")])
        env.update({name: os.environ[name] for name in self.secret_env if name in os.environ})
        for name, candidates in self.secret_connections.items():
            if name not in env:
                found = first_connection_field(candidates)
                if found is not None:
                    conn_id, field, value = found
                    env[name] = value
                    self.log.info("%s: from connection %s (%s)", name, conn_id, field)
        env.update(self.env_vars)
        return env

    def execute(self, context: Context) -> Any:
        argv = [*self.cmds, *self.arguments]
        self.log.info("Running: %s", " ".join(argv))
        result: Any = None
        self._process = process = subprocess.Popen(
            argv,
            env=self.process_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RESULT_MARKER):
                result = json.loads(line[len(RESULT_MARKER) :])
            else:
                self.log.info("%s", line.rstrip("\n"))
        returncode = process.wait()
        self._process = None
        if returncode == EXIT_SKIPPED:
            raise AirflowSkipException(f"step {self.arguments[0]!r} had nothing to do (exit 3)")
        if returncode == EXIT_REJECTED:
            raise AirflowFailException(
                f"step {self.arguments[0]!r} rejected its input (exit 2); see the error above. "
                "Not retried: a retry would reach the same decision."
            )
        if returncode != 0:
            raise AirflowException(f"step {self.arguments[0]!r} failed with exit code {returncode}")
        return result

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _connection_candidates(
    where: tuple[str, str] | Sequence[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    """One (conn_id, field) pair, or several in order, as a tuple of pairs."""
    if len(where) == 2 and isinstance(where[0], str) and isinstance(where[1], str):
        return ((where[0], where[1]),)
    return tuple((str(pair[0]), str(pair[1])) for pair in where)


def first_connection_field(
    candidates: Sequence[tuple[str, str]],
) -> tuple[str, str, str] | None:
    """(conn_id, field, value) from the first of ``candidates`` whose connection exists; None
    when none exists or the first existing one lacks the field (no fall-through: a model's
    own connection without a token must not pick up the deployment-wide one)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    for conn_id, field in candidates:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            continue
        value = connection_field(conn_id, field)
        return (conn_id, field, value) if value else None
    return None


def connection_field(conn_id: str, field: str) -> str | None:
    """``login``, ``password``, ``host`` or ``extra.<key>`` of an Airflow connection; None when
    the connection or the field is absent (every step secret is optional)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    if field.startswith("extra."):
        value = connection.extra_dejson.get(field.removeprefix("extra."))
    else:
        value = getattr(connection, field, None)
    return str(value) if value not in (None, "") else None


def plain_environment(spec: StepSpec) -> dict[str, str]:
    """The step's literal env values, each checked to carry no URL credentials (templated ones
    are checked when they render, by the macro that produces them)."""
    env = spec.environment()
    for name, value in env.items():
        if "{{" not in value:
            refuse_credentials_in_url(value, source=f"the step environment variable {name}")
    return env


def secret_lookup(spec: StepSpec) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each secret variable's (conn_id, field) pairs, in the order the spec lists them."""
    lookup: dict[str, tuple[tuple[str, str], ...]] = {}
    for secret in spec.secrets:
        if secret.connection:
            lookup[secret.env] = (*lookup.get(secret.env, ()), (secret.connection, secret.field))
    return lookup


def secret_refs(spec: StepSpec) -> list[SecretEnv]:
    """One secret per variable for a pod (the first the spec lists): further entries of the
    same variable are the local runner's fallback connections."""
    first: dict[str, SecretEnv] = {}
    for secret in spec.secrets:
        first.setdefault(secret.env, secret)
    return list(first.values())


def build_local_operator(spec: StepSpec, **operator_kwargs: Any) -> LocalStepOperator:
    argv = spec.argv()
    return LocalStepOperator(
        task_id=spec.task_id,
        cmds=argv[:1],
        arguments=argv[1:],
        env_vars=plain_environment(spec),
        secret_env=list(dict.fromkeys(s.env for s in spec.secrets)),
        secret_connections=secret_lookup(spec),
        execution_timeout=spec.timeout,
        **operator_kwargs,
    )


def pod_labels(spec: StepSpec) -> dict[str, str]:
    """The step pod's labels: the pipeline's, the verb, and its network capabilities."""
    labels = {**POD_LABELS, "app.kubernetes.io/component": spec.verb}
    if any(secret.env == "SERVING_ADMIN_TOKEN" for secret in spec.secrets):
        labels[SERVING_CLIENT_LABEL] = "true"
    if spec.uses_kubernetes_api:
        labels[KUBERNETES_API_LABEL] = "true"
    return labels


def build_pod_operator(
    spec: StepSpec, settings: Settings | None = None, **operator_kwargs: Any
) -> KubernetesPodOperator:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    settings = settings or get_settings()
    k8s_settings = settings.kubernetes
    argv = spec.argv()
    data_volume = "mlops-data"
    return KubernetesPodOperator(
        task_id=spec.task_id,
        name=f"mlops-{spec.verb}",
        namespace=k8s_settings.namespace,
        kubernetes_conn_id=k8s_settings.kubernetes_conn_id,
        image=k8s_settings.task_image,
        image_pull_policy="IfNotPresent",
        cmds=argv[:1],
        arguments=argv[1:],
        env_vars=[
            *(
                k8s.V1EnvVar(name=name, value=value)
                for name, value in plain_environment(spec).items()
            ),
            # Optional refs: a deployment without S3 or MLflow auth need not create the Secret.
            *(
                k8s.V1EnvVar(
                    name=secret.env,
                    value_from=k8s.V1EnvVarSource(
                        secret_key_ref=k8s.V1SecretKeySelector(
                            name=secret.secret, key=secret.key, optional=True
                        )
                    ),
                )
                for secret in secret_refs(spec)
            ),
        ],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": spec.resources.cpu, "memory": spec.resources.memory},
            limits={"cpu": spec.resources.cpu_limit, "memory": spec.resources.memory_limit},
        ),
        volumes=[
            k8s.V1Volume(
                name=data_volume,
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=k8s_settings.data_pvc
                ),
            )
        ],
        volume_mounts=[k8s.V1VolumeMount(name=data_volume, mount_path=str(settings.data_root))],
        labels=pod_labels(spec),
        service_account_name=k8s_settings.service_account,
        automount_service_account_token=spec.uses_kubernetes_api,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=_NON_ROOT_UID,
            fs_group=0,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        on_finish_action="delete_pod",
        get_logs=True,
        log_events_on_failure=True,
        # The pod spec holds every env value: never copy it into the task log.
        log_pod_spec_on_failure=False,
        do_xcom_push=True,
        skip_on_exit_code=EXIT_SKIPPED,
        startup_timeout_seconds=600,
        termination_grace_period=60,
        execution_timeout=spec.timeout,
        **operator_kwargs,
    )


def step_operator(
    spec: StepSpec,
    runner: RunnerMode | None = None,
    *,
    settings: Settings | None = None,
    **operator_kwargs: Any,
) -> BaseOperator:
    """The task for ``spec`` on the configured runner (``settings``: the model's, from the DAG
    factory; the process-wide settings otherwise)."""
    settings = settings or get_settings()
    if (runner or settings.runner) == "kubernetes":
        return build_pod_operator(spec, settings, **operator_kwargs)
    return build_local_operator(spec, **operator_kwargs)

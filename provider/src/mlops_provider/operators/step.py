"""Render one :class:`~mlops_steps.spec.StepSpec` as an Airflow task, on either runner.

* ``kubernetes``: a :class:`KubernetesPodOperator` running the task image, with requests/limits,
  secrets only by ``secretKeyRef``, the shared data volume, labels tying the pod to the DAG run,
  logs and events on failure, and the pod deleted when it finishes.
* ``local`` (the embedded default): :class:`LocalStepOperator` runs the same argv with the same
  environment as a child process of the worker.

The local runner lives in :mod:`mlops_provider.operators.local`, the connection reads both
share in :mod:`mlops_provider.operators.connections`. The runner comes from
:func:`mlops_steps.core.settings.get_settings` (``MLOPS_RUNNER`` or the Airflow Variable
``mlops_runner`` set as ``AIRFLOW_VAR_MLOPS_RUNNER``) unless a caller names one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_provider.operators.connections import model_service_url
from mlops_provider.operators.env_guard import mlflow_tracking_uri_for_steps
from mlops_provider.operators.local import build_local_operator, plain_environment
from mlops_steps.core.errors import EXIT_SKIPPED
from mlops_steps.core.sections import RunnerMode, for_model
from mlops_steps.core.settings import Settings, get_settings
from mlops_steps.core.spec import Resources, SecretEnv, StepSpec

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator


#: Template macros the step environment uses; pass as ``user_defined_macros`` on the DAG.
STEP_MACROS: dict[str, Any] = {
    "mlflow_tracking_uri": mlflow_tracking_uri_for_steps,
    "model_service_url": model_service_url,
}

#: The partition key of a DAG run: its logical date, or when it was asked to run for runs that
#: have none (asset-triggered runs in Airflow 3).
PARTITION_KEY = "{{ (dag_run.logical_date or dag_run.run_after) | ts_nodash }}"

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
        # The store itself when it is one: each step process works in a copy of its own.
        "MLOPS_DATA_ROOT": settings.data_root_setting,
        "MLOPS_MODEL_NAME": settings.model_name,
        "MLOPS_EXPERIMENT": settings.experiment_name,
        "MLOPS_AIRFLOW_DAG_ID": "{{ dag.dag_id }}",
        "MLOPS_AIRFLOW_RUN_ID": "{{ run_id }}",
        "MLOPS_AIRFLOW_TRY_NUMBER": "{{ ti.try_number }}",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLOPS_MLFLOW_VERSION_SKEW": settings.mlflow_version_skew,
        # Report links a browser can open (<Airflow>/mlops-reports/...); empty: plain paths.
        "MLOPS_AIRFLOW_URL": settings.airflow_url,
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
        "MLOPS_MODEL_STORE": settings.model_store_location,
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


def secret_refs(spec: StepSpec) -> list[SecretEnv]:
    """One secret per variable for a pod (the first the spec lists): further entries of the
    same variable are the local runner's fallback connections."""
    first: dict[str, SecretEnv] = {}
    for secret in spec.secrets:
        first.setdefault(secret.env, secret)
    return list(first.values())


def pod_labels(spec: StepSpec) -> dict[str, str]:
    """The step pod's labels: the pipeline's, the verb, and its network capabilities."""
    labels = {**POD_LABELS, "app.kubernetes.io/component": spec.verb}
    if any(secret.env == "SERVING_ADMIN_TOKEN" for secret in spec.secrets):
        labels[SERVING_CLIENT_LABEL] = "true"
    if spec.uses_kubernetes_api:
        labels[KUBERNETES_API_LABEL] = "true"
    return labels


def _data_volume(name: str, settings: Settings) -> Any:
    """The shared ReadWriteMany volume; on an object-store data root, the pod's own scratch
    space for its working copy (pods share nothing but the store)."""
    from kubernetes.client import models as k8s

    if settings.data_plane:
        return k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource())
    claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=settings.kubernetes.data_pvc)
    return k8s.V1Volume(name=name, persistent_volume_claim=claim)


def _data_mount(name: str, settings: Settings) -> Any:
    from kubernetes.client import models as k8s

    # The working copy lives under the temporary directory (core/settings.py: mlops-scratch).
    path = settings.data_root.parent if settings.data_plane else settings.data_root
    return k8s.V1VolumeMount(name=name, mount_path=str(path))


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
        volumes=[_data_volume(data_volume, settings)],
        volume_mounts=[_data_mount(data_volume, settings)],
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

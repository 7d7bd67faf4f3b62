"""A step declared once: the command line, environment, secrets and resources it runs with.

The Airflow side renders a :class:`StepSpec` into either a KubernetesPodOperator or a local process;
both run :meth:`StepSpec.argv` with :meth:`StepSpec.environment`, so what is tested locally is what
a pod runs. Values may hold Airflow Jinja templates; they are rendered by the operator, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

STEP_COMMAND = "mlops-step"


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable whose value is a secret.

    In Kubernetes mode it is a ``secretKeyRef`` to ``secret``/``key`` (the value never appears in
    the pod spec); in local mode the worker's own environment variable of that name supplies it,
    else ``field`` (login, password, host or ``extra.<key>``) of the Airflow connection
    ``connection``. Every secret is optional: absent, the variable is simply not set.
    """

    env: str
    secret: str
    key: str
    connection: str = ""
    field: str = ""


@dataclass(frozen=True)
class Resources:
    """Container requests and limits (Kubernetes quantities)."""

    cpu: str = "500m"
    memory: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"


@dataclass(frozen=True)
class StepSpec:
    """One pipeline step: ``mlops-step <verb> <args...>`` plus how it is run."""

    task_id: str
    verb: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[SecretEnv, ...] = ()
    resources: Resources = field(default_factory=Resources)
    timeout: timedelta = timedelta(hours=1)
    # Steps that change Deployments or start build Jobs talk to the Kubernetes API from their pod
    # (the only ones that get the service account token mounted).
    uses_kubernetes_api: bool = False

    def argv(self) -> list[str]:
        return [STEP_COMMAND, self.verb, *self.args]

    def environment(self) -> dict[str, str]:
        return dict(self.env)

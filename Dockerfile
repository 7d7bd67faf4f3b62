# The Airflow image: scheduler, API server, DAG processor, triggerer and workers.
# It orchestrates only; the ML stack runs in the task image (Dockerfile.task) as Kubernetes pods.
FROM apache/airflow:3.3.2-python3.11
# The base image's non-root user (uid 50000, group 0), stated so no later layer runs as root.
USER airflow

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/mlops/
RUN pip install --no-cache-dir -r /opt/mlops/requirements.txt -c /opt/mlops/constraints.txt

# The step package is installed without its ML dependencies: DAG files import only core and the
# contract loader (PyYAML and jsonschema come with Airflow) to declare each model's tasks.
COPY --chown=airflow:0 pyproject.toml README.md /opt/mlops/
COPY --chown=airflow:0 include/ /opt/mlops/include/
RUN pip install --no-cache-dir --no-deps /opt/mlops

# The provider (hooks, triggers, sensors, operators, notifier): an installed distribution that
# Airflow finds by its entry point; the triggerer imports its triggers and callbacks from there.
COPY --chown=airflow:0 provider/ /opt/mlops/provider/
RUN pip install --no-cache-dir --no-deps /opt/mlops/provider

# One contract per model: the DAG factory builds each model's DAGs from these files.
COPY --chown=airflow:0 models/ /opt/mlops/models/
ENV MLOPS_MODELS_DIR=/opt/mlops/models

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
# Only the two AirflowPlugin modules: the webhook bridge app and the Param-driven deadline reference.
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

ENV MLOPS_RUNNER=kubernetes

# Per component (the API server's health route, the others' job heartbeat): see the script.
COPY --chown=airflow:0 deploy/airflow/healthcheck.sh /opt/mlops/healthcheck.sh
HEALTHCHECK --interval=60s --timeout=30s --start-period=90s --retries=3 \
    CMD ["bash", "/opt/mlops/healthcheck.sh"]

# The Airflow image: scheduler, API server, DAG processor, triggerer and workers.
# It orchestrates only; the ML stack runs in the task image (Dockerfile.task) as Kubernetes pods.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/mlops/
RUN pip install --no-cache-dir -r /opt/mlops/requirements.txt -c /opt/mlops/constraints.txt

# The step package is installed without its ML dependencies: DAG files import only its
# stdlib-only modules (config, spec, schema) to declare tasks.
COPY --chown=airflow:0 pyproject.toml README.md /opt/mlops/
COPY --chown=airflow:0 include/ /opt/mlops/include/
RUN pip install --no-cache-dir --no-deps /opt/mlops

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

ENV MLOPS_RUNNER=kubernetes

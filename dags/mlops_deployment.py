"""Deployment Airflow DAGs, one per model: approve, canary, analyse, promote or roll back.

Built by the DAG factory (provider/src/mlops_provider/pipelines/deployment.py) from each contract in
$MLOPS_MODELS_DIR, ids ``mlops_deployment__<model>``; a broken contract is the import error of
dags/mlops_contracts.py. This file is wiring only.
"""

from __future__ import annotations

from mlops_provider.pipelines import deployment
from mlops_provider.pipelines.models import build_all

for dag in build_all(deployment.build):
    globals()[dag.dag_id] = dag

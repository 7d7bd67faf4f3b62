"""Rollback Airflow DAGs, one per model: restore the previous champion (manual).

Built by the DAG factory (provider/src/mlops_provider/pipelines/rollback.py) from each contract in
$MLOPS_MODELS_DIR, ids ``mlops_rollback__<model>``; a broken contract is the import error of
dags/mlops_contracts.py. This file is wiring only.
"""

from __future__ import annotations

from mlops_provider.pipelines import rollback
from mlops_provider.pipelines.models import build_all

for dag in build_all(rollback.build):
    globals()[dag.dag_id] = dag

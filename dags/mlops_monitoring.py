"""Monitoring Airflow DAGs, one per model: hourly drift and performance of the serving champion.

Built by the DAG factory (provider/src/mlops_provider/pipelines/monitoring.py) from each contract in
$MLOPS_MODELS_DIR, ids ``mlops_monitoring__<model>``; a broken contract is the import error of
dags/mlops_contracts.py. This file is wiring only.
"""

from __future__ import annotations

from mlops_provider.pipelines import monitoring
from mlops_provider.pipelines.models import build_all

for dag in build_all(monitoring.build):
    globals()[dag.dag_id] = dag

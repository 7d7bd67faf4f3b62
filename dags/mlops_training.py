"""Training Airflow DAGs, one per model: ingest, validate, train, evaluate, gate, register.

Built by the DAG factory (provider/src/mlops_provider/pipelines/training.py) from each contract in
$MLOPS_MODELS_DIR, ids ``mlops_training__<model>``; a broken contract is the import error of
dags/mlops_contracts.py. This file is wiring only.
"""

from __future__ import annotations

from mlops_provider.pipelines import training
from mlops_provider.pipelines.models import build_all

for dag in build_all(training.build):
    globals()[dag.dag_id] = dag

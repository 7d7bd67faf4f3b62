"""Batch scoring Airflow DAGs, one per model: a table scored in chunks by the champion.

Built by the DAG factory (provider/src/mlops_provider/pipelines/batch_scoring.py) from each
contract in $MLOPS_MODELS_DIR, ids ``mlops_batch_scoring__<model>``; a broken contract is the
import error of dags/mlops_contracts.py. This file is wiring only.
"""

from __future__ import annotations

from mlops_provider.pipelines import batch_scoring
from mlops_provider.pipelines.models import build_all

for dag in build_all(batch_scoring.build):
    globals()[dag.dag_id] = dag

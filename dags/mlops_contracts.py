"""The model contracts behind the Airflow DAGs: an import error here names every broken one.

Each contract in $MLOPS_MODELS_DIR gets its DAGs from the four pipeline files; a contract that
cannot be read (its file, key and fix are in this file's import error in the Airflow UI) gets
none until it is fixed, and the other models keep theirs. Why a file of its own:
provider/src/mlops_provider/pipelines/models.py. No DAG is defined here.
"""

from __future__ import annotations

from mlops_provider.pipelines.models import check_contracts

MODELS = check_contracts()

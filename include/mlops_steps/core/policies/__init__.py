"""Every step's tunable defaults, each declared once with its bounds and help.

The step verbs derive their flags from these classes and the DAGs their Params
(:mod:`mlops_steps.core.options`), so a default cannot disagree between the policy, the command
line and the trigger form. A field that names ``env`` can be changed per deployment through that
variable (``MLOPS_X`` or the Airflow Variable ``AIRFLOW_VAR_MLOPS_X``); the settings read them.
One module per part of the lifecycle; import them from here.
"""

from __future__ import annotations

from mlops_steps.core.policies.monitoring import (
    ANY_METHODS,
    CATEGORY_METHODS,
    NUMERIC_METHODS,
    DriftPolicy,
    PerformancePolicy,
    ServedWindowPolicy,
)
from mlops_steps.core.policies.release import (
    STEPS_PATTERN,
    AnalysisPolicy,
    CanaryPolicy,
    traffic_steps,
)
from mlops_steps.core.policies.scoring import (
    MODEL_REF_PATTERN,
    BatchScoringPolicy,
)
from mlops_steps.core.policies.training import (
    DEFAULT_SEED,
    SYNTHETIC_SOURCE,
    EvaluationPolicy,
    GateThresholds,
    SourceRequest,
    TrainParams,
    ValidationPolicy,
)

__all__ = [
    "ANY_METHODS",
    "CATEGORY_METHODS",
    "DEFAULT_SEED",
    "MODEL_REF_PATTERN",
    "NUMERIC_METHODS",
    "STEPS_PATTERN",
    "SYNTHETIC_SOURCE",
    "AnalysisPolicy",
    "BatchScoringPolicy",
    "CanaryPolicy",
    "DriftPolicy",
    "EvaluationPolicy",
    "GateThresholds",
    "PerformancePolicy",
    "ServedWindowPolicy",
    "SourceRequest",
    "TrainParams",
    "ValidationPolicy",
    "traffic_steps",
]

"""The DAG factory: each model in ``$MLOPS_MODELS_DIR`` gets its training, deployment,
monitoring and rollback DAGs, built from its contract (``mlops_<kind>__<model>``).

The files in ``dags/`` only loop over :func:`~mlops_provider.pipelines.models.model_pipelines`
and put each DAG in their globals; everything model-specific (assets, Params defaults, pool,
deadlines, schedules, tags, the step environment) comes from the contract and the settings here.
"""

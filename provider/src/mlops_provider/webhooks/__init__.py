"""MLflow registry webhooks -> Airflow asset events.

MLflow POSTs signed registry events to ``/mlops-webhooks/mlflow`` on the Airflow API server
(mounted by ``plugins/mlops_webhooks_plugin.py``). Plugin apps are not behind Airflow's auth, so
the HMAC signature is the authentication: :mod:`.signature` verifies it, :mod:`.events` turns a
payload into the asset event a DAG schedules on, :mod:`.assets` records it exactly once,
:mod:`.app` is the HTTP surface and :mod:`.mount` where it sits (the app imports the mount, never
the reverse). Nothing here imports mlflow (the Airflow image lacks it).
"""

"""The Airflow side of airflow-mlops as an Airflow provider (distribution
``airflow-provider-mlops``): hooks own connections, triggers wait, sensors and operators act,
notifications alert, webhooks turn MLflow registry events into asset events."""

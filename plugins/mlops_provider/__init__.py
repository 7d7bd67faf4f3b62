"""Airflow-side extensions of airflow-mlops, laid out like an Airflow provider package:
hooks talk to systems, triggers wait, sensors and operators act."""

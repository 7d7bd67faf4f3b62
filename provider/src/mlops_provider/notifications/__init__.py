"""Alerts: one notifier layer for task failures, approvals that wait, and missed deadlines.

``alerts`` builds one structured record per event; ``channels`` are where it can go (a local
JSON lines file + log; Slack, e-mail and a generic JSON webhook through the Slack, SMTP and HTTP
providers' notifiers); ``delivery`` sends it to the channels ``MLOPS_ALERT_CHANNELS`` names;
``notifier`` is the ``BaseNotifier`` that task callbacks and human-in-the-loop operators call;
``callbacks`` holds the deadline callback the triggerer runs and ``deadlines`` builds the DAGs'
``DeadlineAlert`` objects. Every module imports its network and Airflow-core dependencies inside
functions: DAG files import this package while parsing.
"""

"""Alerts: one notifier layer for task failures, approvals that wait, and missed deadlines.

``alerts`` builds one structured record per event, ``channels`` delivers it (local JSON lines
file + log, Slack incoming webhook, SMTP, a generic JSON webhook; chosen by
``MLOPS_ALERT_CHANNELS``), ``notifier`` is the ``BaseNotifier`` that task callbacks and
human-in-the-loop operators call, ``callbacks`` holds the deadline callback the triggerer runs
and ``deadlines`` builds the DAGs' ``DeadlineAlert`` objects. Every module imports its network
and Airflow-core dependencies inside functions: DAG files import this package while parsing.
"""

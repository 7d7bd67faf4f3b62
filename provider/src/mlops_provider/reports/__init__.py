"""The reports the steps write on the data volume, served read-only by Airflow's API server
behind Airflow's own login (``plugins/mlops_reports_plugin.py`` mounts :mod:`.app`).

Links to them are built by :mod:`mlops_steps.core.report_links`, which holds the mount prefix
and the list of file kinds served, so the steps and this route agree without importing each other.
"""

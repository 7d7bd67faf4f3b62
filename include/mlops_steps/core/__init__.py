"""The floor every other part stands on: settings, errors, the step spec, step results and
the declared policies. Standard library only: DAG parsing and the Airflow image import only this."""

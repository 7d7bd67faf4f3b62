"""The pipeline's step package: one module per step, one command line (``mlops-step``).

Imports nothing from Airflow, so every step runs and tests on its own, in a task pod or a
local process alike.
"""

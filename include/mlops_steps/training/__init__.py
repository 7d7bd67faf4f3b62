"""The training stage: sources, ingest, validate, train, the pyfunc model, evaluate, gate and
register."""

"""Helpers the training, release and monitoring stages share: partition storage, the MLflow
client, deterministic splits and classification metrics."""

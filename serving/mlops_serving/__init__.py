"""The churn model service: champion and canary variants loaded from the MLflow registry."""

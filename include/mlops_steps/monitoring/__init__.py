"""The monitoring stage: served predictions, drift, reference data, labels and performance."""

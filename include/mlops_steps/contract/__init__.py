"""The data contract (columns, kinds, ranges, categories) and the synthetic generator that
follows it."""

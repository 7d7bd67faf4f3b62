"""The batch scoring stage: a table of any size scored in chunks by one registered version."""

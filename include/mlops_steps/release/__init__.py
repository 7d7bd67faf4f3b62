"""The release stage: resolve, canary, analysis, promote, rollback and restore; the ledger;
deploy targets and image builders."""

"""The batch scoring step's policy."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_steps.core.options import option

#: An alias (a name starting with a letter) or a version number (digits, from 1).
MODEL_REF_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}|[1-9][0-9]{0,9}"


@dataclass(frozen=True)
class BatchScoringPolicy:
    """What ``score-batch`` scores, with which version, where it writes and in what steps.

    The table is read, scored and written ``chunk_rows`` rows at a time (only the contract's
    columns are read), so the step's memory depends on the chunk, not on the table."""

    input_uri: str = option(
        "",
        help="the table to score: a path, file:// or s3:// URI of a .csv, .csv.gz or .parquet "
        "file, or of a directory (prefix) of Parquet files; '{model}' becomes the model's name",
        title="Input table",
        description="A path, file:// or s3:// URI of a CSV/Parquet file or a directory (prefix) "
        "of Parquet files holding the contract's id column and features.",
        flag="--input",
        env="MLOPS_BATCH_SCORING_INPUT",
    )
    output_uri: str = option(
        "",
        help="where scored runs go (run=<partition>/ below it): a path, file:// or s3:// URI; "
        "'{model}' becomes the model's name; empty: $MLOPS_DATA_ROOT/scores/<model>",
        title="Output directory (empty: $MLOPS_DATA_ROOT/scores/<model>)",
        flag="--output",
        env="MLOPS_BATCH_SCORING_OUTPUT",
    )
    model_ref: str = option(
        "champion",
        help="the registered version that scores: an alias (champion) or a version number",
        title="Model alias or version",
        description="An alias such as champion, or a version number such as 7.",
        pattern=MODEL_REF_PATTERN,
    )
    chunk_rows: int = option(
        100_000,
        help="rows read, scored and written at a time (bounds the step's memory)",
        title="Rows per chunk",
        minimum=100,
        maximum=2_000_000,
        env="MLOPS_BATCH_SCORING_CHUNK_ROWS",
    )

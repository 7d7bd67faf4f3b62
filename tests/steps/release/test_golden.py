"""The canary's golden set: labelled rows independent of the candidate (a pinned reference set,
else the champion's hold-out), never the candidate's own partition; a first release is judged on
its own hold-out only when that is configured. Real partitions written by the ingest step."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops_steps.common.metrics import split_frame
from mlops_steps.common.storage import Partition, load_partition_frame
from mlops_steps.contract.loader import load_contract
from mlops_steps.core.policies import AnalysisPolicy, SourceRequest
from mlops_steps.core.settings import Settings, load_settings
from mlops_steps.release.golden import (
    CANDIDATE_HOLDOUT,
    CHAMPION_HOLDOUT,
    REFERENCE_SET,
    ChampionRef,
    GoldenSetError,
    golden_set,
)
from mlops_steps.training.ingest import run_ingest

ROWS = 2000
CHURN = load_contract("churn")
ID_COLUMN, LABEL_COLUMN = str(CHURN.id_column), CHURN.label


@pytest.fixture
def settings(mlops_env: Path, tmp_path: Path) -> Settings:
    """Three partitions: the champion's (seed 1), the same customers with flipped labels (the
    candidate), and an independent labelled reference set (seed 9)."""
    from mlops_steps.contract.synthetic import generate_churn

    settings = load_settings()
    run_ingest(settings, "champion-data", SourceRequest(rows=ROWS, seed=1))
    flipped = generate_churn(ROWS, seed=1)
    flipped[LABEL_COLUMN] = 1 - flipped[LABEL_COLUMN]
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    run_ingest(settings, "flipped-data", SourceRequest(uri=str(tmp_path / "flipped.csv")))
    run_ingest(settings, "reference-data", SourceRequest(rows=ROWS, seed=9))
    return settings


def _frame(settings: Settings, key: str) -> tuple[pd.DataFrame, str]:
    frame, manifest = load_partition_frame(Partition.of(settings.dataset_root, key))
    return frame, manifest["data_sha256"]


def _champion(settings: Settings, key: str = "champion-data") -> ChampionRef:
    _, sha = _frame(settings, key)
    return ChampionRef("1", {"mlops.partition": key, "mlops.data_sha256": sha})


def test_the_champions_holdout_is_replayed_not_the_candidates_labels(settings: Settings) -> None:
    golden = golden_set(
        settings,
        AnalysisPolicy(),
        candidate_partition="flipped-data",
        champion=_champion(settings),
    )
    champion_frame, sha = _frame(settings, "champion-data")
    holdout = split_frame(champion_frame, ID_COLUMN).holdout
    assert (golden.source, golden.partition, golden.data_sha256) == (
        CHAMPION_HOLDOUT,
        "champion-data",
        sha,
    )
    assert [r[0] for r in golden.rows] == holdout[ID_COLUMN].astype(str).tolist()
    # The candidate learned flipped labels for these very customers: the golden labels are the
    # champion's, so every one disagrees with what the candidate was taught.
    candidate = _frame(settings, "flipped-data")[0].set_index(ID_COLUMN)[LABEL_COLUMN]
    assert all(label != candidate[customer] for customer, _, label in golden.rows)
    assert golden.describe()["rows"] == len(holdout) > 200


def test_the_candidates_own_partition_is_never_the_golden_set(settings: Settings) -> None:
    with pytest.raises(GoldenSetError, match="candidate's own partition champion-data") as raised:
        golden_set(
            settings,
            AnalysisPolicy(),
            candidate_partition="champion-data",
            champion=_champion(settings),
        )
    assert "MLOPS_ANALYSIS_REFERENCE_SET" in raised.value.render()


def test_a_pinned_reference_set_comes_first(settings: Settings) -> None:
    _, sha = _frame(settings, "reference-data")
    policy = AnalysisPolicy(reference_set=f"reference-data@{sha}")
    golden = golden_set(
        settings, policy, candidate_partition="flipped-data", champion=_champion(settings)
    )
    assert (golden.source, golden.partition) == (REFERENCE_SET, "reference-data")
    reference = split_frame(_frame(settings, "reference-data")[0], ID_COLUMN).holdout
    assert [r[2] for r in golden.rows] == reference[LABEL_COLUMN].astype(int).tolist()


@pytest.mark.parametrize(
    ("reference", "candidate", "message"),
    [
        ("reference-data@" + "0" * 64, "flipped-data", "not the pinned"),
        ("reference-data", "flipped-data", "is not KEY@DATA_SHA256"),
        ("missing-data@" + "0" * 64, "flipped-data", "partition missing-data is not at"),
        (None, "reference-data", "candidate's own partition reference-data"),
    ],
    ids=["other-data", "unpinned", "missing", "candidates-own"],
)
def test_a_reference_set_that_cannot_be_trusted_is_refused(
    settings: Settings, reference: str | None, candidate: str, message: str
) -> None:
    pinned = reference or f"reference-data@{_frame(settings, 'reference-data')[1]}"
    with pytest.raises(GoldenSetError, match=message):
        golden_set(
            settings,
            AnalysisPolicy(reference_set=pinned),
            candidate_partition=candidate,
            champion=_champion(settings),
        )


def test_a_champion_whose_data_changed_or_is_unnamed_is_refused(settings: Settings) -> None:
    changed = ChampionRef("1", {"mlops.partition": "champion-data", "mlops.data_sha256": "ab" * 32})
    with pytest.raises(GoldenSetError, match=r"holds data .* not the pinned"):
        golden_set(settings, AnalysisPolicy(), candidate_partition="flipped-data", champion=changed)
    with pytest.raises(GoldenSetError, match=r"lacks the mlops.partition"):
        golden_set(
            settings,
            AnalysisPolicy(),
            candidate_partition="flipped-data",
            champion=ChampionRef("1", {}),
        )


def test_a_first_release_is_refused_unless_its_own_holdout_is_accepted(
    settings: Settings,
) -> None:
    with pytest.raises(GoldenSetError, match="no champion and no reference set") as raised:
        golden_set(settings, AnalysisPolicy(), candidate_partition="flipped-data", champion=None)
    assert "MLOPS_ANALYSIS_FIRST_RELEASE=candidate_holdout" in raised.value.render()
    golden = golden_set(
        settings,
        AnalysisPolicy(first_release="candidate_holdout"),
        candidate_partition="flipped-data",
        champion=None,
    )
    assert (golden.source, golden.partition) == (CANDIDATE_HOLDOUT, "flipped-data")
    # A configured reference set judges a first release too, independently.
    _, sha = _frame(settings, "reference-data")
    pinned = golden_set(
        settings,
        AnalysisPolicy(reference_set=f"reference-data@{sha}", first_release="candidate_holdout"),
        candidate_partition="flipped-data",
        champion=None,
    )
    assert pinned.source == REFERENCE_SET

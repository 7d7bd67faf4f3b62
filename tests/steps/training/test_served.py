"""ingest from served traffic: a real prediction log of drifted synthetic customers (written as the
service writes it), real label files (by entity, by request and row, late, duplicate, unmatched),
and a real champion (an ingested partition behind the @champion alias of a real MLflow server).
The partition's rows, its provenance, the champion share, idempotence and the refusals are
checked against what was written."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_steps.cli.main import main
from mlops_steps.common.metrics import split_frame
from mlops_steps.common.storage import Partition, load_partition_frame
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.feedback import ServedDataRequest
from mlops_steps.core.policies import SourceRequest, ValidationPolicy
from mlops_steps.core.settings import load_settings
from mlops_steps.training.ingest import run_ingest
from mlops_steps.training.served import (
    GIVEN,
    SERVED_DAYS,
    TooFewLabelledRows,
    parse_served_window,
)
from tests.fixtures.champion import stand_in_champion
from tests.steps.monitoring.helpers import BASE, write_log

SERVED, RESERVED, CHAMPION_ROWS = 2_000, 200, 6_000
BY_ENTITY, BY_REQUEST, LATE = range(0, 1_500), range(1_500, 1_800), range(1_800, 1_900)
CORRECTED, FLIPPED = range(0, 10), range(0, 3)  # later labels; the first three change the value
UNMATCHED, BATCH = 50, 4
WINDOW = (BASE, BASE + dt.timedelta(hours=1))
AS_OF = BASE + dt.timedelta(days=1)
LABELLED = len(BY_ENTITY) + len(BY_REQUEST)


@dataclass(frozen=True)
class World:
    customers: pd.DataFrame  # the served customers as generated (features and true churn)
    log_dir: Path
    labels_dir: Path
    champion: Partition
    champion_version: str


def _champion(tracking: str, tmp_path: Path) -> tuple[Partition, str]:
    """An ingested synthetic partition and a registered version aliased champion naming it."""
    settings = load_settings()
    source = tmp_path / "champion.parquet"
    generate_churn(CHAMPION_ROWS, seed=1).to_parquet(source, index=False)
    run_ingest(settings, "champion-data", SourceRequest(str(source), rows=1000, seed=0))
    partition = Partition.of(settings.dataset_root, "champion-data")
    return partition, stand_in_champion(tracking, partition)


def _more_calls(values: dict[str, Any]) -> None:
    values["support_calls_90d"] = min(values["support_calls_90d"] + 1, 30)


def _labels(customers: pd.DataFrame, directory: Path) -> None:
    directory.mkdir(parents=True)
    ids, churn = customers["customer_id"], customers["churn"]
    known = (BASE + dt.timedelta(hours=2)).isoformat()
    by_entity = pd.DataFrame(
        {"entity_id": ids.iloc[BY_ENTITY], "churn": churn.iloc[BY_ENTITY], "label_time": known}
    )
    strangers = pd.DataFrame(
        {
            "entity_id": [f"C99999-{i:08d}" for i in range(UNMATCHED)],
            "churn": 0,
            "label_time": known,
        }
    )
    pd.concat([by_entity, strangers]).to_csv(directory / "a-entity.csv", index=False)
    positions = np.array(BY_REQUEST)
    pd.DataFrame(
        {
            "request_id": [f"req-test-host-{p // BATCH:07d}" for p in positions],
            "row": positions % BATCH,
            "churn": churn.iloc[positions].to_numpy(),
            "label_time": pd.Timestamp(BASE + dt.timedelta(hours=3)),
        }
    ).to_parquet(directory / "b-request.parquet", index=False)
    late = (AS_OF + dt.timedelta(hours=1)).isoformat()
    pd.DataFrame(
        {"entity_id": ids.iloc[LATE], "churn": churn.iloc[LATE], "label_time": late}
    ).to_csv(directory / "c-late.csv", index=False)
    corrected = churn.iloc[CORRECTED].to_numpy().copy()
    corrected[: len(FLIPPED)] = 1 - corrected[: len(FLIPPED)]
    pd.DataFrame(
        {
            "entity_id": ids.iloc[CORRECTED],
            "churn": corrected,
            "label_time": (BASE + dt.timedelta(hours=5)).isoformat(),
        }
    ).to_csv(directory / "d-corrections.csv", index=False)


@pytest.fixture
def world(tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    customers = generate_churn(SERVED, seed=7, drift=0.6)
    scores = np.random.default_rng(0).random(SERVED)
    log_dir, labels_dir = tmp_path / "predictions", tmp_path / "labels"
    write_log(log_dir, customers, scores, batch=BATCH, span=dt.timedelta(minutes=50))
    again = customers.iloc[:RESERVED]  # served again, later, with one more support call
    write_log(
        log_dir,
        again,
        scores[:RESERVED],
        host="host-b",
        start=BASE + dt.timedelta(minutes=50),
        span=dt.timedelta(minutes=9),
        edit=_more_calls,
    )
    _labels(customers, labels_dir)
    monkeypatch.setenv("MLOPS_PREDICTION_LOG", str(log_dir))
    monkeypatch.setenv("MLOPS_LABELS", str(labels_dir))
    champion, version = _champion(tracking, tmp_path)
    return World(customers, log_dir, labels_dir, champion, version)


def _argv(key: str, *extra: str, window: bool = True) -> list[str]:
    served_window = f"{WINDOW[0].isoformat()}/{WINDOW[1].isoformat()}" if window else ""
    return [
        "ingest", "--partition", key,
        "--served-window", served_window,
        "--as-of", AS_OF.isoformat(),
        "--min-labeled-served-rows", "500",
        "--rows", "1000",
        *extra,
    ]  # fmt: skip


def _manifest(key: str) -> dict:
    return json.loads(Partition.of(load_settings().dataset_root, key).manifest.read_text())


def _frame(key: str) -> pd.DataFrame:
    return load_partition_frame(Partition.of(load_settings().dataset_root, key))[0]


def test_served_partition_rows_and_provenance(world: World) -> None:
    assert main(_argv("drifted")) == 0
    manifest, frame = _manifest("drifted"), _frame("drifted")
    served = manifest["served"]
    assert manifest["source"] == f"served://{load_settings().model_name}"
    assert served["window"] == {"start": WINDOW[0].isoformat(), "end": WINDOW[1].isoformat()}
    assert (served["window_from"], served["as_of"]) == (GIVEN, AS_OF.isoformat())

    # Every log file read, with the sha256 and line count of its bytes.
    files = sorted(world.log_dir.rglob("*.jsonl"))
    assert [f["name"] for f in served["log_files"]] == [str(p) for p in files]
    for entry, path in zip(served["log_files"], files, strict=True):
        data = path.read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["rows"] == data.count(b"\n")
    labels = served["labels"]
    assert labels["location"] == str(world.labels_dir)
    for entry in labels["files"]:
        assert entry["sha256"] == hashlib.sha256(Path(entry["name"]).read_bytes()).hexdigest()
    counts = labels["counts"]
    assert (counts["late"], counts["duplicates"], counts["conflicting"]) == (
        len(LATE),
        len(CORRECTED),
        len(FLIPPED),
    )
    assert counts["rows_read"] == sum(f["rows"] for f in labels["files"])
    assert counts["rows_read"] == sum(counts[k] for k in ("kept", "empty", "late", "duplicates"))

    # The join: every served row of a labelled customer (both predictions of the re-served).
    join = served["join"]
    assert join["matched"] == LABELLED + RESERVED
    assert join["unmatched_labels"] == UNMATCHED
    assert join["join_rate"] == pytest.approx((LABELLED + RESERVED) / (SERVED + RESERVED))
    rows = served["rows"]
    assert rows["served"] == SERVED + RESERVED
    assert (rows["distinct"], rows["duplicates_dropped"]) == (SERVED, RESERVED)
    assert rows["labelled"] == LABELLED == (frame["customer_id"].str.startswith("C00007")).sum()
    assert rows["total"] == len(frame) == rows["labelled"] + rows["reference"]

    # The served rows are the customers as served (the newest prediction) with their labels.
    truth = world.customers.set_index("customer_id")
    mine = frame[frame["customer_id"].str.startswith("C00007")].set_index("customer_id")
    labelled_ids = truth.index[list(BY_ENTITY) + list(BY_REQUEST)]
    assert sorted(mine.index) == sorted(labelled_ids)
    expected = truth.loc[mine.index].copy()
    reserved = truth.index[:RESERVED]
    expected.loc[reserved, "support_calls_90d"] = (
        expected.loc[reserved, "support_calls_90d"] + 1
    ).clip(upper=30)
    flipped = truth.index[list(FLIPPED)]
    expected.loc[flipped, "churn"] = 1 - expected.loc[flipped, "churn"]
    pd.testing.assert_frame_equal(mine, expected.loc[mine.index, list(mine.columns)])

    # The champion's share: drawn from its train and valid buckets only, rows as they were.
    champion_frame, champion_manifest = load_partition_frame(world.champion)
    reference = served["reference"]
    assert reference == {
        "model_version": world.champion_version,
        "partition": "champion-data",
        "data_sha256": champion_manifest["data_sha256"],
        "rows": rows["reference"],
        "share": pytest.approx(0.5, abs=1e-3),
        "requested_share": 0.5,
        "buckets": ["train", "valid"],
    }
    drawn = frame[frame["customer_id"].str.startswith("C00001")]
    splits = split_frame(champion_frame, "customer_id")
    assert set(drawn["customer_id"]) <= set(splits.train["customer_id"]) | set(
        splits.valid["customer_id"]
    )
    assert not set(drawn["customer_id"]) & set(splits.holdout["customer_id"])
    original = champion_frame.set_index("customer_id").loc[drawn["customer_id"]]
    pd.testing.assert_frame_equal(drawn.set_index("customer_id"), original)
    assert dict(frame.dtypes) == dict(champion_frame.dtypes)  # one table, one type per column


def test_the_partition_passes_validate(world: World) -> None:
    """What ingest built is a training table validate accepts (the label shift of drifted
    customers is what the run means to learn)."""
    from mlops_steps.training.validate import run_validate

    assert main(_argv("drifted")) == 0
    result = run_validate(load_settings(), "drifted", ValidationPolicy(accept_shift=True))
    assert result["success"] is True, result


def test_same_window_and_as_of_give_the_same_partition(world: World) -> None:
    assert main(_argv("first")) == 0
    first = _manifest("first")
    before = Partition.of(load_settings().dataset_root, "first").manifest.read_bytes()
    result = run_ingest(
        load_settings(),
        "first",
        SourceRequest(),
        ServedDataRequest(min_labeled_rows=500),
        served_window=parse_served_window(f"{WINDOW[0].isoformat()}/{WINDOW[1].isoformat()}"),
        as_of=AS_OF,
    )
    assert result["unchanged"] is True
    assert Partition.of(load_settings().dataset_root, "first").manifest.read_bytes() == before
    assert main(_argv("second")) == 0  # a retry under another key reads the same inputs
    second = _manifest("second")
    assert (second["data_sha256"], second["file_sha256"]) == (
        first["data_sha256"],
        first["file_sha256"],
    )
    ignore = {"partition", "path", "ingested_at"}
    assert {k: v for k, v in second.items() if k not in ignore} == {
        k: v for k, v in first.items() if k not in ignore
    }
    # A label that lands after the run's as_of changes nothing of it.
    pd.DataFrame(
        {
            "entity_id": world.customers["customer_id"].iloc[1_900:],
            "churn": world.customers["churn"].iloc[1_900:],
            "label_time": (AS_OF + dt.timedelta(minutes=5)).isoformat(),
        }
    ).to_csv(world.labels_dir / "e-after.csv", index=False)
    assert main(_argv("third")) == 0
    assert _manifest("third")["data_sha256"] == first["data_sha256"]


def test_the_share_of_champion_rows_is_respected(world: World) -> None:
    assert main(_argv("fifth", "--reference-share", "0.2")) == 0
    rows = _manifest("fifth")["served"]["rows"]
    assert rows["reference"] == round(LABELLED * 0.2 / 0.8)
    assert rows["reference"] / rows["total"] == pytest.approx(0.2, abs=1e-3)
    assert main(_argv("none", "--reference-share", "0")) == 0
    served = _manifest("none")["served"]
    assert served["rows"]["reference"] == 0 and served["rows"]["total"] == LABELLED
    assert served["reference"]["partition"] == "champion-data"  # named for the reference hold-out


def test_too_few_labelled_rows_fail_and_write_nothing(world: World) -> None:
    key = "starved"
    assert main(_argv(key, "--min-labeled-served-rows", str(LABELLED + 1))) == 2
    assert not Partition.of(load_settings().dataset_root, key).root.exists()
    with pytest.raises(TooFewLabelledRows) as info:
        run_ingest(
            load_settings(),
            key,
            SourceRequest(),
            ServedDataRequest(min_labeled_rows=LABELLED + 1),
            served_window=parse_served_window(f"{WINDOW[0].isoformat()}/{WINDOW[1].isoformat()}"),
            as_of=AS_OF,
        )
    assert f"{LABELLED} served rows with a label" in str(info.value)
    assert f"< min_labeled_rows {LABELLED + 1}" in str(info.value)
    assert not Partition.of(load_settings().dataset_root, key).root.exists()
    # A window with no traffic at all is the same refusal.
    empty = (
        f"{(BASE - dt.timedelta(days=3)).isoformat()}/{(BASE - dt.timedelta(days=2)).isoformat()}"
    )
    assert main(_argv("empty", "--training-data", "served", "--served-window", empty)) == 2
    assert not Partition.of(load_settings().dataset_root, "empty").root.exists()


def test_the_mode_and_the_window_choose_the_data(world: World) -> None:
    # auto without a window (a cron or manual run): the source.
    assert main(_argv("auto-source", window=False)) == 0
    assert _manifest("auto-source")["source"] == "synthetic://churn"
    assert "served" not in _manifest("auto-source")
    # source: never served, even with a drift event's window.
    assert main(_argv("source", "--training-data", "source")) == 0
    assert _manifest("source")["source"] == "synthetic://churn"
    # served without a window: the served_days before as_of.
    assert main(_argv("days", "--training-data", "served", "--served-days", "2", window=False)) == 0
    served = _manifest("days")["served"]
    assert served["window_from"] == SERVED_DAYS
    assert served["window"] == {
        "start": (AS_OF - dt.timedelta(days=2)).isoformat(),
        "end": AS_OF.isoformat(),
    }
    assert served["rows"]["labelled"] == LABELLED
    # served with a window: the window (auto with one: the same, see the provenance test).
    assert main(_argv("window", "--training-data", "served")) == 0
    assert _manifest("window")["served"]["window_from"] == GIVEN


def test_without_a_champion_the_partition_is_served_rows_only(world: World) -> None:
    MlflowClient().delete_registered_model_alias(load_settings().model_name, "champion")
    assert main(_argv("alone")) == 0
    served = _manifest("alone")["served"]
    assert served["reference"] is None
    assert served["rows"]["total"] == served["rows"]["labelled"] == LABELLED

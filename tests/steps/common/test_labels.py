"""The label landing place (common/labels.py) on real files: the three joins, late, duplicate,
conflicting and unmatched labels, label_time from the file, validation against the contract
(binary churn, multiclass wine, regression diabetes), CSV, gzip'd CSV and Parquet, local and S3."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_steps.common.labels import LabelsError, LabelSet, join_labels, read_labels
from mlops_steps.common.predictions import read_window
from mlops_steps.common.window import Window
from mlops_steps.contract.loader import load_contract, parse_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.monitoring.reference import features_of
from tests.steps.monitoring.helpers import BASE, write_log

CHURN = load_contract("churn")
ID, LABEL = str(CHURN.id_column), CHURN.label
KNOWN = BASE + dt.timedelta(hours=2)  # when the outcomes in these tests became known
CUTOFF = BASE + dt.timedelta(hours=3)


def _conserved(labels: LabelSet) -> None:
    """Every label read is counted exactly once."""
    counts = labels.counts
    assert counts["rows_read"] == sum(f.rows for f in labels.files)
    assert counts["rows_read"] == sum(counts[k] for k in ("kept", "empty", "late", "duplicates"))
    assert counts["kept"] == sum(len(t) for t in labels.tables.values())


def _at(offset_minutes: float) -> str:
    return (KNOWN + dt.timedelta(minutes=offset_minutes)).isoformat()


@pytest.fixture
def served(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """40 churn customers as the service logs them: 20 in two batch requests of 10 rows
    ("req-batch-…"), 20 in single-row requests ("req-single-…"); the meta read back."""
    customers = generate_churn(40, seed=3)
    log = tmp_path / "log"
    write_log(log, customers.iloc[:20], np.linspace(0, 1, 20), batch=10, host="batch")
    write_log(log, customers.iloc[20:], np.linspace(0, 1, 20), batch=1, host="single",
              start=BASE + dt.timedelta(minutes=59, seconds=30),
              span=dt.timedelta(seconds=20))  # fmt: skip
    window = read_window(str(log), Window(BASE, BASE + dt.timedelta(hours=1)),
                         features_of(CHURN.feature_spec()))  # fmt: skip
    assert len(window.meta) == 40
    return customers, window.meta


def test_three_joins_most_specific_first_and_unmatched_labels_counted(
    served: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    customers, meta = served
    truth = customers[LABEL].astype(float).to_numpy()
    landing = tmp_path / "labels"
    landing.mkdir()
    # Batch rows 0-9 by request id and row (CSV).
    pd.DataFrame({"request_id": "req-batch-0000000", "row": range(10),
                  LABEL: customers[LABEL].iloc[:10], "label_time": _at(0)}
                 ).to_csv(landing / "by-row.csv", index=False)  # fmt: skip
    # Five single-row requests by request id alone, and one batch request: that one is
    # ambiguous (10 rows), so it matches nothing and is counted (Parquet).
    pd.DataFrame({"request_id": [f"req-single-{i:07d}" for i in range(5)] + ["req-batch-0000001"],
                  LABEL: [*customers[LABEL].iloc[20:25], 1], "label_time": _at(1)}
                 ).to_parquet(landing / "by-request.parquet")  # fmt: skip
    # Every customer by entity id, but rows 0-9 with the opposite outcome: the more specific
    # label above wins there; and one customer never served (gzip'd CSV).
    by_entity = customers[[ID, LABEL]].rename(columns={ID: "entity_id"})
    by_entity.loc[:9, LABEL] = 1 - by_entity.loc[:9, LABEL]
    by_entity = pd.concat([by_entity, pd.DataFrame({"entity_id": ["never-served"], LABEL: [0]})])
    by_entity.assign(label_time=_at(2)).to_csv(landing / "by-entity.csv.gz", index=False)

    labels = read_labels(str(landing), CHURN, cutoff=CUTOFF)
    _conserved(labels)
    assert labels.counts["kept"] == labels.counts["rows_read"] == 10 + 6 + 41
    assert {f.name.rsplit("/", 1)[1]: f.keys for f in labels.files} == {
        "by-entity.csv.gz": ("entity_id",),
        "by-request.parquet": ("request_id",),
        "by-row.csv": ("request_id", "row"),
    }
    for f in labels.files:
        assert f.sha256 == hashlib.sha256(Path(f.name).read_bytes()).hexdigest()
    table = labels.tables[("request_id", "row")]
    assert table["label_time"].eq(pd.Timestamp(KNOWN)).all()

    join = join_labels(meta, labels, CHURN)
    assert join.joined_by == {"request_id+row": 10, "request_id": 5, "entity_id": 25}
    assert join.matched == 40 and join.join_rate == 1.0
    assert join.unmatched_labels == 2  # the ambiguous request id and the unserved customer
    np.testing.assert_array_equal(join.labels.to_numpy(), truth)
    assert join.to_dict()["served_rows"] == 40
    assert labels.to_dict()["counts"]["kept"] == 57


def test_request_id_alone_never_labels_a_batch_request(
    served: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    _, meta = served
    landing = tmp_path / "labels"
    landing.mkdir()
    pd.DataFrame({"request_id": ["req-batch-0000000", "req-single-0000003"], LABEL: [1, 0]}
                 ).to_csv(landing / "l.csv", index=False)  # fmt: skip
    join = join_labels(meta, read_labels(str(landing), CHURN), CHURN)
    assert join.matched == 1 and join.unmatched_labels == 1
    labelled = meta[join.labels.notna()]
    assert labelled["request_id"].tolist() == ["req-single-0000003"]
    assert join.join_rate == pytest.approx(1 / 40)


def test_late_labels_are_counted_and_left_for_a_later_run(
    served: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    customers, meta = served
    landing = tmp_path / "labels"
    landing.mkdir()
    times = [_at(0)] * 30 + [(CUTOFF + dt.timedelta(minutes=5)).isoformat()] * 10
    values: list[Any] = list(customers[LABEL])
    values[0] = ""  # an outcome not known yet
    pd.DataFrame({"entity_id": customers[ID], LABEL: values, "label_time": times}).to_csv(
        landing / "outcomes.csv", index=False
    )
    labels = read_labels(str(landing), CHURN, cutoff=CUTOFF)
    _conserved(labels)
    assert (labels.counts["late"], labels.counts["empty"], labels.counts["kept"]) == (10, 1, 29)
    join = join_labels(meta, labels, CHURN)
    assert join.matched == 29
    assert join.labels.iloc[30:].isna().all()  # the late ones are not used
    everything = read_labels(str(landing), CHURN)  # no cutoff: all of them
    assert everything.counts["late"] == 0 and everything.counts["kept"] == 39


def test_duplicates_latest_label_time_wins_and_conflicts_are_counted(tmp_path: Path) -> None:
    landing = tmp_path / "labels"
    landing.mkdir()
    customers = generate_churn(6, seed=4)
    ids = customers[ID].tolist()
    # a.csv: the newest outcome of ids 0-2; b.csv, a later name, an older one, two of which
    # differ; both name ids 3-4 at the same time (a tie: the later file name wins); one id
    # twice in one file at the same time (the later row wins).
    pd.DataFrame({"entity_id": ids[:5], LABEL: [1, 1, 0, 1, 1], "label_time": _at(10)}).to_csv(
        landing / "a.csv", index=False
    )
    pd.DataFrame({"entity_id": [*ids[:3], ids[3], ids[4], ids[5], ids[5]],
                  LABEL: [0, 1, 1, 0, 1, 0, 1],
                  "label_time": [_at(0)] * 3 + [_at(10)] * 2 + [_at(5)] * 2}
                 ).to_csv(landing / "b.csv", index=False)  # fmt: skip
    labels = read_labels(str(landing), CHURN, cutoff=CUTOFF)
    _conserved(labels)
    kept = labels.tables[("entity_id",)].set_index("entity_id")["label"]
    assert kept.loc[ids].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    # Superseded: ids 0-2 in b.csv, ids 3-4 in a.csv, id 5's first row.
    assert labels.counts["duplicates"] == 6
    # Differing from the winner: ids 0 and 2 (b.csv), id 3 (a.csv said 1), id 5 (0 vs 1).
    assert labels.counts["conflicting"] == 4
    assert labels.counts["kept"] == 6


def test_missing_label_time_is_the_files_modification_time(tmp_path: Path) -> None:
    landing = tmp_path / "labels"
    landing.mkdir()
    customers = generate_churn(8, seed=6)
    path = landing / "crm.parquet"
    times = [_at(0)] * 4 + [None] * 4  # half the rows say when, half do not
    pd.DataFrame({"entity_id": customers[ID], LABEL: customers[LABEL], "label_time": times}
                 ).to_parquet(path)  # fmt: skip
    modified = KNOWN + dt.timedelta(minutes=30)
    os.utime(path, (modified.timestamp(), modified.timestamp()))
    no_column = landing / "legacy.csv"
    customers[[ID, LABEL]].rename(columns={ID: "entity_id"}).iloc[:2].to_csv(no_column,
                                                                         index=False)  # fmt: skip
    later = CUTOFF + dt.timedelta(days=1)
    os.utime(no_column, (later.timestamp(), later.timestamp()))

    labels = read_labels(str(landing), CHURN, cutoff=CUTOFF)
    _conserved(labels)
    assert labels.counts["label_time_from_file"] == 4 + 2
    assert labels.counts["late"] == 2  # legacy.csv was written after the cutoff
    table = labels.tables[("entity_id",)].set_index("entity_id")
    stamps = table.loc[customers[ID], "label_time"]
    assert stamps.iloc[:4].eq(pd.Timestamp(KNOWN)).all()
    assert stamps.iloc[4:].eq(pd.Timestamp(modified)).all()
    # A cutoff before the modification time makes the rows without a time late too.
    early = read_labels(str(landing), CHURN, cutoff=KNOWN + dt.timedelta(minutes=1))
    assert early.counts["late"] == 4 + 2 and early.counts["kept"] == 4


@pytest.mark.parametrize(
    ("name", "frame", "message"),
    [
        ("classes.csv", {"entity_id": ["c1", "c2"], LABEL: ["1", "yes"]},
         "1 values of 'churn' are not classes of model churn"),
        ("columns.csv", {"customer": ["c1"], LABEL: ["1"]}, "needs 'churn' and 'entity_id'"),
        ("no-label.parquet", {"entity_id": ["c1"], "outcome": [1]}, "needs 'churn'"),
        ("time.csv", {"entity_id": ["c1"], LABEL: ["1"], "label_time": ["yesterday"]},
         "'label_time' are not ISO 8601 times"),
        ("row.csv", {"request_id": ["r1"], "row": ["first"], LABEL: ["0"]},
         "'row' are not row numbers"),
        ("no-id.csv", {"entity_id": ["c1", ""], LABEL: ["0", "1"]}, "1 rows have no 'entity_id'"),
    ],
)  # fmt: skip
def test_a_file_breaking_the_contract_is_named(
    tmp_path: Path, name: str, frame: dict[str, list[Any]], message: str
) -> None:
    landing = tmp_path / "labels"
    landing.mkdir()
    pd.DataFrame({"entity_id": ["fine"], LABEL: ["0"]}).to_csv(landing / "a-good.csv", index=False)
    table = pd.DataFrame(frame)
    path = landing / name
    table.to_parquet(path) if name.endswith(".parquet") else table.to_csv(path, index=False)
    with pytest.raises(LabelsError, match=message) as caught:
        read_labels(str(landing), CHURN)
    assert caught.value.subject == str(path) and caught.value.fix


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    landing = tmp_path / "labels"
    landing.mkdir()
    (landing / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LabelsError, match="not a readable Parquet file") as caught:
        read_labels(str(landing), CHURN)
    assert caught.value.subject == str(landing / "broken.parquet")


def test_no_landing_place_yet_is_no_labels(tmp_path: Path) -> None:
    labels = read_labels(str(tmp_path / "nothing-here"), CHURN, cutoff=CUTOFF)
    assert labels.files == [] and labels.tables == {} and labels.counts["rows_read"] == 0
    meta = pd.DataFrame({"request_id": ["r"], "row": [0], "entity_id": ["e"]})
    join = join_labels(meta, labels, CHURN)
    assert (join.matched, join.join_rate, join.unmatched_labels) == (0, 0.0, 0)


def _contract(tmp_path: Path, name: str, frame: pd.DataFrame, **more: Any) -> ModelContract:
    document = {
        "name": name,
        "id_column": "row_id",
        "label": "target",
        "features": [{"name": c, "kind": "float"} for c in frame.columns if c != "target"],
        "gate": {"checks": [{"metric": "rmse" if more.get("task") == "regression"
                             else "accuracy", "threshold": 0.5}]},
        **more,
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return parse_contract(yaml.safe_load(path.read_text()), path)


def _meta(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"req-{i}" for i in ids], "row": 0, "entity_id": ids})


def test_multiclass_labels_are_class_names(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    wine["target"] = wine["target"].map(lambda v: f"class_{v}")
    contract = _contract(tmp_path, "wine", wine, task="multiclass",
                         classes=["class_0", "class_1", "class_2"])  # fmt: skip
    ids = [f"w{i}" for i in range(len(wine))]
    landing = tmp_path / "labels"
    landing.mkdir()
    pd.DataFrame({"request_id": [f"req-{i}" for i in ids], "row": 0, "target": wine["target"],
                  "label_time": _at(0)}).to_parquet(landing / "wine.parquet")  # fmt: skip
    labels = read_labels(str(landing), contract, cutoff=CUTOFF)
    join = join_labels(_meta(ids), labels, contract)
    assert join.matched == len(wine) and join.labels.dtype == object
    assert join.labels.tolist() == wine["target"].tolist()
    pd.DataFrame({"entity_id": ids[:3], "target": ["class_1", "class_9", "class_2"]}).to_csv(
        landing / "z-typo.csv", index=False
    )
    with pytest.raises(LabelsError, match=r"not classes of model wine.*first: 'class_9'"):
        read_labels(str(landing), contract)


def test_regression_labels_are_numbers(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes(as_frame=True, scaled=False).frame
    contract = _contract(tmp_path, "diabetes", diabetes, task="regression")
    ids = [f"d{i}" for i in range(len(diabetes))]
    landing = tmp_path / "labels"
    landing.mkdir()
    pd.DataFrame({"entity_id": ids, "target": diabetes["target"], "label_time": _at(0)}).to_csv(
        landing / "progression.csv", index=False
    )
    join = join_labels(_meta(ids), read_labels(str(landing), contract, cutoff=CUTOFF), contract)
    assert join.joined_by == {"entity_id": len(ids)}
    np.testing.assert_allclose(join.labels.to_numpy(), diabetes["target"].to_numpy())
    pd.DataFrame({"entity_id": ["d1"], "target": ["about 150"]}).to_csv(
        landing / "words.csv", index=False
    )
    with pytest.raises(LabelsError, match="values of 'target' are not numbers") as caught:
        read_labels(str(landing), contract)
    assert caught.value.subject == str(landing / "words.csv")


def test_s3_prefix_reads_like_a_directory(s3_endpoint: str, tmp_path: Path) -> None:
    import boto3

    customers = generate_churn(20, seed=8)
    landing = tmp_path / "labels"
    landing.mkdir()
    frame = customers[[ID, LABEL]].rename(columns={ID: "entity_id"}).assign(label_time=_at(0))
    frame.iloc[:12].to_csv(landing / "day1.csv", index=False)
    frame.iloc[8:].to_parquet(landing / "day2.parquet")  # 4 duplicates of day1's, same values
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="labels")
    for path in landing.iterdir():
        s3.put_object(Bucket="labels", Key=f"churn/{path.name}", Body=path.read_bytes())
    s3.put_object(Bucket="labels", Key="churn/README.txt", Body=b"not a label file")
    s3.put_object(Bucket="labels", Key="churner/other.csv", Body=b"entity_id,churn\nx,maybe\n")

    remote = read_labels("s3://labels/churn", CHURN, cutoff=CUTOFF)
    local = read_labels(str(landing), CHURN, cutoff=CUTOFF)
    _conserved(remote)
    assert [f.name for f in remote.files] == ["s3://labels/churn/day1.csv",
                                              "s3://labels/churn/day2.parquet"]  # fmt: skip
    assert [f.sha256 for f in remote.files] == [f.sha256 for f in local.files]
    assert remote.counts == local.counts
    assert (remote.counts["duplicates"], remote.counts["conflicting"]) == (4, 0)
    meta = _meta(customers[ID].tolist())
    assert join_labels(meta, remote, CHURN).matched == 20

    with pytest.raises(LabelsError, match="cannot list the label landing place") as caught:
        read_labels("s3://no-such-bucket/churn", CHURN)
    assert caught.value.subject == "s3://no-such-bucket/churn"


def test_settings_locate_each_models_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_steps.core.settings import load_settings

    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLOPS_LABELS", raising=False)
    settings = load_settings().for_model("churn")
    assert settings.labels_location == str(tmp_path / "data" / "labels")  # the single-model dir
    (tmp_path / "data" / "labels" / "churn").mkdir(parents=True)
    assert settings.labels_location == str(tmp_path / "data" / "labels" / "churn")
    monkeypatch.setenv("MLOPS_LABELS", "s3://outcomes/{model}/landed")
    assert load_settings().for_model("wine").labels_location == "s3://outcomes/wine/landed"

"""``contract infer`` on tables no one here wrote (scikit-learn's bundled datasets), read back by
the loader: what the file says must be what the data shows, and what only a person can know is
left as a DECIDE comment."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from mlops_steps.contract.infer import Draft, draft_contract, write_contract
from mlops_steps.contract.loader import ContractError, load_contract
from mlops_steps.contract.model import ModelContract


def _frame(loader: object) -> pd.DataFrame:
    frame: pd.DataFrame = loader(as_frame=True).frame  # type: ignore[operator]
    return frame


def _infer(frame: pd.DataFrame, directory: Path, **kwargs: object) -> ModelContract:
    draft = draft_contract(frame, **kwargs)  # type: ignore[arg-type]
    path, contract = write_contract(draft, str(kwargs["name"]), directory)
    assert path == directory / f"{kwargs['name']}.yaml"
    assert load_contract(str(kwargs["name"]), directory) == contract
    return contract


def _reread(tmp_path: Path, frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The table as the training source would give it: written to CSV and read back."""
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return pd.read_csv(path)


def test_breast_cancer_is_a_binary_contract(tmp_path: Path) -> None:
    frame = _reread(tmp_path, _frame(load_breast_cancer), "cancer")
    contract = _infer(
        frame, tmp_path, name="cancer", label="target", task="binary", source="/data/cancer.csv"
    )
    assert contract.task == "binary"
    assert (contract.classes, contract.positive_class) == ((0, 1), 1)
    assert contract.label == "target" and contract.id_column is None
    assert contract.feature_names == tuple(c for c in frame.columns if c != "target")
    assert {f.kind for f in contract.features} == {"float"}
    radius = contract.features_by_name["mean radius"]
    assert (radius.expected_min, radius.expected_max) == (
        frame["mean radius"].min(),
        frame["mean radius"].max(),
    )
    # Observed ranges are the expected range; hard limits are a person's decision.
    assert all(f.minimum is None and f.maximum is None for f in contract.features)
    assert not any(f.nullable for f in contract.features)
    assert contract.primary_metric == "auc"
    assert [c.to_dict() for c in contract.gate] == [
        {"metric": "auc", "greater_is_better": True, "threshold": 0.7, "min_absolute_change": -0.01}
    ]
    # 569 rows: below the default 1000 rows validation wants, and LightGBM's 40 rows per leaf.
    assert contract.section("validation") == {"min_rows": 284}
    assert contract.section("training") == {"min_data_in_leaf": 11}
    assert contract.source == "/data/cancer.csv"
    text = contract.path.read_text() if contract.path else ""
    assert "# limits: {min: 0.0, max: null}  # DECIDE" in text
    assert "positive_class: 1  # DECIDE" in text


def test_wine_from_parquet_is_a_multiclass_contract(tmp_path: Path) -> None:
    frame = _frame(load_wine)
    frame.to_parquet(tmp_path / "wine.parquet")
    frame = pd.read_parquet(tmp_path / "wine.parquet")
    contract = _infer(frame, tmp_path, name="wine", label="target", task="multiclass")
    assert contract.classes == (0, 1, 2) and contract.positive_class is None
    assert contract.class_labels == ("0", "1", "2")
    assert contract.primary_metric == "log_loss" and not contract.greater_is_better
    (check,) = contract.gate
    shares = frame["target"].value_counts(normalize=True).to_numpy()
    prior_log_loss = float(-(shares * np.log(shares)).sum())
    assert check.metric == "log_loss" and check.greater_is_better is False
    assert check.threshold == pytest.approx(prior_log_loss, abs=1e-4)
    assert check.min_relative_change == -0.02
    assert contract.section("training") == {"min_data_in_leaf": 5}


def test_diabetes_is_a_regression_contract(tmp_path: Path) -> None:
    frame = _reread(tmp_path, _frame(load_diabetes), "diabetes")
    contract = _infer(frame, tmp_path, name="diabetes", label="target", task="regression")
    assert contract.classes == () and contract.positive_class is None
    assert contract.primary_metric == "rmse"
    (check,) = contract.gate
    # The RMSE of always predicting the mean: a model must at least beat it.
    assert check.threshold == pytest.approx(float(frame["target"].std(ddof=0)), rel=1e-3)
    spec = contract.feature_spec()
    assert spec["task"] == "regression" and "classes" not in spec
    age = next(f for f in spec["features"] if f["name"] == "age")
    assert age["expected_range"] == {"min": frame["age"].min(), "max": frame["age"].max()}
    assert age["minimum"] is None  # centred data: no zero floor is suggested
    text = contract.path.read_text() if contract.path else ""
    assert "    # limits: {min: null, max: null}  # DECIDE" in text


def test_nulls_strings_booleans_and_yes_no_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 300
    frame = pd.DataFrame(
        {
            "account": [f"acc-{i:04d}" for i in range(rows)],
            "plan": rng.choice(["basic", "pro", "yes", "no", "off", "~", "1"], rows),
            "visits": rng.integers(0, 40, rows),
            "is_member": rng.integers(0, 2, rows),  # 0/1 numbers stay integer
            "verified": rng.choice([True, False], rows),
            "spend": rng.normal(50, 10, rows).round(2),
            "churned": rng.choice(["yes", "no"], rows),
        }
    )
    frame.loc[::7, "spend"] = np.nan
    frame.loc[::11, "plan"] = None
    frame.loc[::13, "visits"] = np.nan  # whole numbers with gaps: pandas reads them as floats
    frame = _reread(tmp_path, frame, "members")
    draft = draft_contract(
        frame, name="members", label="churned", task="binary", id_column="account"
    )
    _, contract = write_contract(draft, "members", tmp_path)
    features = contract.features_by_name
    assert contract.id_column == "account" and "account" not in features
    assert (contract.classes, contract.positive_class) == (("no", "yes"), "yes")
    assert features["plan"].kind == "category" and features["plan"].nullable
    # Category values YAML would misread (yes/no/off, ~, 1) come back as the strings they are.
    assert features["plan"].categories == ("1", "basic", "no", "off", "pro", "yes", "~")
    assert features["is_member"].kind == "integer" and not features["is_member"].nullable
    assert features["verified"].kind == "boolean"
    assert features["spend"].kind == "float" and features["spend"].nullable
    assert features["spend"].expected_min == frame["spend"].min()
    assert features["visits"].nullable and features["visits"].kind == "float"
    assert any("is_member: kept integer" in note for note in draft.notes)
    assert any("positive_class is 'yes'" in note for note in draft.notes)


def test_a_bool_label_names_its_classes_as_the_steps_compare_them(tmp_path: Path) -> None:
    frame = _frame(load_breast_cancer).assign(target=lambda f: f["target"].astype(bool))
    contract = _infer(frame, tmp_path, name="cancer_bool", label="target", task="binary")
    # Training maps each label value v to its class by str(v).
    assert contract.class_labels == ("False", "True") and contract.positive_class == "True"


def test_a_sample_is_drawn_and_said_so(tmp_path: Path) -> None:
    frame = _frame(load_breast_cancer)
    draft = draft_contract(
        frame.sample(n=100, random_state=1),
        name="cancer",
        label="target",
        task="binary",
        total_rows=len(frame),
    )
    assert "from 100 of 569 rows" in draft.text
    assert "  min_rows: 50  # DECIDE" in draft.text


@pytest.mark.parametrize(
    ("loader", "task", "words"),
    [
        (load_wine, "binary", "has 3 distinct values in the sample (0, 1, 2); a binary model"),
        (load_breast_cancer, "multiclass", "has 2 distinct values"),
        (load_diabetes, "multiclass", "has 214 distinct numbers"),
    ],
)
def test_a_task_the_label_does_not_fit_is_refused_with_the_task_it_fits(
    loader: object, task: str, words: str
) -> None:
    with pytest.raises(ContractError) as caught:
        draft_contract(_frame(loader), name="m", label="target", task=task)
    assert words in str(caught.value)
    assert "--label target" in str(caught.value)


def test_refusals_name_the_flag_and_the_fix(tmp_path: Path) -> None:
    frame = _frame(load_wine)
    cases = [
        ({"name": "Wine-2"}, "--name 'Wine-2': must be lower case", "use e.g. wine_2"),
        ({"label": "colour"}, "--label colour: is not a column", "name one of its columns"),
        ({"id_column": "proline"}, "--id proline: repeats values", "name a unique column"),
        ({"task": "ranking"}, "--task 'ranking': is not one of", "name one of them"),
    ]
    for change, message, fix in cases:
        args = {"name": "wine", "label": "target", "task": "multiclass", **change}
        with pytest.raises(ContractError) as caught:
            draft_contract(frame, **args)  # type: ignore[arg-type]
        assert message in str(caught.value) and f"Fix: {fix}" in str(caught.value)
    text_label = frame.assign(target=frame["target"].map({0: "a", 1: "b", 2: "c"}))
    with pytest.raises(ContractError, match=r"not numbers.*Fix: use --task multiclass"):
        draft_contract(text_label, name="wine", label="target", task="regression")
    unlabelled = frame.astype({"target": float})
    unlabelled.loc[3, "target"] = math.nan
    with pytest.raises(ContractError, match="missing in 1 sample rows"):
        draft_contract(unlabelled, name="wine", label="target", task="multiclass")
    dated = frame.assign(when=pd.Timestamp("2024-01-01"))
    with pytest.raises(ContractError, match="column 'when': is datetime64"):
        draft_contract(dated, name="wine", label="target", task="multiclass")


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path) -> None:
    frame = _frame(load_wine)
    draft = draft_contract(frame, name="wine", label="target", task="multiclass")
    path, _ = write_contract(draft, "wine", tmp_path)
    path.write_text(path.read_text().replace("# owners: [your-team]", "owners: [wine-team]"))
    with pytest.raises(ContractError, match=r"exists already.*--force"):
        write_contract(draft, "wine", tmp_path)
    assert load_contract("wine", tmp_path).owners == ("wine-team",)
    write_contract(draft, "wine", tmp_path, force=True)
    assert load_contract("wine", tmp_path).owners == ()


def test_a_draft_the_loader_refuses_is_never_written(tmp_path: Path) -> None:
    broken = Draft(text="name: wine\ntask: binary\n")
    with pytest.raises(ContractError, match=r"refused: .*wine\.yaml: \(top level\): 'label' is a"):
        write_contract(broken, "wine", tmp_path)
    assert list(tmp_path.iterdir()) == []

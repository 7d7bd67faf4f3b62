import numpy as np
import pandas as pd
import pytest

from mlops_steps.common.storage import frame_sha256
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import fits, generate_churn

CHURN = load_contract("churn")
ALL_COLUMNS, ID_COLUMN, LABEL_COLUMN = CHURN.all_columns, CHURN.id_column, CHURN.label
CATEGORICAL_FEATURES, FEATURES = CHURN.categorical_features, CHURN.features


def test_same_inputs_same_frame_and_hash() -> None:
    a, b = generate_churn(5_000, seed=7), generate_churn(5_000, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert frame_sha256(a) == frame_sha256(b)
    assert frame_sha256(a) != frame_sha256(generate_churn(5_000, seed=8))


def test_frame_honours_the_contract() -> None:
    frame = generate_churn(20_000, seed=1)
    assert tuple(frame.columns) == ALL_COLUMNS
    assert frame[ID_COLUMN].is_unique
    assert not frame.isna().any().any()
    for feature in FEATURES:
        column = frame[feature.name]
        if feature.kind == "category":
            assert set(column.unique()) <= set(feature.categories), feature.name
        else:
            assert column.min() >= feature.minimum and column.max() <= feature.maximum, feature.name
    assert set(frame[LABEL_COLUMN].unique()) == {0, 1}
    assert 0.15 < frame[LABEL_COLUMN].mean() < 0.45


def test_label_is_learnable_from_the_features() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    frame = generate_churn(20_000, seed=3)
    x = pd.get_dummies(
        frame.drop(columns=[ID_COLUMN, LABEL_COLUMN]), columns=list(CATEGORICAL_FEATURES)
    ).astype(float)
    x = (x - x.mean()) / x.std().replace(0, 1)
    y = frame[LABEL_COLUMN]
    model = LogisticRegression(max_iter=500).fit(x[:15_000], y[:15_000])
    assert roc_auc_score(y[15_000:], model.predict_proba(x[15_000:])[:, 1]) > 0.8


def test_drift_shifts_covariates_and_weakens_the_label() -> None:
    base, drifted = generate_churn(20_000, seed=5), generate_churn(20_000, seed=5, drift=1.0)
    share = lambda f: (f["contract_type"] == "month_to_month").mean()  # noqa: E731
    assert share(drifted) > share(base) + 0.15
    assert drifted["monthly_charges"].mean() > base["monthly_charges"].mean() + 10
    # label noise: the strongest single signal separates the classes less
    gap = lambda f: np.subtract(*f.groupby(LABEL_COLUMN)["tenure_months"].mean()[[0, 1]])  # noqa: E731
    assert gap(drifted) < gap(base)


@pytest.mark.parametrize(("rows", "drift"), [(0, 0.0), (10, -0.1), (10, 1.5)])
def test_bad_arguments_are_refused(rows: int, drift: float) -> None:
    with pytest.raises(ValueError, match=r"rows|drift"):
        generate_churn(rows, seed=1, drift=drift)


def test_the_generator_fits_only_the_churn_contract() -> None:
    import dataclasses

    assert fits(CHURN)
    assert not fits(dataclasses.replace(CHURN, label="target"))
    assert not fits(dataclasses.replace(CHURN, positive_class=0))
    narrowed = dataclasses.replace(
        CHURN,
        features=tuple(
            dataclasses.replace(f, categories=("dsl", "fiber_optic"))
            if f.name == "internet_service"
            else f
            for f in CHURN.features
        ),
    )
    assert not fits(narrowed)  # the generator writes internet_service "none"

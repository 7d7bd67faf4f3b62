"""A deterministic synthetic telco-churn generator.

The same (rows, seed, drift) always produces the same frame, so a re-run of a logical date ingests
byte-identical data. Churn depends on the features through a logistic model with interactions
(month-to-month contracts on fibre churn most; long tenure, security and support add-ons retain),
so a gradient-boosted model learns it to an AUC around 0.85. ``drift`` in [0, 1] moves the
covariates (more month-to-month, higher bills, more support calls) and changes how churn depends
on them (a concept shift): what a model trained before the shift should notice in what it serves,
and a model retrained on the drifted customers' labels should beat it on.

The table it writes is the one models/churn.yaml describes; :func:`fits` says whether a model's
contract describes it (ingest refuses the synthetic source for any other model).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_steps.contract.model import ModelContract

ID_COLUMN, LABEL_COLUMN = "customer_id", "churn"
#: The vocabularies the generator draws from (the probabilities below follow this order).
VOCABULARIES: Mapping[str, tuple[str, ...]] = {
    "contract_type": ("month_to_month", "one_year", "two_year"),
    "internet_service": ("dsl", "fiber_optic", "none"),
    "payment_method": ("electronic_check", "mailed_check", "bank_transfer", "credit_card"),
}
_YES_NO = ("yes", "no")
_ADDON = ("yes", "no", "no_internet")
_TEXT_VALUES: Mapping[str, tuple[str, ...]] = {
    **VOCABULARIES,
    "phone_service": _YES_NO,
    "online_security": _ADDON,
    "tech_support": _ADDON,
    "streaming_tv": _ADDON,
    "paperless_billing": _YES_NO,
    "partner": _YES_NO,
    "dependents": _YES_NO,
}
COLUMNS: tuple[str, ...] = (
    ID_COLUMN,
    "tenure_months",
    "contract_type",
    "monthly_charges",
    "total_charges",
    "internet_service",
    "phone_service",
    "online_security",
    "tech_support",
    "streaming_tv",
    "paperless_billing",
    "payment_method",
    "senior_citizen",
    "partner",
    "dependents",
    "support_calls_90d",
    "avg_monthly_gb",
    LABEL_COLUMN,
)


def fits(contract: ModelContract) -> bool:
    """Whether ``contract`` describes the generated table: the same id, label and feature
    columns, a binary 0/1 label with 1 positive (churned), and every generated category in the
    feature's vocabulary."""
    if contract.all_columns != COLUMNS or contract.task != "binary":
        return False
    if set(contract.class_labels) != {"0", "1"} or str(contract.positive_class) != "1":
        return False
    features = contract.features_by_name
    return all(
        features[name].is_category and set(values) <= set(features[name].categories)
        for name, values in _TEXT_VALUES.items()
    )


#: Customers drawn per chunk, each chunk from its own random stream (chunk 0 from ``seed``
#: itself, so a table of up to this many rows is what earlier versions generated). Part of what
#: the data *is*: changing it changes every table above this size.
GENERATOR_CHUNK_ROWS = 1_000_000


def _pick(rng: np.random.Generator, name: str, probs: list[float], rows: int) -> np.ndarray:
    categories = np.array(VOCABULARIES[name], dtype=object)
    p = np.asarray(probs, dtype=float)
    return categories[rng.choice(len(categories), size=rows, p=p / p.sum())]


def _categorical(values: np.ndarray, name: str) -> pd.Categorical:
    """A text column as ``category`` over its whole vocabulary (the same categories in every
    chunk, so chunks concatenate as categories and hash like the text)."""
    return pd.Categorical(values, categories=list(_TEXT_VALUES[name]))


def _customer_ids(seed: int, start: int, rows: int) -> pd.arrays.ArrowStringArray:
    """``C<seed:05d>-<index:08d>`` for indices ``start..start+rows``, built in Arrow (10M
    Python strings would cost ~700 MB and seconds)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(start, start + rows)), pa.string()), 8, "0")
    ids = pc.binary_join_element_wise(f"C{seed:05d}-", digits, "")
    return pd.arrays.ArrowStringArray(ids)


def generate_churn(rows: int, seed: int, drift: float = 0.0) -> pd.DataFrame:
    """Generate ``rows`` customers; ``drift`` (0..1) shifts the covariates and the concept."""
    chunks = list(generate_churn_chunks(rows, seed, drift))
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def generate_churn_chunks(rows: int, seed: int, drift: float = 0.0) -> Iterator[pd.DataFrame]:
    """The table of :func:`generate_churn`, ``GENERATOR_CHUNK_ROWS`` customers at a time (what
    ingest writes without holding the whole table)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be between 0 and 1, got {drift}")
    for index, start in enumerate(range(0, rows, GENERATOR_CHUNK_ROWS)):
        rng = np.random.default_rng(seed if index == 0 else [seed, index])
        size = min(GENERATOR_CHUNK_ROWS, rows - start)
        yield _generate_chunk(rng, seed, start, size, drift)


def _generate_chunk(
    rng: np.random.Generator, seed: int, start: int, rows: int, drift: float
) -> pd.DataFrame:

    contract = _pick(rng, "contract_type", [0.55 + 0.3 * drift, 0.21, 0.24 - 0.2 * drift], rows)
    m2m = contract == "month_to_month"
    two_year = contract == "two_year"
    tenure_scale = np.where(m2m, 10.0, np.where(two_year, 40.0, 26.0))
    tenure = np.clip(rng.gamma(1.6, tenure_scale / 1.6), 0, 72).astype(np.int64)

    internet = _pick(rng, "internet_service", [0.34, 0.44 + 0.2 * drift, 0.22], rows)
    fiber = internet == "fiber_optic"
    no_internet = internet == "none"

    def addon(p_yes: float) -> np.ndarray:
        values = np.where(rng.random(rows) < p_yes, "yes", "no").astype(object)
        values[no_internet] = "no_internet"
        return values

    online_security = addon(0.32)
    tech_support = addon(0.30 - 0.15 * drift)
    streaming_tv = addon(0.45)
    phone = np.where(rng.random(rows) < 0.9, "yes", "no").astype(object)
    paperless = np.where(rng.random(rows) < 0.6, "yes", "no").astype(object)
    payment = _pick(rng, "payment_method", [0.34, 0.23, 0.22, 0.21], rows)
    senior = (rng.random(rows) < 0.16).astype(np.int64)
    partner_yes = rng.random(rows) < 0.48
    dependents_yes = rng.random(rows) < np.where(partner_yes, 0.5, 0.12)

    monthly = (
        20.0
        + 24.0 * (internet == "dsl")
        + 48.0 * fiber
        + 5.0 * (phone == "yes")
        + 10.0 * (streaming_tv == "yes")
        + 5.0 * (online_security == "yes")
        + 5.0 * (tech_support == "yes")
        + 15.0 * drift
        + rng.normal(0.0, 4.0, rows)
    )
    monthly = np.round(np.clip(monthly, 15.0, 130.0), 2)
    months_billed = np.maximum(tenure, rng.random(rows))  # a new customer has a partial bill
    total = np.round(np.clip(monthly * months_billed * rng.uniform(0.93, 1.04, rows), 0, 1e4), 2)
    calls_rate = 0.6 + 1.4 * (fiber & (tech_support == "no")) + 0.4 * senior + 2.0 * drift
    support_calls = np.clip(rng.poisson(calls_rate), 0, 30).astype(np.int64)
    gb = np.where(no_internet, 0.0, rng.lognormal(np.where(fiber, 5.0, 4.2), 0.6, rows))
    gb = np.round(np.clip(gb, 0.0, 2_000.0), 1)

    logit = (
        -1.9
        + 1.5 * m2m
        - 1.2 * two_year
        - 0.045 * tenure
        + 0.7 * fiber
        + 0.6 * (m2m & fiber)
        + 0.5 * (payment == "electronic_check")
        + 0.35 * senior
        - 0.25 * partner_yes
        - 0.2 * dependents_yes
        + 0.3 * support_calls
        + 0.015 * (monthly - 65.0)
        - 0.5 * (online_security == "yes")
        - 0.45 * (tech_support == "yes")
        + 0.3 * (paperless == "yes")
    )
    if drift > 0:
        # Under drift the world changes, not only its mix: a competitor's offer wins over
        # long-standing customers on fixed-term contracts who stream (the old model rates them the
        # safest), and calls to support stop predicting churn. A model trained on the drifted,
        # labelled customers learns this; the old one cannot (the lifecycle demo measures it).
        # It grows with the square of the drift: mild drift moves the mix more than the world.
        streams = streaming_tv == "yes"
        logit = logit + 1.25 * drift**2 * (
            1.4
            + 6.0 * two_year * streams
            + 4.5 * (contract == "one_year") * streams
            + 0.06 * tenure * streams
            - 0.8 * support_calls
        )
    churn = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    text = {
        "contract_type": contract,
        "internet_service": internet,
        "phone_service": phone,
        "online_security": online_security,
        "tech_support": tech_support,
        "streaming_tv": streaming_tv,
        "paperless_billing": paperless,
        "payment_method": payment,
        "partner": np.where(partner_yes, "yes", "no").astype(object),
        "dependents": np.where(dependents_yes, "yes", "no").astype(object),
    }
    numbers = {
        "tenure_months": tenure,
        "monthly_charges": monthly,
        "total_charges": total,
        "senior_citizen": senior,
        "support_calls_90d": support_calls,
        "avg_monthly_gb": gb,
        LABEL_COLUMN: churn,
    }
    columns = {name: _categorical(values, name) for name, values in text.items()} | numbers
    columns[ID_COLUMN] = _customer_ids(seed, start, rows)
    return pd.DataFrame(
        {name: columns[name] for name in COLUMNS}, index=pd.RangeIndex(start, start + rows)
    )

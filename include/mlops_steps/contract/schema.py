"""The churn data contract: one description used by the generator, the validation suite,
training, and (through the logged feature spec) the serving service.

Stdlib only, so the DAG processor and the serving process can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ID_COLUMN = "customer_id"
LABEL_COLUMN = "churn"

Kind = Literal["integer", "float", "category"]


@dataclass(frozen=True)
class Feature:
    """One model input: its kind and the values a valid row may hold."""

    name: str
    kind: Kind
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "category":
            out["categories"] = list(self.categories)
        else:
            out["minimum"] = self.minimum
            out["maximum"] = self.maximum
        if self.description:
            out["description"] = self.description
        return out


_YES_NO = ("yes", "no")
_YES_NO_NOINTERNET = ("yes", "no", "no_internet")

FEATURES: tuple[Feature, ...] = (
    Feature("tenure_months", "integer", 0, 72, description="months as a customer"),
    Feature("contract_type", "category", categories=("month_to_month", "one_year", "two_year")),
    Feature("monthly_charges", "float", 15.0, 130.0, description="current monthly bill"),
    Feature("total_charges", "float", 0.0, 10_000.0, description="billed over the tenure"),
    Feature("internet_service", "category", categories=("dsl", "fiber_optic", "none")),
    Feature("phone_service", "category", categories=_YES_NO),
    Feature("online_security", "category", categories=_YES_NO_NOINTERNET),
    Feature("tech_support", "category", categories=_YES_NO_NOINTERNET),
    Feature("streaming_tv", "category", categories=_YES_NO_NOINTERNET),
    Feature("paperless_billing", "category", categories=_YES_NO),
    Feature(
        "payment_method",
        "category",
        categories=("electronic_check", "mailed_check", "bank_transfer", "credit_card"),
    ),
    Feature("senior_citizen", "integer", 0, 1),
    Feature("partner", "category", categories=_YES_NO),
    Feature("dependents", "category", categories=_YES_NO),
    Feature("support_calls_90d", "integer", 0, 30, description="support calls, last 90 days"),
    Feature("avg_monthly_gb", "float", 0.0, 2_000.0, description="mean data use per month"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "category")
NUMERIC_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind != "category")
ALL_COLUMNS: tuple[str, ...] = (ID_COLUMN, *FEATURE_NAMES, LABEL_COLUMN)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

# Slices reported per metric during training (cheap, and where churn models usually differ).
SLICE_COLUMNS: tuple[str, ...] = ("contract_type", "internet_service")


def training_ranges(frame: Any) -> dict[str, tuple[float, float]]:
    """The observed (min, max) of each numeric feature in a training frame (a pandas frame;
    not imported here, this module stays stdlib only)."""
    return {name: (float(frame[name].min()), float(frame[name].max())) for name in NUMERIC_FEATURES}


def feature_spec(observed: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """The JSON feature spec logged with every model (serving validates requests with it).

    ``observed``: the (min, max) of each numeric feature in the training data (from
    :func:`training_ranges`), written as ``"training_range": {"min": .., "max": ..}``.
    Serving answers 422 beyond a feature's ``minimum``/``maximum`` (impossible values) and
    serves but flags values outside its training range (possible, but the model never saw them).
    """
    features = [f.to_dict() for f in FEATURES]
    for feature in features:
        seen = (observed or {}).get(feature["name"])
        if seen is not None and feature["kind"] != "category":
            feature["training_range"] = {"min": float(seen[0]), "max": float(seen[1])}
    return {
        "version": 1,
        "id_column": ID_COLUMN,
        "label_column": LABEL_COLUMN,
        "features": features,
    }

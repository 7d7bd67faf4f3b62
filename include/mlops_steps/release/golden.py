"""Which labelled rows the canary analysis replays: a golden set independent of the candidate.

The candidate's own partition cannot judge it: its labels are the ones it learned (a model trained
on flipped labels scored 0.81 "accuracy" on its own hold-out while the stable model scored 0.17,
and only the score PSI caught it). The rows come from, in order:

1. ``reference_set`` (``KEY@DATA_SHA256``): a labelled partition the deployment pins by the hash
   of its data, so every candidate is judged on the same rows;
2. the champion's hold-out: the partition its ``mlops.partition`` tag names, checked against its
   ``mlops.data_sha256`` tag, split as every model splits a partition (by a hash of the row id:
   the contract's id column, else the id derived from the row's content; so these rows are in
   no model's training rows);
3. with no champion (a first release) the candidate's own hold-out, only when the policy says so
   (``first_release=candidate_holdout``): its accuracy then shows that the service reproduces the
   offline score, not that the labels are right. Otherwise the analysis refuses.

A golden partition that is the candidate's own partition is refused. Each way fails closed with a
message naming what is missing and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.core.settings import Settings

# row id (the routing key), features, label (binary 0/1, multiclass class name, regression value)
Row = tuple[str, dict[str, Any], Any]

REFERENCE_SET, CHAMPION_HOLDOUT, CANDIDATE_HOLDOUT = (
    "reference_set",
    "champion_holdout",
    "candidate_holdout",
)
_FIX_REFERENCE = (
    "set MLOPS_ANALYSIS_REFERENCE_SET (--reference-set) to KEY@DATA_SHA256 of a labelled "
    "partition no candidate is trained on"
)


class GoldenSetError(StepError):
    """No independent labelled rows to judge the canary with."""


@dataclass(frozen=True)
class ChampionRef:
    """The version the candidate would replace, and its registry tags."""

    version: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class GoldenSet:
    source: str  # REFERENCE_SET, CHAMPION_HOLDOUT or CANDIDATE_HOLDOUT
    partition: str
    data_sha256: str
    rows: list[Row]

    def describe(self) -> dict[str, Any]:
        """What analysis.json records about the replayed rows."""
        return {
            "source": self.source,
            "partition": self.partition,
            "data_sha256": self.data_sha256,
            "rows": len(self.rows),
        }


def current_champion(settings: Settings) -> ChampionRef | None:
    """The registry's ``champion`` now (None before the first release)."""
    from mlops_steps.common.tracking import CHAMPION, connect, version_by_alias

    version = version_by_alias(connect(), settings.model_name, CHAMPION)
    if version is None:
        return None
    return ChampionRef(str(version.version), dict(version.tags or {}))


def golden_set(
    settings: Settings,
    policy: AnalysisPolicy,
    *,
    candidate_partition: str,
    champion: ChampionRef | None,
    contract: ModelContract | None = None,
) -> GoldenSet:
    """The labelled rows to replay (see the module docstring for the order); ``contract``
    (default: the settings' model's) names the features, the label and the row id."""
    if contract is None:
        from mlops_steps.contract.loader import load_contract

        contract = load_contract(settings.model_name)
    if policy.reference_set:
        key, _, sha = policy.reference_set.partition("@")
        if not key or len(sha) != 64:
            raise GoldenSetError(
                f"{policy.reference_set!r} is not KEY@DATA_SHA256",
                subject="the reference set",
                fix="pin it as the partition key, '@', and its manifest's data_sha256",
            )
        return _holdout(
            settings,
            REFERENCE_SET,
            key=key,
            sha=sha,
            candidate=candidate_partition,
            contract=contract,
        )
    if champion is not None:
        key = champion.tags.get("mlops.partition", "")
        sha = champion.tags.get("mlops.data_sha256", "")
        if not key or not sha:
            raise GoldenSetError(
                "lacks the mlops.partition / mlops.data_sha256 tags naming its data",
                subject=f"champion v{champion.version}",
                fix=f"register versions with the 'register' step, or {_FIX_REFERENCE}",
            )
        return _holdout(
            settings,
            CHAMPION_HOLDOUT,
            key=key,
            sha=sha,
            candidate=candidate_partition,
            contract=contract,
        )
    if policy.first_release == CANDIDATE_HOLDOUT:
        partition = _partition(settings, candidate_partition)
        return _load(partition, CANDIDATE_HOLDOUT, expected_sha=None, contract=contract)
    raise GoldenSetError(
        "cannot be judged on independent labels: there is no champion and no reference set, "
        "and the candidate's own rows carry the labels it learned",
        subject="the canary's accuracy check",
        fix=f"{_FIX_REFERENCE}; or, for a first release only, accept its own hold-out with "
        "MLOPS_ANALYSIS_FIRST_RELEASE=candidate_holdout (--first-release candidate_holdout)",
    )


def _holdout(
    settings: Settings,
    source: str,
    *,
    key: str,
    sha: str,
    candidate: str,
    contract: ModelContract,
) -> GoldenSet:
    if key == candidate:
        raise GoldenSetError(
            f"is the candidate's own partition {key}: its labels cannot judge it",
            subject=f"the golden set ({source})",
            fix=_FIX_REFERENCE,
        )
    return _load(_partition(settings, key), source, expected_sha=sha, contract=contract)


def _partition(settings: Settings, key: str) -> Any:
    from mlops_steps.common.storage import Partition

    partition = Partition.of(settings.dataset_root, key)
    if not partition.manifest.is_file():
        raise GoldenSetError(
            f"partition {key} is not at {partition.root}",
            subject="the golden set",
            fix="restore the partition (or point MLOPS_DATA_ROOT at the shared data volume)",
        )
    return partition


def golden_labels(contract: ModelContract, values: list[Any], where: str) -> list[Any]:
    """Labels as the replay compares them with the service's answers: binary 1 for the
    positive class else 0; multiclass the class as the service names it; regression the
    number. A value outside the contract's classes is refused (it would count as wrong)."""
    from mlops_steps.common.metrics import label_key

    if contract.task == "regression":
        return [float(v) for v in values]
    texts = [label_key(v) for v in values]
    unknown = sorted(set(texts) - set(contract.class_labels))
    if unknown:
        raise GoldenSetError(
            f"{where} holds labels {unknown[:5]} that are not classes of model "
            f"{contract.name} ({', '.join(contract.class_labels)})",
            subject="the golden set",
            fix="pin a partition labelled like the model's contract, or correct its classes",
        )
    if contract.task == "multiclass":
        return texts
    positive = label_key(contract.positive_class)
    return [int(t == positive) for t in texts]


def _row_ids(frame: Any, contract: ModelContract) -> tuple[Any, str]:
    """The frame with its row id column: the contract's id, else the id derived from each row's
    content (training derives the same one, so the hold-out is the same rows)."""
    from mlops_steps.common.metrics import id_column_of, with_row_ids

    column = id_column_of(contract)
    return (frame if column in frame.columns else with_row_ids(frame, contract)), column


def _load(
    partition: Any, source: str, *, expected_sha: str | None, contract: ModelContract
) -> GoldenSet:
    """The partition's hold-out rows, after its checksums (file and, if pinned, data)."""
    from mlops_steps.common.metrics import split_frame
    from mlops_steps.common.storage import load_partition_frame

    frame, manifest = load_partition_frame(partition)
    actual = str(manifest.get("data_sha256", ""))
    if expected_sha is not None and actual != expected_sha:
        raise GoldenSetError(
            f"partition {partition.key} holds data {actual}, not the pinned {expected_sha}",
            subject=f"the golden set ({source})",
            fix="restore the pinned data, or pin the set anew after checking it",
        )
    missing = [c for c in (*contract.feature_names, contract.label) if c not in frame.columns]
    if missing:
        raise GoldenSetError(
            f"partition {partition.key} lacks columns {missing} of model {contract.name}'s "
            "contract",
            subject=f"the golden set ({source})",
            fix="pin a partition ingested for this model (MLOPS_MODEL_NAME / --model)",
        )
    frame, id_column = _row_ids(frame, contract)
    holdout = split_frame(frame, id_column).holdout
    holdout = holdout[holdout[contract.label].notna()]
    if holdout.empty:
        raise GoldenSetError(
            f"partition {partition.key} has no labelled hold-out rows",
            subject=f"the golden set ({source})",
            fix=_FIX_REFERENCE,
        )
    records = json.loads(holdout.loc[:, list(contract.feature_names)].to_json(orient="records"))
    rows = list(
        zip(
            holdout[id_column].astype(str).tolist(),
            records,
            golden_labels(contract, holdout[contract.label].tolist(), f"partition {partition.key}"),
            strict=True,
        )
    )
    return GoldenSet(source, partition.key, actual, rows)

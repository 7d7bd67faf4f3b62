"""CandidateApprovalOperator: a candidate the gate sent for review is never auto-approved, and its
approval page opens with the reason (red: the UI renders Markdown and skips raw HTML)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from mlops_provider.operators.approval import CandidateApprovalOperator, with_review_banner

REASON = "champion v1 collapsed on the new hold-out: AUC 0.87 at training -> 0.13 now"
BODY = "**churn v3** replaces champion v1.\n\nGate: all checks passed\n"


class _TaskInstance:
    def __init__(self) -> None:
        self.pushed: list[tuple[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))


def _context(ti: _TaskInstance, task: Any) -> Any:
    return {"ti": ti, "task": task}


def _operator(require_approval: str, review_reason: str) -> CandidateApprovalOperator:
    return CandidateApprovalOperator(
        task_id="approve",
        subject="Deploy churn v3 to production?",
        body=BODY,
        require_approval=require_approval,
        review_reason=review_reason,
        reject_task_id="reject",
    )


def test_the_banner_opens_the_page_with_the_reason_in_red() -> None:
    subject, body = with_review_banner("Deploy churn v3 to production?", BODY, REASON)
    assert subject == "\u26d4 NEEDS REVIEW: Deploy churn v3 to production?"
    assert body == f"## \u26d4 NEEDS REVIEW\n\n**{REASON}**\n\n---\n\n{BODY}"
    assert "<" not in body.split("---")[0]  # no HTML: the UI would drop it
    assert with_review_banner("s", BODY, "  ") == ("s", BODY)


def test_a_candidate_needing_review_is_never_auto_approved() -> None:
    ti = _TaskInstance()
    operator = _operator("False", REASON)
    with pytest.raises(AirflowFailException) as info:
        operator.execute(_context(ti, operator))
    assert f"Refused to auto-approve: the candidate needs review ({REASON})" in str(info.value)
    assert "require_approval=true" in str(info.value)
    assert ti.pushed == []  # no decision: nothing downstream can release or record it


def test_a_person_sees_the_reason_first(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, str] = {}

    def ask(self: ApprovalOperator, context: Any) -> None:
        asked.update(subject=self.subject, body=self.body or "")

    monkeypatch.setattr(ApprovalOperator, "execute", ask)
    _operator("True", REASON).execute(_context(_TaskInstance(), None))
    assert asked["subject"].startswith("\u26d4 NEEDS REVIEW: ")
    assert asked["body"].splitlines()[:3] == ["## \u26d4 NEEDS REVIEW", "", f"**{REASON}**"]
    asked.clear()
    _operator("True", "").execute(_context(_TaskInstance(), None))
    assert asked == {"subject": "Deploy churn v3 to production?", "body": BODY}


def test_a_passed_candidate_is_still_auto_approved_when_approval_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ti = _TaskInstance()
    operator = _operator("False", "")
    skipped: list[Any] = []
    monkeypatch.setattr(operator, "skip", lambda ti, tasks: skipped.extend(tasks))
    monkeypatch.setattr(operator, "get_direct_relatives", lambda upstream: [])
    decision = operator.execute(_context(ti, operator))
    assert decision["approved"] is True and decision["responded_by"].startswith("auto-approved")
    assert ti.pushed == [("decision", decision)]

"""The human approval of a release: Airflow's human-in-the-loop ApprovalOperator, plus a branch.

Approve runs the release path; Reject (or the response timeout, whose default is Reject) runs the
task that records the rejection, so a "no" is written to the ledger like any other decision. A
DAG-run Param can switch the approval off for non-production targets; the decision is then
recorded as automatic, never silently. A candidate whose gate decision is ``needs_review`` is never
approved automatically: with the approval switched off the task fails and nothing is released or
recorded; with it on, the page opens with the reason, marked red.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The XCom key of the decision ({approved, chosen_options, responded_by, responded_at}).
DECISION_KEY = "decision"
AUTO_APPROVER = {"id": "airflow", "name": "auto-approved (require_approval=false)"}
# The UI renders the body as Markdown with raw HTML skipped, so no colour can be set: the red
# no-entry sign is what shows red at the top of the page.
NEEDS_REVIEW_MARK = "\u26d4 NEEDS REVIEW"


def with_review_banner(subject: str, body: str, review_reason: str) -> tuple[str, str]:
    """The page's subject and body, opened by the reason a person must review the candidate."""
    reason = review_reason.strip()
    if not reason:
        return subject, body
    banner = f"## {NEEDS_REVIEW_MARK}\n\n**{reason}**\n\n---\n\n"
    return f"{NEEDS_REVIEW_MARK}: {subject}", banner + body


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


class CandidateApprovalOperator(ApprovalOperator):
    """Approve or reject a candidate; exactly one of its downstream paths runs.

    :param reject_task_id: the downstream task that records a rejection; every other direct
        downstream task is the release path.
    :param require_approval: templated; falsy values approve without asking a person, unless
        ``review_reason`` is set.
    :param review_reason: templated; why the candidate needs a person (the gate's
        ``needs_review``). Set, it is never auto-approved and the page opens with it.
    """

    template_fields: Sequence[str] = (
        *ApprovalOperator.template_fields,
        "require_approval",
        "review_reason",
    )

    def __init__(
        self,
        *,
        reject_task_id: str,
        require_approval: bool | str = True,
        review_reason: str = "",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)  # silence means no
        super().__init__(**kwargs)
        self.reject_task_id = reject_task_id
        self.require_approval = require_approval
        self.review_reason = review_reason

    def execute(self, context: Context) -> Any:
        reason = (self.review_reason or "").strip()
        self.subject, self.body = with_review_banner(self.subject, self.body or "", reason)
        if _truthy(self.require_approval):
            return super().execute(context)
        if reason:
            # Fails before any decision is pushed: nothing downstream can release or record it.
            raise AirflowFailException(
                f"Refused to auto-approve: the candidate needs review ({reason}). Fix: re-run "
                "with require_approval=true so a person decides, or retrain on data the "
                "champion agrees with."
            )
        self.log.warning("Approval switched off for this run (require_approval=false).")
        return self._branch(context, approved=True, response={"responded_by_user": AUTO_APPROVER})

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        # HITLOperator validates the response; ApprovalOperator's own skipping is replaced by the
        # two-way branch below.
        response = HITLOperator.execute_complete(self, context=context, event=event)
        approved = response["chosen_options"] == [self.APPROVE]
        self.hitl_summary_extra["approved"] = approved
        user = (response.get("responded_by_user") or {}).get("name", "unknown")
        self.log.info("%s by %s.", "Approved" if approved else "Rejected", user)
        return self._branch(context, approved=approved, response=dict(response))

    def _branch(self, context: Context, *, approved: bool, response: dict[str, Any]) -> Any:
        responded_at = response.get("responded_at")
        decision = {
            "approved": approved,
            "chosen_options": [self.APPROVE if approved else self.REJECT],
            "responded_by": (response.get("responded_by_user") or {}).get("name", "unknown"),
            "responded_at": responded_at.isoformat() if responded_at else None,
        }
        # Pushed before skipping: in the Task SDK, skip() ends the task by raising, so neither
        # code after it nor a return value would reach XCom.
        context["ti"].xcom_push(key=DECISION_KEY, value=decision)
        skipped = [
            task
            for task in context["task"].get_direct_relatives(upstream=False)
            if (task.task_id == self.reject_task_id) == approved
        ]
        if skipped:
            self.skip(ti=context["ti"], tasks=skipped)
        return decision

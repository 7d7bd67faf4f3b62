"""The human approval of a release: Airflow's human-in-the-loop ApprovalOperator, plus a branch.

Approve runs the release path; Reject (or the response timeout, whose default is Reject) runs the
task that records the rejection, so a "no" is written to the ledger like any other decision. A
DAG-run Param can switch the approval off for non-production targets; the decision is then
recorded as automatic, never silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The XCom key of the decision ({approved, chosen_options, responded_by, responded_at}).
DECISION_KEY = "decision"
AUTO_APPROVER = {"id": "airflow", "name": "auto-approved (require_approval=false)"}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


class CandidateApprovalOperator(ApprovalOperator):
    """Approve or reject a candidate; exactly one of its downstream paths runs.

    :param reject_task_id: the downstream task that records a rejection; every other direct
        downstream task is the release path.
    :param require_approval: templated; falsy values approve without asking a person.
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "require_approval")

    def __init__(
        self, *, reject_task_id: str, require_approval: bool | str = True, **kwargs: Any
    ) -> None:
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)  # silence means no
        super().__init__(**kwargs)
        self.reject_task_id = reject_task_id
        self.require_approval = require_approval

    def execute(self, context: Context) -> Any:
        if _truthy(self.require_approval):
            return super().execute(context)
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

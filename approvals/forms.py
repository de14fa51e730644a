"""The reviewer page's decision form: approve (with edited arguments), reject, respond or terminate."""

from __future__ import annotations

from typing import Any

from django import forms

from anvia_project.untrusted_json import UntrustedJSONError, json_loads_bounded
from approvals.models import Approval
from approvals.services import approval_decide, canonical_json

CHOOSE = "Choose Approve, Reject, Respond or Stop the run."


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(
        choices=Approval.Action.choices, error_messages={"required": CHOOSE, "invalid_choice": CHOOSE}
    )
    reason = forms.CharField(required=False, max_length=2000)
    response = forms.CharField(required=False, max_length=10000)
    edited_args = forms.CharField(required=False, strip=False)

    def __init__(self, *args: Any, approval: Approval, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.approval = approval

    @property
    def action(self) -> str:
        return self.cleaned_data["decision"]

    def decide(self, reviewer) -> Approval:
        """Record the valid form's decision as ``reviewer`` (``approval_decide``'s errors pass through)."""
        return approval_decide(
            approval_id=self.approval.pk,
            reviewer=reviewer,
            action=self.action,
            reason=self.cleaned_data["reason"],
            response=self.cleaned_data["response"],
            edited_args=self.cleaned_data["args"],
        )

    def clean(self) -> dict[str, Any]:
        """``args``: the edited arguments when approving with a change, else ``None`` (a rejected
        call never runs, whatever its args; an unchanged box is no edit)."""
        data = super().clean()
        data["args"] = None
        raw = data.get("edited_args") or ""
        if data.get("decision") != "approve" or not raw.strip():
            return data
        try:
            parsed = json_loads_bounded(raw)
        except UntrustedJSONError as error:
            self.add_error("edited_args", str(error))
            return data
        if canonical_json(parsed) != canonical_json(self.approval.args):
            data["args"] = parsed
        return data

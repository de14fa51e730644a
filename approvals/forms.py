"""The reviewer page's decision form: approve (with edited arguments), reject, respond or terminate.

Arguments are edited in typed fields made from the tool's input schema (``arg_schema``); a schema
that cannot be rendered as fields is edited as JSON. Either way the edit is checked against the
schema by ``approval_decide`` alone.
"""

from __future__ import annotations

import math
from typing import Any

from django import forms

from anvia_project.untrusted_json import UntrustedJSONError, json_loads_bounded
from approvals.arg_schema import ArgField, arg_fields, arg_value_text
from approvals.grants import GRANT_MAX_HOURS, GRANT_MAX_USES
from approvals.models import Approval
from approvals.services import approval_decide, canonical_json

CHOOSE = "Choose Approve, Reject, Respond or Stop the run."
ARG_PREFIX = "arg__"
DROP_EDITS = "Rejecting drops your edits ({changes}). Press Reject again to reject anyway, or Approve to keep them."


def arg_input_name(field: ArgField) -> str:
    return ARG_PREFIX + field.name


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(
        choices=Approval.Action.choices, error_messages={"required": CHOOSE, "invalid_choice": CHOOSE}
    )
    reason = forms.CharField(required=False, max_length=2000)
    response = forms.CharField(required=False, max_length=10000)
    edited_args = forms.CharField(required=False, strip=False)
    drop_edits = forms.BooleanField(required=False)

    def __init__(self, *args: Any, approval: Approval, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.approval = approval
        self.arg_fields = arg_fields(approval.input_schema) or []

    @property
    def action(self) -> str:
        return self.cleaned_data["decision"]

    def decide(self, reviewer, *, grant: dict[str, Any] | None = None) -> Approval:
        """Record the valid form's decision as ``reviewer`` (``approval_decide``'s errors pass through)."""
        return approval_decide(
            approval_id=self.approval.pk,
            reviewer=reviewer,
            action=self.action,
            reason=self.cleaned_data["reason"],
            response=self.cleaned_data["response"],
            edited_args=self.cleaned_data["args"],
            grant=grant,
        )

    def clean(self) -> dict[str, Any]:
        """``args``: the edited arguments when approving with a change, else ``None`` (a rejected
        call never runs, whatever its args; an unchanged edit is no edit). Rejecting over typed
        edits needs ``drop_edits``, so edits are never dropped silently."""
        data = super().clean()
        data["args"] = None
        decision = data.get("decision")
        raw = data.get("edited_args") or ""
        if raw.strip():
            if decision != "approve":
                return data
            try:
                parsed = json_loads_bounded(raw)
            except UntrustedJSONError as error:
                self.add_error("edited_args", str(error))
                return data
        elif self.arg_fields and any(arg_input_name(f) in self.data for f in self.arg_fields):
            parsed = self._typed_args(report=decision == "approve")
            if decision == "reject" and parsed is not None and not data.get("drop_edits"):
                changes = self.changes(parsed)
                if changes:
                    self.add_error(None, DROP_EDITS.format(changes=changes))
            if decision != "approve" or parsed is None:
                return data
        else:
            return data
        if canonical_json(parsed) != canonical_json(self.approval.args):
            data["args"] = parsed
        return data

    def changes(self, edited: dict[str, Any]) -> str:
        """The edited values in words: "amount 118 → 105"."""
        original = self.approval.args if isinstance(self.approval.args, dict) else {}
        return ", ".join(
            f"{name} {arg_value_text(original.get(name))} → {arg_value_text(value)}"
            for name, value in edited.items()
            if canonical_json(value) != canonical_json(original.get(name))
        )

    def _typed_args(self, *, report: bool) -> dict[str, Any] | None:
        """The typed fields as arguments, over the original ones (so arguments the schema does
        not list are kept); ``None`` if a field cannot be read (reported when ``report``)."""
        args = dict(self.approval.args) if isinstance(self.approval.args, dict) else {}
        ok = True
        for field in self.arg_fields:
            raw = str(self.data.get(arg_input_name(field), "")).strip()
            try:
                value = _typed_value(field, raw)
            except ValueError as error:
                ok = False
                if report:
                    self.add_error(None, str(error))
                    self.arg_errors[field.name] = str(error)
                continue
            if value is None:
                args.pop(field.name, None)
            else:
                args[field.name] = value
        return args if ok else None

    @property
    def arg_errors(self) -> dict[str, str]:
        if not hasattr(self, "_arg_errors"):
            self._arg_errors: dict[str, str] = {}
        return self._arg_errors


def _typed_value(field: ArgField, raw: str) -> Any:
    """The value typed into ``field``; ``None`` for an empty optional field."""
    if raw == "":
        if field.kind == "string" and field.required:
            return ""
        if field.required and field.kind != "boolean":
            raise ValueError(field.limit_message("required"))
        return False if field.kind == "boolean" else None
    if field.kind == "boolean":
        return raw in ("on", "true", "1", "yes")
    if field.kind == "enum":
        for choice in field.choices:
            if str(choice) == raw:
                return choice
        raise ValueError(field.limit_message("enum"))
    if field.kind in ("number", "integer"):
        try:
            number = float(raw.replace(",", "").removeprefix("$"))
        except ValueError:
            raise ValueError(field.limit_message("type")) from None
        if not math.isfinite(number):
            raise ValueError(field.limit_message("type"))
        if field.kind == "integer":
            if not number.is_integer():
                raise ValueError(field.limit_message("type"))
            return int(number)
        return number
    return raw


class GrantForm(forms.Form):
    """The decision page's "Also grant…" terms, posted with Approve when ``grant`` is ticked.
    Only the fields' types are checked here; ``approvals.grants.grant_terms_checked`` has the rules."""

    grant_hours = forms.IntegerField(
        error_messages={"required": "Give the grant's hours.", "invalid": "Hours must be a whole number."}
    )
    grant_uses = forms.IntegerField(
        error_messages={"required": "Give the grant's number of uses.", "invalid": "Uses must be a whole number."}
    )
    grant_max_total = forms.DecimalField(
        required=False, error_messages={"invalid": "The grant's total must be an amount, like 200 or 49.99."}
    )
    grant_match = forms.MultipleChoiceField(required=False)

    def __init__(self, *args: Any, approval: Approval, **kwargs: Any):
        super().__init__(*args, **kwargs)
        scope = approval.grant_scope if isinstance(approval.grant_scope, list) else []
        self.fields["grant_match"].choices = [(name, name) for name in scope]

    def terms(self) -> dict[str, Any]:
        """The valid form's terms, as ``approval_decide(grant=...)`` takes them."""
        data = self.cleaned_data
        return {
            "hours": data["grant_hours"],
            "uses": data["grant_uses"],
            "max_total": data["grant_max_total"],
            "match_args": list(data["grant_match"]),
        }

    def first_error(self) -> str:
        return next(iter(self.errors.values()))[0]


GRANT_DEFAULT_HOURS = 24
GRANT_DEFAULT_USES = 3


def grant_offer(approval: Approval, typed: dict[str, Any]) -> dict[str, Any] | None:
    """The decision page's "Also grant…" section, or ``None`` where no grant may be given (the
    call needs several reviewers, or nobody asked for it)."""
    if not approval.is_pending or approval.quorum > 1 or approval.requested_by_id is None:
        return None
    args = approval.args if isinstance(approval.args, dict) else {}
    scope = approval.grant_scope if isinstance(approval.grant_scope, list) else []
    posted = "grant_hours" in typed
    chosen = typed.get("grant_match", []) if posted else scope
    return {
        "on": typed.get("grant") == "on",
        "hours": typed.get("grant_hours", GRANT_DEFAULT_HOURS),
        "uses": typed.get("grant_uses", GRANT_DEFAULT_USES),
        "max_total": typed.get("grant_max_total", ""),
        "amount_arg": approval.grant_amount_arg,
        "amount_label": approval.grant_amount_arg.replace("_", " "),
        "max_hours": GRANT_MAX_HOURS,
        "max_uses": GRANT_MAX_USES,
        "scope": [
            {
                "name": name,
                "label": name.replace("_", " ").capitalize(),  # as the argument fields label it: "Order id"
                "value": args.get(name, ""),
                "checked": name in chosen,
            }
            for name in scope
            if name in args
        ],
    }

"""The approvals admin: a read-only record of every request, plus approve/reject through the runtime.

Every decision made here goes through ``approval_decide``, never a raw update, so the same rules
apply as everywhere else (reviewers only, no self-approval, exactly one decision wins) and the
waiting run wakes.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import model_ngettext, unquote
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from approvals.errors import AlreadyDecided, ApprovalError, ApprovalExpired
from approvals.forms import DecisionForm
from approvals.grants import GRANT_STATES, grant_revoke, grant_state, grant_total_left, grant_uses_left, grants_list
from approvals.models import Approval, ApprovalEvent, Grant, PolicyCheck
from approvals.reviewers import approvals_routed_to
from approvals.selectors import approval_outcome, preview_shown
from approvals.services import approval_decide_refusal, approvals_decide_each, reviewer_can_decide

REASON_PREVIEW_CHARS = 80
BULK_REASONS = {True: "Approved in bulk from the admin", False: "Rejected in bulk from the admin"}
STATUS_COLOURS = {
    Approval.Status.PENDING: "#8a5a00",  # white on it: 5.9:1 (the old #b26a00 was 4.24:1, under AA)
    Approval.Status.APPROVED: "#2e7d32",
    Approval.Status.REJECTED: "#c62828",
    Approval.Status.EXPIRED: "#616161",
    Approval.Status.CANCELLED: "#616161",
}


TONE_COLOURS = {"ok": "#2e7d32", "bad": "#c62828", "pending": STATUS_COLOURS[Approval.Status.PENDING]}


def pretty_json(value: Any) -> str:
    """JSON a reviewer can read, escaped: it holds whatever the model or the user sent."""
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def can_view_approvals(request: HttpRequest) -> bool:
    # Reviewers are staff with only the decide permission; they must see what they decide.
    return request.user.has_perm("approvals.view_approval") or reviewer_can_decide(request.user)


def quorum_progress_text(approval: Approval) -> str:
    """What a reviewer reads after giving one approval of several."""
    return f"Approved #{approval.pk} ({approval.tool_name}): {approval_outcome(approval)}; it needs another reviewer."


def why_user_cannot_decide(approval: Approval, user) -> str | None:
    """What stops ``user`` from deciding ``approval`` now; shown instead of the buttons."""
    if not approval.is_pending:
        return None
    refusal = approval_decide_refusal(approval=approval, user=user)
    return str(refusal) if refusal else None


class ApprovalEventInline(admin.TabularInline):
    model = ApprovalEvent
    fields = ("created_at", "kind", "actor", "details")
    readonly_fields = fields
    ordering = ("created_at", "id")
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name = "event"
    verbose_name_plural = "Event log"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApprovalEvent]:
        return super().get_queryset(request).select_related("actor")

    @admin.display(description="Details")
    def details(self, event: ApprovalEvent) -> str:
        return pretty_json(event.data) if event.data else self.get_empty_value_display()

    # The log is append-only: the runtime writes it, nobody edits it.
    def has_add_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return can_view_approvals(request)


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ("id", "status_badge", "tool_name", "requester", "age", "reason_preview", "decider")
    list_per_page = 50
    list_display_links = ("id", "tool_name")
    list_filter = ("status", "tool_name", "agent_name")
    search_fields = ("reason", "tool_name", "requested_by__username", "run_id", "call_id")
    list_select_related = ("requested_by", "decided_by")
    ordering = ("-created_at", "-id")
    actions = ("approve_selected", "reject_selected")
    inlines = (ApprovalEventInline,)
    fieldsets = (
        (
            "Request",
            {
                "fields": (
                    "status_badge",
                    "tool_name",
                    "agent_name",
                    "requested_by",
                    "reason",
                    "preview_pretty",
                    "args_pretty",
                    "created_at",
                    "expires_at",
                )
            },
        ),
        (
            "Decision",
            {
                "fields": (
                    "approvals_progress",
                    "decided_by",
                    "decided_at",
                    "decision_reason",
                    "edited_args_pretty",
                    "grant",
                )
            },
        ),
        ("Outcome", {"fields": ("executed_at", "outcome_pretty", "receipt_pretty", "reject_message")}),
        ("Policy", {"fields": ("policy_rule", "facts_pretty", "tool_fingerprint", "policy_fingerprint", "superseded")}),
        (
            "Run",
            {
                "classes": ("collapse",),
                "fields": (
                    "run_id",
                    "call_id",
                    "conversation_id",
                    "required_by_rule",
                    "args_hash",
                    "conversation_excerpt_pretty",
                    "input_schema_pretty",
                ),
            },
        ),
    )
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    # --- permissions: the record is evidence; only the runtime changes it ---------------------

    def has_view_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return can_view_approvals(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Approvals are created by agent runs, never by hand.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        # View-only for everyone, superusers included: Django then renders every field read-only
        # and refuses a POST of the change form with 403, so status and args cannot be forged.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        # Deleting would erase who decided what and leave a waiting run with no row to read.
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        """Used by the actions' ``permissions=["decide"]``: hides them from non-reviewers."""
        return reviewer_can_decide(request.user)

    # --- changelist columns ---------------------------------------------------------------------

    @admin.display(description="Status", ordering="status")
    def status_badge(self, approval: Approval) -> str:
        shown = approval_outcome(approval)
        colour = TONE_COLOURS.get(shown.tone) or STATUS_COLOURS.get(approval.status, "#616161")
        return format_html(
            '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;display:inline-block;'
            'max-width:22em">{}</span>',
            colour,
            shown.text,
        )

    @admin.display(description="Requester", ordering="requested_by__username")
    def requester(self, approval: Approval) -> str | None:
        return approval.requested_by.get_username() if approval.requested_by else None

    @admin.display(description="Age", ordering="created_at")
    def age(self, approval: Approval) -> str:
        return timesince(approval.created_at, depth=1)

    @admin.display(description="Reason")
    def reason_preview(self, approval: Approval) -> str:
        return format_html(
            '<span title="{}" style="display:inline-block;min-width:14em;max-width:32em">{}</span>',
            approval.reason,
            Truncator(approval.reason).chars(REASON_PREVIEW_CHARS),
        )

    @admin.display(description="Decided by", ordering="decided_by__username")
    def decider(self, approval: Approval) -> str | None:
        if approval.quorum > 1 and approval.approvers:
            return self.approvals_progress(approval)
        if approval.grant_id:
            return f"grant #{approval.grant_id}"
        return approval.decided_by.get_username() if approval.decided_by else None

    @admin.display(description="Approvals")
    def approvals_progress(self, approval: Approval) -> str:
        """ "1 of 2 approvals: bob" for a request several reviewers must approve."""
        approvers = approval.approvers
        if approval.quorum <= 1:
            return ", ".join(approvers) or self.get_empty_value_display()
        who = f": {', '.join(approvers)}" if approvers else ""
        return f"{len(approvers)} of {approval.quorum} approvals{who}"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        # A reviewer sees only the requests routed to them (the tool's group / permission).
        return approvals_routed_to(super().get_queryset(request).prefetch_related("votes__reviewer"), request.user)

    # --- change page fields ---------------------------------------------------------------------

    @admin.display(description="What to know")
    def preview_pretty(self, approval: Approval) -> str:
        shown = preview_shown(approval.preview)
        if not shown:
            return self.get_empty_value_display()
        warnings = format_html_join(
            "", '<li style="color:#ba2121;font-weight:600">{}</li>', ((w,) for w in shown.warnings)
        )
        facts = format_html_join("", "<li>{}: {}</li>", shown.facts)
        return format_html('<ul style="margin:0;padding-left:1.2em">{}{}</ul>', warnings, facts)

    @admin.display(description="Arguments")
    def args_pretty(self, approval: Approval) -> str:
        return self._json(approval.args)

    @admin.display(description="Edited arguments")
    def edited_args_pretty(self, approval: Approval) -> str:
        return self._json(approval.edited_args)

    @admin.display(description="Outcome")
    def outcome_pretty(self, approval: Approval) -> str:
        return self._json(approval.outcome)

    @admin.display(description="Receipt")
    def receipt_pretty(self, approval: Approval) -> str:
        return self._json(approval.receipt)

    @admin.display(description="What the policy saw")
    def facts_pretty(self, approval: Approval) -> str:
        return self._json(approval.facts)

    @admin.display(description="Conversation excerpt")
    def conversation_excerpt_pretty(self, approval: Approval) -> str:
        return self._json(approval.conversation_excerpt)

    @admin.display(description="Input schema")
    def input_schema_pretty(self, approval: Approval) -> str:
        return self._json(approval.input_schema)

    def _json(self, value: Any) -> str:
        # Readonly callables show a bare None as "None"; match the admin's dash for empty fields.
        return self.get_empty_value_display() if value is None else pretty_json(value)

    # --- bulk actions ---------------------------------------------------------------------------

    @admin.action(description="Approve selected", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> HttpResponse | None:
        return self._decide_selected(request, queryset, approved=True)

    @admin.action(description="Reject selected", permissions=["decide"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> HttpResponse | None:
        return self._decide_selected(request, queryset, approved=False)

    def _decide_selected(
        self, request: HttpRequest, queryset: QuerySet[Approval], *, approved: bool
    ) -> HttpResponse | None:
        if request.POST.get("confirm") != "yes":
            return self._confirm_decision_page(request, queryset, approved=approved)
        reason = request.POST.get("reason", "").strip() or BULK_REASONS[approved]
        ids = list(queryset.values_list("pk", flat=True))
        decided = 0
        for result in approvals_decide_each(approval_ids=ids, reviewer=request.user, approved=approved, reason=reason):
            if isinstance(result.error, AlreadyDecided | ApprovalExpired):
                # Their messages already name the approval and what became of it.
                self.message_user(request, str(result.error), messages.WARNING)
            elif result.error is not None:
                self.message_user(request, f"Approval #{result.approval_id}: {result.error}", messages.ERROR)
            elif result.decided.is_pending:  # one approval of several
                self.message_user(request, quorum_progress_text(result.decided), messages.SUCCESS)
            else:
                decided += 1
        if decided:
            verb = "Approved" if approved else "Rejected"
            self.message_user(request, f"{verb} {decided} {model_ngettext(self.opts, decided)}.", messages.SUCCESS)
        return None

    def _confirm_decision_page(
        self, request: HttpRequest, queryset: QuerySet[Approval], *, approved: bool
    ) -> TemplateResponse:
        approvals = list(queryset.select_related("requested_by", "decided_by").order_by("pk"))
        verb = "Approve" if approved else "Reject"
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb} {len(approvals)} {model_ngettext(self.opts, len(approvals))}?",
            "opts": self.opts,
            "verb": verb,
            "action": "approve_selected" if approved else "reject_selected",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "rows": [
                {
                    "approval": approval,
                    "args": json.dumps(approval.args, sort_keys=True, ensure_ascii=False),
                    "note": self._bulk_note(approval, request.user),
                }
                for approval in approvals
            ],
            "default_reason": BULK_REASONS[approved],
        }
        return TemplateResponse(request, "admin/approvals/approval/decide_selected_confirmation.html", context)

    @staticmethod
    def _bulk_note(approval: Approval, user) -> str:
        if approval.is_pending:
            return why_user_cannot_decide(approval, user) or ""
        by = f" by {approval.decided_by.get_username()}" if approval.decided_by else ""
        return f"Already {approval.get_status_display().lower()}{by}: it will be left as it is."

    # --- approve/reject buttons on the change page ----------------------------------------------

    def get_urls(self):
        decide = self.admin_site.admin_view(require_POST(self.decide_view))
        return [
            path("<path:object_id>/decide/", decide, name="approvals_approval_decide"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            refusal = why_user_cannot_decide(obj, request.user)
            context["decide_url"] = None
            context["cannot_decide_because"] = refusal
            if obj.is_pending and refusal is None:
                context["decide_url"] = reverse(
                    "admin:approvals_approval_decide", args=[obj.pk], current_app=self.admin_site.name
                )
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        approval = self.get_object(request, unquote(object_id))
        if approval is None or not self.has_view_permission(request, approval):
            raise Http404("No such approval.")
        change_url = reverse("admin:approvals_approval_change", args=[approval.pk], current_app=self.admin_site.name)
        form = DecisionForm(request.POST, approval=approval)
        if not form.is_valid():
            self.message_user(request, next(iter(form.errors.values()))[0], messages.ERROR)
            return HttpResponseRedirect(change_url)
        try:
            decided = form.decide(request.user)
        except ApprovalError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            done = f"Approval #{decided.pk} ({decided.tool_name}) {decided.status}."
            self.message_user(request, quorum_progress_text(decided) if decided.is_pending else done, messages.SUCCESS)
        return HttpResponseRedirect(change_url)


@admin.register(PolicyCheck)
class PolicyCheckAdmin(admin.ModelAdmin):
    """The audit trail of every protected call: why it ran unasked, was refused, or was asked."""

    list_display = ("created_at", "tool_name", "outcome", "rule", "requested_by", "reason")
    list_filter = ("outcome", "tool_name", "rule")
    search_fields = ("tool_name", "rule", "reason", "run_id", "call_id", "requested_by__username")
    list_select_related = ("requested_by",)
    ordering = ("-created_at", "-id")
    readonly_fields = (
        "created_at",
        "tool_name",
        "outcome",
        "rule",
        "reason",
        "quorum",
        "facts",
        "args",
        "args_hash",
        "requested_by",
        "agent_name",
        "conversation_id",
        "run_id",
        "call_id",
        "tool_fingerprint",
        "policy_fingerprint",
    )
    fields = readonly_fields

    def has_view_permission(self, request: HttpRequest, obj: PolicyCheck | None = None) -> bool:
        return can_view_approvals(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PolicyCheck | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: PolicyCheck | None = None) -> bool:
        return False


class GrantStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(state, state.replace("_", " ").capitalize()) for state in GRANT_STATES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Grant]) -> QuerySet[Grant]:
        if self.value() not in GRANT_STATES:
            return queryset
        return queryset.filter(pk__in=grants_list(state=self.value()).values("pk"))


@admin.register(Grant)
class GrantAdmin(admin.ModelAdmin):
    """Standing grants: read-only records (they are given with a decision), revocable in bulk."""

    list_display = (
        "id",
        "tool_name",
        "customer",
        "limited_to",
        "uses",
        "total",
        "expires_at",
        "state",
        "granted_by",
        "from_approval",
    )
    list_display_links = ("id", "tool_name")
    list_filter = (GrantStateFilter, "tool_name")
    search_fields = ("tool_name", "customer__username", "granted_by__username", "match_args")
    list_select_related = ("customer", "granted_by", "revoked_by", "from_approval")
    ordering = ("-created_at", "-id")
    actions = ("revoke_selected",)
    fields = (
        "tool_name",
        "customer",
        "match_args_pretty",
        "amount_arg",
        "max_total",
        "used_total",
        "max_uses",
        "used_count",
        "tool_fingerprint",
        "granted_by",
        "from_approval",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
    )
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        return request.user.has_perm("approvals.view_grant") or reviewer_can_decide(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # given with an approval, where the call it was judged on is in view

    def has_change_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        return False  # usage is counted by the runtime only; terms never change after the fact

    def has_delete_permission(self, request: HttpRequest, obj: Grant | None = None) -> bool:
        return False  # revoke instead: approvals it made keep pointing at it

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return reviewer_can_decide(request.user)

    @admin.display(description="Only for")
    def limited_to(self, grant: Grant) -> str:
        if not grant.match_args:
            return "any call"
        return ", ".join(f"{name} {value}" for name, value in grant.match_args.items())

    @admin.display(description="Uses left")
    def uses(self, grant: Grant) -> str:
        return f"{grant_uses_left(grant)} of {grant.max_uses}"

    @admin.display(description="Total left")
    def total(self, grant: Grant) -> str:
        left = grant_total_left(grant)
        return self.get_empty_value_display() if left is None else f"${left:.2f} of ${grant.max_total:.2f}"

    @admin.display(description="State")
    def state(self, grant: Grant) -> str:
        return grant_state(grant).replace("_", " ")

    @admin.display(description="Only for")
    def match_args_pretty(self, grant: Grant) -> str:
        return pretty_json(grant.match_args)

    @admin.action(description="Revoke selected grants", permissions=["decide"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Grant]) -> None:
        revoked = 0
        for grant_id in queryset.values_list("pk", flat=True):
            _, changed = grant_revoke(grant_id=grant_id, user=request.user)
            revoked += changed
        self.message_user(request, f"Revoked {revoked} {model_ngettext(self.opts, revoked)}.", messages.SUCCESS)

"""The approvals REST API: list, read and decide approvals. Thin: parse, authorize, call, render.

A 400 names each field, as DRF does: ``{"approved": ["Must be true or false."]}``. Edited args
that fail the tool's input schema are named under ``args``, nested ones dotted:
``{"args": {"amount": ["-5 is less than or equal to the minimum of 0"]}}``; a complaint about the
args as a whole is a list: ``{"args": ["Edited arguments are only accepted when approving."]}``.
Every other error body has ``detail``, a sentence for people; errors from the approval runtime
add ``code`` for programs, and ``already_decided`` adds the ``status``, ``decided_by`` and
``decided_at`` that won.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import generics, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from anvia_project.errors import ErrorSerializer
from approvals.errors import DECISION_ERROR_CODES, NotRoutedToReviewer
from approvals.grants import GRANT_MAX_HOURS, GRANT_MAX_TOTAL, GRANT_MAX_USES, approval_grant_text
from approvals.models import Approval, ApprovalEvent
from approvals.reviewers import approval_routed_to, routing_refusal_text
from approvals.selectors import approval_get, approval_list, approval_outcome_text
from approvals.services import approval_decide, reviewer_can_decide

USERNAME_FIELD = get_user_model().USERNAME_FIELD


# ---------------------------------------------------------------------------------------------
# Serializers
# ---------------------------------------------------------------------------------------------


def _username_field(**kwargs: Any) -> serializers.SlugRelatedField:
    return serializers.SlugRelatedField(slug_field=USERNAME_FIELD, read_only=True, allow_null=True, **kwargs)


class ApprovalSerializer(serializers.ModelSerializer):
    args = serializers.DictField(read_only=True, help_text="The model's arguments, validated, as canonical JSON.")
    edited_args = serializers.DictField(
        read_only=True, allow_null=True, help_text="The arguments a reviewer approved instead, if edited."
    )
    outcome = serializers.JSONField(read_only=True, allow_null=True, help_text=Approval.outcome.field.help_text)
    outcome_text = serializers.SerializerMethodField(
        help_text='The status and what came of it in words, e.g. "Approved — failed: only $80.00 left" '
        'or "Approved — refund RF-12".'
    )
    preview = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text=(
            "What the tool's preview showed the reviewer: `warnings` (sentences) and `facts` "
            "([{name, value}], in order)."
        ),
    )
    requested_by = _username_field(help_text="Username of the user whose request made the agent call the tool.")
    decided_by = _username_field(
        help_text="Username of the reviewer who decided; empty while pending or expired, and when a standing "
        "grant approved it (see `grant`)."
    )
    grant = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The standing grant that approved this call without review."
    )
    approved_by_grant = serializers.SerializerMethodField(
        help_text='"approved by grant #G from <reviewer>" when a standing grant approved it, else empty.'
    )
    quorum = serializers.IntegerField(read_only=True, help_text="How many different reviewers must approve it.")
    approvals = serializers.ListField(
        source="approvers",
        child=serializers.CharField(),
        read_only=True,
        help_text="Usernames of the reviewers who approved it so far, in order (the last one decided it).",
    )

    class Meta:
        model = Approval
        fields = [
            "id",
            "status",
            "tool_name",
            "agent_name",
            "reason",
            "preview",
            "args",
            "edited_args",
            "requested_by",
            "conversation_id",
            "run_id",
            "call_id",
            "created_at",
            "expires_at",
            "decided_by",
            "decided_at",
            "quorum",
            "approvals",
            "action",
            "decision_reason",
            "response",
            "outcome",
            "outcome_text",
            "grant",
            "approved_by_grant",
        ]
        read_only_fields = fields

    def get_outcome_text(self, approval: Approval) -> str:
        return approval_outcome_text(approval)

    def get_approved_by_grant(self, approval: Approval) -> str:
        return approval_grant_text(approval)


class ApprovalEventSerializer(serializers.ModelSerializer):
    actor = _username_field(help_text="Username of who caused the event; empty for the system.")
    data = serializers.DictField(read_only=True)

    class Meta:
        model = ApprovalEvent
        fields = ["kind", "actor", "data", "created_at"]
        read_only_fields = fields


class ApprovalDetailSerializer(ApprovalSerializer):
    events = ApprovalEventSerializer(many=True, read_only=True, help_text="What happened to it, oldest first.")
    facts = serializers.DictField(read_only=True, help_text=Approval.facts.field.help_text)
    receipt = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text=(
            "Once the tool ran: `approval_ids`, `approved_by` (every approver), `grant_id` and `grant_from` "
            "(a standing grant), `args_hash` (of the args it ran with), `idempotency_key` (handed to the tool), "
            "`result` (the result's reference, e.g. RF-12)."
        ),
    )

    class Meta(ApprovalSerializer.Meta):
        fields = [*ApprovalSerializer.Meta.fields, "policy_rule", "facts", "superseded", "receipt", "events"]
        read_only_fields = fields


class ApprovalListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Approval.Status.choices, required=False, help_text="Only approvals in this state."
    )


class StrictBooleanField(serializers.BooleanField):
    """JSON ``true`` or ``false`` only: ``"yes"`` or ``1`` as a decision is a client bug, not a vote."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class GrantTermsSerializer(serializers.Serializer):
    hours = serializers.IntegerField(
        min_value=1, max_value=GRANT_MAX_HOURS, help_text="How long the grant covers calls, from now."
    )
    uses = serializers.IntegerField(
        min_value=1, max_value=GRANT_MAX_USES, help_text="How many later calls it may cover at most."
    )
    max_total = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=Decimal("0.01"),
        max_value=GRANT_MAX_TOTAL,
        required=False,
        allow_null=True,
        help_text="The most the covered calls may add up to, in the tool's amount argument. Required when the "
        "tool counts an amount (the approval's `grant_amount_arg`), refused otherwise.",
    )
    match_args = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=20,
        help_text="Arguments (of the tool's grant scope) a covered call must share with the approved call, "
        'e.g. ["order_id"]; empty: any call of the tool for this customer.',
    )


class DecisionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=Approval.Action.choices,
        required=False,
        help_text=(
            "approve (the tool runs, with `args` if given), reject (the model is told `reason`), respond "
            "(the model receives `response` instead of the tool's result) or terminate (the whole run stops; "
            "its other pending approvals are cancelled)."
        ),
    )
    approved = StrictBooleanField(
        required=False, help_text="Short for action: true is approve, false is reject (one of the two is required)."
    )
    reason = serializers.CharField(
        default="", allow_blank=True, max_length=2000, help_text="Why; a rejection's reason is shown to the model."
    )
    response = serializers.CharField(
        default="",
        allow_blank=True,
        max_length=10000,
        help_text="respond: what the model receives in place of the tool's result (required for respond).",
    )
    args = serializers.DictField(
        required=False,
        allow_null=True,
        error_messages={"not_a_dict": 'Must be a JSON object of the tool\'s arguments, not "{input_type}".'},
        help_text=(
            "Edited arguments to run the tool with instead (approving only). They must satisfy the tool's "
            "input schema; the original arguments are kept beside them."
        ),
    )
    grant = GrantTermsSerializer(
        required=False,
        allow_null=True,
        help_text="Approving only: also let the requester's later matching calls of this tool run without "
        "review, within these limits. Refused for a call that needs more than one reviewer.",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if "action" not in data and "approved" not in data:
            raise serializers.ValidationError({"action": ["Give an action (or approved: true/false)."]})
        return data


# Documentation-only shapes of the error bodies.


class DecisionRefusedSerializer(ErrorSerializer):
    code = serializers.ChoiceField(
        choices=DECISION_ERROR_CODES, required=False, help_text="Present on errors from the approval runtime."
    )


class ConflictSerializer(DecisionRefusedSerializer):
    status = serializers.ChoiceField(
        choices=Approval.Status.choices, required=False, help_text="already_decided: the decision that won."
    )
    decided_by = serializers.CharField(
        required=False, allow_null=True, help_text="already_decided: who decided (empty if the system did)."
    )
    decided_at = serializers.DateTimeField(required=False, allow_null=True, help_text="already_decided: when.")


class ListQueryErrorSerializer(serializers.Serializer):
    status = serializers.ListField(child=serializers.CharField())


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        ]
    }
)
class ArgsErrorsField(serializers.JSONField):
    """Messages about ``args`` as a whole (a list), or per argument name (an object)."""


class DecisionErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False, help_text="The body is not valid JSON.")
    non_field_errors = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="The body is not a JSON object."
    )
    action = serializers.ListField(child=serializers.CharField(), required=False)
    approved = serializers.ListField(child=serializers.CharField(), required=False)
    reason = serializers.ListField(child=serializers.CharField(), required=False)
    response = serializers.ListField(child=serializers.CharField(), required=False)
    args = ArgsErrorsField(required=False)
    grant = ArgsErrorsField(required=False, help_text="Messages about the grant as a whole, or per term.")


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


class IsApprovalReviewer(BasePermission):
    message = "Only staff with the 'decide approvals' permission can see or decide approvals."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return reviewer_can_decide(request.user)


class ApprovalPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


class ReviewerAPIView(APIView):
    permission_classes = [IsApprovalReviewer]


FORBIDDEN = OpenApiResponse(
    ErrorSerializer, description="Not signed in, or not staff with the 'decide approvals' permission."
)
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No approval has this id.")


@extend_schema_view(
    get=extend_schema(
        operation_id="approvals_list",
        summary="List approvals",
        description=(
            "Approvals newest first, paginated; `status=pending` gives the ones waiting for a reviewer. Only the "
            "requests routed to you: a tool may name a group or a permission (or, once escalated, a second group)."
        ),
        parameters=[ApprovalListQuerySerializer],
        responses={
            200: ApprovalSerializer(many=True),
            400: OpenApiResponse(ListQueryErrorSerializer, description="`status` is not a valid status."),
            403: FORBIDDEN,
        },
        tags=["approvals"],
    )
)
class ApprovalListView(ReviewerAPIView, generics.ListAPIView):
    serializer_class = ApprovalSerializer
    pagination_class = ApprovalPagination

    def get_queryset(self):
        return approval_list(reviewer=self.request.user)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        query = ApprovalListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = self.paginate_queryset(approval_list(status=query.validated_data.get("status"), reviewer=request.user))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


@extend_schema_view(
    get=extend_schema(
        operation_id="approvals_retrieve",
        summary="Read an approval",
        description="One approval with its event log.",
        responses={
            200: ApprovalDetailSerializer,
            403: OpenApiResponse(
                DecisionRefusedSerializer,
                description="Not a reviewer, or the request is for another group (`not_routed_to_reviewer`).",
            ),
            404: NOT_FOUND,
        },
        tags=["approvals"],
    )
)
class ApprovalDetailView(ReviewerAPIView, generics.RetrieveAPIView):
    serializer_class = ApprovalDetailSerializer

    def get_queryset(self):
        return approval_list()

    def get_object(self) -> Approval:
        approval = approval_get(approval_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, approval)
        if not approval_routed_to(approval, self.request.user):
            raise NotRoutedToReviewer(routing_refusal_text(approval))
        return approval


class ApprovalDecisionView(ReviewerAPIView):
    @extend_schema(
        operation_id="approvals_decide",
        summary="Decide an approval: approve, reject, respond or terminate",
        description=(
            "Exactly one decision wins: a later or concurrent one gets 409 saying who decided and when. "
            "The user who asked for the action cannot decide it. A request with `quorum` > 1 needs that many "
            "different reviewers to approve (each approve is recorded in `approvals`; it stays pending until the "
            "last, and its arguments cannot be edited); one reject, respond or terminate decides it at once."
        ),
        request=DecisionSerializer,
        responses={
            200: OpenApiResponse(
                ApprovalDetailSerializer,
                description="The decided approval (still pending after one approval of a quorum).",
            ),
            400: OpenApiResponse(DecisionErrorSerializer, description="The body is wrong; each field says why."),
            403: OpenApiResponse(
                DecisionRefusedSerializer,
                description=(
                    "Not a reviewer (`not_a_reviewer`), not one the request is for (`not_routed_to_reviewer`), "
                    "or the one who asked for it (`self_approval_refused`)."
                ),
            ),
            404: NOT_FOUND,
            409: OpenApiResponse(
                ConflictSerializer,
                description=(
                    "Decided already (`already_decided`), expired (`approval_expired`), or you already approved "
                    "this request that needs more reviewers (`already_voted`)."
                ),
            ),
            415: OpenApiResponse(ErrorSerializer, description="The body is not JSON."),
        },
        examples=[
            OpenApiExample("Approve", value={"approved": True, "reason": "Customer is eligible."}, request_only=True),
            OpenApiExample(
                "Approve with edited args",
                value={"approved": True, "args": {"order_id": "A-1001", "amount": 100.0}},
                request_only=True,
            ),
            OpenApiExample("Reject", value={"action": "reject", "reason": "Over the limit."}, request_only=True),
            OpenApiExample(
                "Respond instead of the tool",
                value={"action": "respond", "response": "Already refunded by phone: RF-77."},
                request_only=True,
            ),
            OpenApiExample(
                "Approve and grant",
                value={
                    "approved": True,
                    "grant": {"max_total": 200, "hours": 24, "uses": 3, "match_args": ["order_id"]},
                },
                request_only=True,
            ),
            OpenApiExample(
                "Stop the whole run", value={"action": "terminate", "reason": "Looks like fraud."}, request_only=True
            ),
            OpenApiExample(
                "Edited args invalid",
                value={"args": {"amount": ["-5 is less than or equal to the minimum of 0"]}},
                response_only=True,
                status_codes=["400"],
            ),
            OpenApiExample(
                "Already decided",
                value={
                    "detail": "Approval #7 was already approved by bob at 2026-01-05 10:31:02 UTC.",
                    "code": "already_decided",
                    "status": "approved",
                    "decided_by": "bob",
                    "decided_at": "2026-01-05T10:31:02.118000Z",
                },
                response_only=True,
                status_codes=["409"],
            ),
        ],
        tags=["approvals"],
    )
    def post(self, request: Request, pk: int) -> Response:
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        approval_decide(
            approval_id=pk,
            reviewer=request.user,
            approved=body.validated_data.get("approved"),
            action=body.validated_data.get("action"),
            reason=body.validated_data["reason"],
            response=body.validated_data["response"],
            edited_args=body.validated_data.get("args"),
            grant=body.validated_data.get("grant"),
        )
        return Response(ApprovalDetailSerializer(approval_get(approval_id=pk)).data)

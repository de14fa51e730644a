"""The standing grants REST API: ``GET /api/grants/`` (filters), ``GET`` and ``DELETE`` (revoke)
``/api/grants/<id>/``. Reviewers only. Grants are given with a decision
(``POST /api/approvals/<id>/decision/`` with ``grant``), never created here."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from anvia_project.errors import ErrorSerializer
from approvals.api import FORBIDDEN, ApprovalPagination, ReviewerAPIView, _username_field
from approvals.grants import grant_revoke, grant_state, grant_total_left, grant_uses_left, grants_list
from approvals.models import Grant

GRANT_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No grant has this id.")


class GrantSerializer(serializers.ModelSerializer):
    customer = _username_field(help_text="Username of the customer whose calls it covers.")
    granted_by = _username_field(help_text="Username of the reviewer who gave it.")
    revoked_by = _username_field(help_text="Username of the reviewer who revoked it; empty unless revoked.")
    match_args = serializers.DictField(
        read_only=True, help_text="Arguments a covered call must have exactly, e.g. the order number."
    )
    state = serializers.SerializerMethodField(
        help_text="active (covers calls now), expired, revoked or used_up (no use or no amount left)."
    )
    uses_left = serializers.SerializerMethodField()
    total_left = serializers.SerializerMethodField(help_text="Empty when the tool counts no amount.")

    class Meta:
        model = Grant
        fields = [
            "id",
            "state",
            "tool_name",
            "customer",
            "match_args",
            "amount_arg",
            "max_total",
            "used_total",
            "total_left",
            "max_uses",
            "used_count",
            "uses_left",
            "granted_by",
            "from_approval",
            "created_at",
            "expires_at",
            "revoked_at",
            "revoked_by",
        ]
        read_only_fields = fields

    def get_state(self, grant: Grant) -> str:
        return grant_state(grant)

    def get_uses_left(self, grant: Grant) -> int:
        return grant_uses_left(grant)

    @extend_schema_field(serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True))
    def get_total_left(self, grant: Grant) -> str | None:
        left = grant_total_left(grant)
        return None if left is None else f"{left:.2f}"


class GrantListQuerySerializer(serializers.Serializer):
    active = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="true: only grants that cover calls now; false: the rest.",
    )
    tool = serializers.CharField(required=False, default="", max_length=100, help_text="Only grants of this tool.")
    customer = serializers.CharField(
        required=False, default="", max_length=150, help_text="Only grants for this customer (a username)."
    )
    q = serializers.CharField(
        required=False,
        default="",
        max_length=200,
        help_text="Search: a grant id, a tool, the customer's or grantor's username, or a limited argument's value.",
    )


@extend_schema_view(
    get=extend_schema(
        operation_id="grants_list",
        summary="List standing grants",
        description="Grants newest first, paginated.",
        parameters=[GrantListQuerySerializer],
        responses={200: GrantSerializer(many=True), 403: FORBIDDEN},
        tags=["grants"],
    )
)
class GrantListView(ReviewerAPIView, generics.ListAPIView):
    serializer_class = GrantSerializer
    pagination_class = ApprovalPagination

    def get_queryset(self):
        return grants_list()

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        query = GrantListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        active = query.validated_data["active"]
        grants = grants_list(
            state="" if active is None else "active" if active else "inactive",
            tool=query.validated_data["tool"],
            customer=query.validated_data["customer"],
            search=query.validated_data["q"],
        )
        page = self.paginate_queryset(grants)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class GrantDetailView(ReviewerAPIView):
    @extend_schema(
        operation_id="grants_retrieve",
        summary="Read a standing grant",
        responses={200: GrantSerializer, 403: FORBIDDEN, 404: GRANT_NOT_FOUND},
        tags=["grants"],
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(GrantSerializer(grants_list().get(pk=pk)).data)

    @extend_schema(
        operation_id="grants_revoke",
        summary="Revoke a standing grant",
        description="No later call is covered by it. Revoking a revoked grant changes nothing (204 again); "
        "the first revoker is kept.",
        responses={204: OpenApiResponse(description="Revoked."), 403: FORBIDDEN, 404: GRANT_NOT_FOUND},
        tags=["grants"],
    )
    def delete(self, request: Request, pk: int) -> Response:
        grant_revoke(grant_id=pk, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

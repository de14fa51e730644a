"""The domain's errors and how every API answers them: one family, one handler, one shape.

A service raises an ``ApplicationError`` (or a subclass the app defines); views don't catch it.
The API answers ``{"detail": <a sentence>, "code": <for programs>, ...}`` with the error's
``status_code``; an error about one input ``field`` answers ``{<field>: [<sentence>]}`` with 400,
as DRF's own validation does. Pages show ``str(error)``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback


class ApplicationError(Exception):
    """A request the domain refuses, with the HTTP status that says why."""

    status_code = 400
    code = "error"
    # The input the error is about, when it is about one (``content``, ``args``...).
    field: str | None = None

    def body(self) -> dict[str, Any]:
        """What the API answers."""
        if self.field:
            return {self.field: [str(self)]}
        return {"detail": str(self), "code": self.code}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the domain's errors and rows that do not exist (404)."""
    if isinstance(exc, ObjectDoesNotExist):
        pk = (context.get("kwargs") or {}).get("pk")
        what = type(exc).__qualname__.split(".")[0]  # "Approval" of Approval.DoesNotExist
        exc = NotFound(f"{what} #{pk} does not exist." if pk is not None else f"{what} does not exist.")
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(exc.body(), status=exc.status_code)
    return exception_handler(exc, context)


class ErrorSerializer(serializers.Serializer):
    """The error body, for the API's documentation; APIs extend it with what their errors add."""

    detail = serializers.CharField(help_text="What went wrong, in a sentence.")
    code = serializers.CharField(required=False, help_text="For programs: which refusal it is (domain errors).")

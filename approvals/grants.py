"""Standing grants: a reviewer approving a call lets later matching calls of the same customer run
without review, within a total, a time and a number of uses; revocable; never the grantor's own.

Giving: ``grant_terms_checked`` (before the decision) then ``grant_give`` (in the decision's
transaction). Using: ``grant_use`` in ``approval_request``'s transaction, one conditional UPDATE per
try, so runs racing for the last use or the last dollars can never exceed the limits. Reading:
``grants_list``, ``grant_shown``, ``approval_grant_text``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Round
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from approvals.errors import ApprovalError, InvalidDecision, NotAReviewer
from approvals.models import Approval, ApprovalEvent, Grant

if TYPE_CHECKING:
    from approvals.services import ApprovalRequest

logger = logging.getLogger("anvia.approvals")

GRANT_MAX_HOURS = 720  # 30 days: past that, a standing grant is a policy, and belongs in the tool's rules
GRANT_MAX_USES = 100
GRANT_MAX_TOTAL = Decimal("1000000.00")
CENT = Decimal("0.01")


class GrantNotFound(ApprovalError):
    status_code = 404
    code = "grant_not_found"


@dataclass(frozen=True)
class GrantTerms:
    """What a reviewer grants: ``hours`` and ``uses`` always; ``max_total`` when the tool counts an
    amount; ``match_args``: the arguments (of the tool's ``grant_scope``) a covered call must share."""

    hours: int
    uses: int
    max_total: Decimal | None = None
    match_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, value: GrantTerms | dict[str, Any]) -> GrantTerms:
        """``value`` as terms; a dict is read as the API's ``grant`` body. Raises ``InvalidDecision``."""
        if isinstance(value, GrantTerms):
            return value
        if not isinstance(value, dict):
            raise _invalid("grant", "Must be an object with hours, uses and (for amounts) max_total.")
        match_args = value.get("match_args") or ()
        if not isinstance(match_args, list | tuple) or not all(isinstance(name, str) for name in match_args):
            raise _invalid("grant.match_args", "Must be a list of argument names.")
        return cls(
            hours=_whole(value.get("hours"), "grant.hours"),
            uses=_whole(value.get("uses"), "grant.uses"),
            max_total=_money(value.get("max_total"), "grant.max_total"),
            match_args=tuple(dict.fromkeys(match_args)),
        )

    def as_data(self) -> dict[str, Any]:
        return {
            "hours": self.hours,
            "uses": self.uses,
            "max_total": None if self.max_total is None else str(self.max_total),
            "match_args": list(self.match_args),
        }


def _invalid(name: str, message: str) -> InvalidDecision:
    return InvalidDecision(f"The grant is not valid: {message}", {name: message})


def _whole(value: Any, name: str) -> int:
    if value is None:
        raise _invalid(name, "This field is required.")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _invalid(name, "Must be a whole number.")
    try:
        return int(value)
    except ValueError:
        raise _invalid(name, "Must be a whole number.") from None


def _money(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _invalid(name, "Must be an amount, like 200 or 49.99.")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(name, "Must be an amount, like 200 or 49.99.") from None
    if not amount.is_finite():
        raise _invalid(name, "Must be an amount, like 200 or 49.99.")
    return amount


def grant_terms_checked(*, approval: Approval, action: str, grant: GrantTerms | dict[str, Any]) -> GrantTerms:
    """The terms a reviewer may grant on ``approval`` with this decision, or ``InvalidDecision``
    (400) naming the field: ``grant`` as a whole, ``grant.hours``, ``grant.uses``,
    ``grant.max_total`` or ``grant.match_args``."""
    terms = GrantTerms.of(grant)
    if action != Approval.Action.APPROVE:
        raise _invalid("grant", "A grant can only be given together with an approval.")
    if approval.quorum > 1:
        raise _invalid(
            "grant", f"This call needs {approval.quorum} reviewers: a standing grant would bypass that rule."
        )
    if approval.requested_by_id is None:
        raise _invalid("grant", "Nobody asked for this call, so there is nobody to grant later calls to.")
    if not 1 <= terms.hours <= GRANT_MAX_HOURS:
        raise _invalid("grant.hours", f"Must be from 1 to {GRANT_MAX_HOURS} hours.")
    if not 1 <= terms.uses <= GRANT_MAX_USES:
        raise _invalid("grant.uses", f"Must be from 1 to {GRANT_MAX_USES} uses.")
    if approval.grant_amount_arg:
        if terms.max_total is None:
            raise _invalid(
                "grant.max_total",
                "Give the most the grant may cover in total: the "
                f"{approval.grant_amount_arg.replace('_', ' ')} of each call counts against it.",
            )
        if not CENT <= terms.max_total <= GRANT_MAX_TOTAL or terms.max_total != terms.max_total.quantize(CENT):
            raise _invalid("grant.max_total", f"Must be an amount from 0.01 to {GRANT_MAX_TOTAL:,}, in cents at most.")
    elif terms.max_total is not None:
        raise _invalid("grant.max_total", "This tool counts no amount: leave max_total out.")
    scope = list(approval.grant_scope or [])
    outside = [name for name in terms.match_args if name not in scope]
    if outside:
        allowed = ", ".join(scope) if scope else "none"
        refused = ", ".join(outside)
        raise _invalid("grant.match_args", f"{refused} cannot limit a grant of this tool (it may be: {allowed}).")
    return terms


def grant_give(*, approval: Approval, reviewer, terms: GrantTerms, approved_args: dict[str, Any]) -> Grant:
    """Record the grant ``reviewer`` gave on ``approval`` (call inside the decision's transaction,
    with the terms ``grant_terms_checked`` returned). Match values are the approved arguments."""
    args = approved_args if isinstance(approved_args, dict) else {}
    missing = [name for name in terms.match_args if name not in args]
    if missing:
        raise _invalid("grant.match_args", f"The approved call has no {', '.join(missing)} to limit the grant to.")
    grant = Grant.objects.create(
        tool_name=approval.tool_name,
        customer_id=approval.requested_by_id,
        match_args={name: args[name] for name in terms.match_args},
        amount_arg=approval.grant_amount_arg,
        max_total=terms.max_total,
        max_uses=terms.uses,
        tool_fingerprint=approval.tool_fingerprint,
        granted_by=reviewer,
        from_approval=approval,
        expires_at=timezone.now() + timedelta(hours=terms.hours),
    )
    ApprovalEvent.objects.create(
        approval=approval,
        kind=ApprovalEvent.Kind.GRANTED,
        actor=reviewer,
        data={"grant": grant.pk, **terms.as_data(), "match_args": grant.match_args},
    )
    logger.info(
        "grant given id=%s tool=%s customer=%s by=%s from approval=%s",
        grant.pk,
        grant.tool_name,
        approval.requested_by_id,
        reviewer.get_username(),
        approval.pk,
    )
    return grant


def grant_use(*, request: ApprovalRequest, args: dict[str, Any]) -> Grant | None:
    """Consume one use (and the call's amount) of a live grant covering this request, or ``None``.

    Call inside the transaction that creates the approval, so a failed create gives the use back.
    Only single-reviewer calls of a known requester are covered, never by a grant the requester
    gave. Each candidate is taken with one conditional UPDATE (uses and total checked in SQL), so
    of two runs racing for the last use exactly one wins, on PostgreSQL and SQLite alike.
    """
    if request.quorum != 1 or request.requested_by_id is None:
        return None
    now = timezone.now()
    candidates = (
        Grant.objects.filter(
            tool_name=request.tool_name,
            customer_id=request.requested_by_id,
            revoked_at__isnull=True,
            expires_at__gt=now,
            tool_fingerprint=request.tool_fingerprint,
            used_count__lt=F("max_uses"),
        )
        .exclude(granted_by_id=request.requested_by_id)
        .order_by("expires_at", "pk")
    )
    for grant in candidates:
        if not _matches(grant.match_args, args):
            continue
        amount = Decimal(0)
        if grant.amount_arg:
            amount = _amount(args.get(grant.amount_arg))
            if amount is None or grant.max_total is None:
                continue
        taken = Grant.objects.filter(
            pk=grant.pk, revoked_at__isnull=True, expires_at__gt=now, used_count__lt=F("max_uses")
        )
        if grant.amount_arg:
            taken = taken.filter(_room_for(amount))
        won = taken.update(used_count=F("used_count") + 1, used_total=Round(F("used_total") + Value(amount), 2))
        if won:
            grant.refresh_from_db()
            logger.info(
                "grant used id=%s run=%s call=%s tool=%s amount=%s uses=%s/%s",
                grant.pk,
                request.run_id,
                request.call_id,
                request.tool_name,
                amount,
                grant.used_count,
                grant.max_uses,
            )
            return grant
    return None


def _room_for(amount: Decimal) -> GreaterThanOrEqual:
    """``used_total + amount <= max_total``, in SQL, compared in whole cents: SQLite keeps decimals
    as floats, where 0.1 + 0.2 > 0.3."""
    hundred = Value(Decimal(100))
    limit = Round(F("max_total") * hundred)
    used = Round(F("used_total") * hundred) + Value(amount * 100)
    return GreaterThanOrEqual(limit, used)


def _matches(match_args: Any, args: dict[str, Any]) -> bool:
    if not isinstance(match_args, dict):
        return False
    return all(name in args and _same(args[name], value) for name, value in match_args.items())


def _same(left: Any, right: Any) -> bool:
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def _amount(value: Any) -> Decimal | None:
    """A call's amount in cents precision; ``None`` (not covered) if it is not a plain non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    # Past any grant's total, and beyond what quantize() can hold: never covered.
    if not amount.is_finite() or not 0 <= amount <= GRANT_MAX_TOTAL or amount != amount.quantize(CENT):
        return None
    return amount.quantize(CENT)


def grant_decision_fields(grant: Grant) -> dict[str, Any]:
    """What an approval approved by ``grant`` records: approved by the grant, no reviewer (nobody
    looked at this call; the grantor authorized it in advance, which the grant and the reason say)."""
    return {
        "status": Approval.Status.APPROVED,
        "action": Approval.Action.APPROVE,
        "grant": grant,
        "decided_by_id": None,
        "decision_reason": grant_approval_text(grant),
        "decided_at": timezone.now(),
    }


def grant_approval_text(grant: Grant) -> str:
    return f"approved by grant #{grant.pk} from {grant.granted_by.get_username()}"


def approval_grant_text(approval: Approval) -> str:
    """The words "approved by grant #G from rita" for an approval a grant approved, else "": as
    recorded when it was approved (no query; a later rename does not rewrite the record)."""
    return approval.decision_reason if approval.grant_id is not None else ""


@transaction.atomic
def grant_revoke(*, grant_id: int, user) -> tuple[Grant, bool]:
    """Revoke a grant (reviewers only): no later call is covered by it. Idempotent: revoking a
    revoked grant changes nothing and returns ``(grant, False)``; the first revoker is kept.

    Raises ``NotAReviewer`` (403) and ``GrantNotFound`` (404).
    """
    from approvals.services import reviewer_can_decide  # services imports this module

    if not reviewer_can_decide(user):
        raise NotAReviewer(
            "Revoking a grant needs a staff account with the “Can approve or reject tool calls” permission."
        )
    revoked = Grant.objects.filter(pk=grant_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=user
    )
    try:
        grant = Grant.objects.select_related("customer", "granted_by", "revoked_by").get(pk=grant_id)
    except Grant.DoesNotExist:
        raise GrantNotFound(f"Grant #{grant_id} does not exist.") from None
    if revoked:
        logger.info("grant revoked id=%s by=%s", grant_id, user.get_username())
    return grant, bool(revoked)


# ---- reading ---------------------------------------------------------------------------------

GRANT_STATES = ("active", "expired", "revoked", "used_up")


def grant_state(grant: Grant, *, now: datetime | None = None) -> str:
    """``revoked``, ``expired``, ``used_up`` or ``active``: whether it covers calls now."""
    now = now or timezone.now()
    if grant.revoked_at is not None:
        return "revoked"
    if grant.expires_at <= now:
        return "expired"
    if grant.used_count >= grant.max_uses or (grant.max_total is not None and grant.used_total >= grant.max_total):
        return "used_up"
    return "active"


def grant_uses_left(grant: Grant) -> int:
    return max(0, grant.max_uses - grant.used_count)


def grant_total_left(grant: Grant) -> Decimal | None:
    return None if grant.max_total is None else max(Decimal(0), grant.max_total - grant.used_total)


def grants_list(
    *, state: str = "", tool: str = "", customer: str = "", search: str = "", now: datetime | None = None
) -> QuerySet[Grant]:
    """Grants newest first, with their people. ``state``: one of ``GRANT_STATES`` or ``inactive``
    (any but active; else all);
    ``customer``: a username; ``search``: a grant id (``12`` or ``#12``), a tool, a username of
    the customer or the grantor, or an argument value it is limited to."""
    now = now or timezone.now()
    grants = Grant.objects.select_related("customer", "granted_by", "revoked_by", "from_approval").order_by(
        "-created_at", "-pk"
    )
    live = Q(revoked_at__isnull=True, expires_at__gt=now)
    used_up = Q(used_count__gte=F("max_uses")) | Q(max_total__isnull=False, used_total__gte=F("max_total"))
    if state == "active":
        grants = grants.filter(live).exclude(used_up)
    elif state == "inactive":
        grants = grants.exclude(Q(live) & ~used_up)
    elif state == "expired":
        grants = grants.filter(revoked_at__isnull=True, expires_at__lte=now)
    elif state == "revoked":
        grants = grants.filter(revoked_at__isnull=False)
    elif state == "used_up":
        grants = grants.filter(live).filter(used_up)
    if tool:
        grants = grants.filter(tool_name=tool)
    if customer:
        grants = grants.filter(customer__username=customer)
    search = search.strip()
    if search:
        matches = (
            Q(tool_name__icontains=search)
            | Q(customer__username__icontains=search)
            | Q(granted_by__username__icontains=search)
            | Q(match_args__icontains=search)
        )
        number = search.removeprefix("#")
        if number.isdigit():
            matches |= Q(pk=int(number))
        grants = grants.filter(matches)
    return grants

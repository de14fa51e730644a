"""Where Studio keeps approval requests and decisions: the store interface and ``MemoryStore``.

Studio records each protected tool call in a store, shows the store's pending requests in its
approvals panel, decides them there, and blocks the run on ``wait`` until a decision lands. The
default ``MemoryStore`` lives and dies with the Studio process. A project that wants Studio's
approvals in its own records implements ``ApprovalStore`` on them and passes it:
``Studio([agent], store=MyStore()).start()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

from anvia.core.decisions import ACTIONS as ACTIONS  # re-exported: the store interface speaks of them
from anvia.core.decisions import Action, DecisionError
from anvia.core.decisions import decision_action as check_decision

Status = Literal["pending", "approved", "rejected", "expired", "cancelled"]
# What a decision does: run the tool (``approve``), refuse it (``reject``, the model hears the
# reject message and the reason), answer the model in its place (``respond``), or end the whole
# run (``terminate``; the run's other pending requests are cancelled): ``anvia.core.decisions``.
# Only ``approve`` is status "approved"; the other three are "rejected", told apart by ``action``.


@dataclass(frozen=True)
class ActingUser:
    """Someone a developer can chat as. ``id`` goes into the run's context as ``user_id``
    (so tools act for that user) and into each approval request as who asked."""

    id: Hashable
    label: str
    note: str = ""


@dataclass(frozen=True)
class ApprovalRequest:
    """A protected tool call asking for a decision. ``args`` are the validated arguments as JSON."""

    run_id: str
    call_id: str
    tool_name: str
    args: dict[str, Any]
    reason: str
    reject_message: str
    agent_name: str = ""
    requested_by: ActingUser | None = None
    input_schema: dict[str, Any] = field(default_factory=dict)
    # The tool's preview of the call (``ToolCall.preview()``): what the reviewer needs to judge
    # it; its "warnings" (a list of sentences) are shown first.
    preview: dict[str, Any] | None = None


@dataclass(frozen=True)
class ApprovalRecord:
    """A request as the store holds it, with its decision once there is one."""

    id: int
    run_id: str
    call_id: str
    tool_name: str
    args: dict[str, Any]
    reason: str
    reject_message: str
    agent_name: str
    requested_by: str | None
    status: Status
    created_at: float
    decided_by: str | None = None
    decision_reason: str = ""
    decided_at: float | None = None
    edited_args: dict[str, Any] | None = None  # what a reviewer approved instead of ``args``
    preview: dict[str, Any] | None = None
    action: Action | Literal[""] = ""  # empty until decided (and for a cancelled or expired request)
    response: str = ""  # respond: what the model receives instead of the tool's result

    @property
    def pending(self) -> bool:
        return self.status == "pending"


class StoreError(Exception):
    """A request the store refuses; the message says why. ``status`` is the HTTP status Studio
    answers; ``field`` names what was wrong in the request, when one field was."""

    status = 400
    field: str | None = None


class InvalidDecision(StoreError):
    """A decision that says nothing or contradicts itself (``field`` names what to fix)."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class ApprovalNotFound(StoreError):
    status = 404


class DecisionRefused(StoreError):
    status = 403


class AlreadyDecided(StoreError):
    status = 409


def decision_action(*, approved: bool | None = None, action: str | None = None, response: str = "") -> Action:
    """``anvia.core.decisions.decision_action``, refusing as ``InvalidDecision`` (a 400 in Studio)."""
    try:
        return check_decision(approved=approved, action=action, response=response)
    except DecisionError as error:
        raise InvalidDecision(str(error), field=error.field) from None


@runtime_checkable
class ApprovalStore(Protocol):
    """What Studio needs from wherever approvals are kept. Every method may be called from any thread.

    ``reviewer`` names who Studio's decisions are attributed to. ``str(store)`` says where the
    approvals are kept (Studio prints it when it starts).
    """

    reviewer: str

    def request(self, request: ApprovalRequest) -> ApprovalRecord:
        """Record a pending request; asking again for the same run id + call id returns the same record."""

    def get(self, approval_id: int) -> ApprovalRecord:
        """One record this store made; ``ApprovalNotFound`` otherwise."""

    def pending(self) -> list[ApprovalRecord]:
        """The records still waiting for a decision, oldest first."""

    def decide(
        self,
        approval_id: int,
        *,
        action: Action | None = None,
        reason: str = "",
        response: str = "",
        approved: bool | None = None,
    ) -> ApprovalRecord:
        """Decide as ``reviewer``: ``action`` approve, reject, respond (``response`` is what the model
        receives instead of the tool's result) or terminate (the run's other pending requests are
        cancelled); ``approved=True/False`` is short for approve / reject. Exactly one decision wins
        (``AlreadyDecided`` for the others); ``InvalidDecision`` for one that says nothing."""

    def wait(self, approval_id: int, timeout: float) -> ApprovalRecord:
        """Block until the record is no longer pending, or ``timeout`` seconds pass; return it as it is."""

    def cancel(self, approval_id: int, *, reason: str) -> ApprovalRecord:
        """Withdraw a pending request nobody will act on (its run ended); a decided one stays as it is."""

    def record_outcome(self, approval_id: int, outcome: dict[str, Any]) -> None:
        """Note what the run did with the decision: ``{"outcome": "ran" | "skipped" | ..., ...}``."""

    def users(self) -> list[ActingUser]:
        """Who a developer may chat as, the default first; empty when the store knows no users."""

    def thread_done(self) -> None:
        """Studio is done with the calling thread (a run or a request ended): release what it held."""


class MemoryStore:
    """Approvals in this process's memory: the default store. Decisions are attributed to
    ``reviewer``; ``users`` are the identities the page offers to act as (none by default)."""

    def __init__(self, *, reviewer: str = "studio", users: list[ActingUser] | tuple[ActingUser, ...] = ()):
        self.reviewer = reviewer
        self._users = list(users)
        self._records: dict[int, ApprovalRecord] = {}
        self._by_call: dict[tuple[str, str], int] = {}
        self._outcomes: dict[int, dict[str, Any]] = {}
        self._changed = threading.Condition()

    def __str__(self) -> str:
        return "in memory (gone when Studio stops)"

    def request(self, request: ApprovalRequest) -> ApprovalRecord:
        with self._changed:
            known = self._by_call.get((request.run_id, request.call_id))
            if known is not None:
                return self._records[known]
            record = ApprovalRecord(
                id=len(self._records) + 1,
                run_id=request.run_id,
                call_id=request.call_id,
                tool_name=request.tool_name,
                args=request.args,
                reason=request.reason,
                reject_message=request.reject_message,
                agent_name=request.agent_name,
                requested_by=request.requested_by.label if request.requested_by else None,
                status="pending",
                created_at=time.time(),
                preview=request.preview,
            )
            self._records[record.id] = record
            self._by_call[(request.run_id, request.call_id)] = record.id
            return record

    def get(self, approval_id: int) -> ApprovalRecord:
        with self._changed:
            record = self._records.get(approval_id)
        if record is None:
            raise ApprovalNotFound(f"There is no Studio approval #{approval_id}.")
        return record

    def pending(self) -> list[ApprovalRecord]:
        with self._changed:
            return [record for record in self._records.values() if record.pending]

    def decide(
        self,
        approval_id: int,
        *,
        action: Action | None = None,
        reason: str = "",
        response: str = "",
        approved: bool | None = None,
    ) -> ApprovalRecord:
        action = decision_action(approved=approved, action=action, response=response)
        with self._changed:
            record = self._settle(
                approval_id,
                status="approved" if action == "approve" else "rejected",
                reason=reason,
                by=self.reviewer,
                strict=True,
                action=action,
                response=response if action == "respond" else "",
            )
            if action == "terminate":
                stopped = f"{self.reviewer} stopped the whole run (approval #{approval_id})."
                for other in self.pending():
                    if other.run_id == record.run_id:
                        self.cancel(other.id, reason=stopped)
            return record

    def wait(self, approval_id: int, timeout: float) -> ApprovalRecord:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while True:
                record = self.get(approval_id)
                remaining = deadline - time.monotonic()
                if not record.pending or remaining <= 0:
                    return record
                self._changed.wait(remaining)

    def cancel(self, approval_id: int, *, reason: str) -> ApprovalRecord:
        return self._settle(approval_id, status="cancelled", reason=reason, by=None, strict=False)

    def record_outcome(self, approval_id: int, outcome: dict[str, Any]) -> None:
        with self._changed:
            self._outcomes[approval_id] = outcome

    def outcome(self, approval_id: int) -> dict[str, Any] | None:
        """What the run did with the decision, as ``record_outcome`` noted it."""
        with self._changed:
            return self._outcomes.get(approval_id)

    def users(self) -> list[ActingUser]:
        return list(self._users)

    def thread_done(self) -> None:
        """Nothing is held per thread."""

    def _settle(
        self, approval_id: int, *, status: Status, reason: str, by: str | None, strict: bool, **decision: Any
    ) -> ApprovalRecord:
        with self._changed:
            record = self.get(approval_id)
            if not record.pending:
                if strict:
                    by_whom = f" by {record.decided_by}" if record.decided_by else ""
                    raise AlreadyDecided(f"Approval #{approval_id} was already {record.status}{by_whom}.")
                return record
            record = replace(
                record, status=status, decided_by=by, decision_reason=reason, decided_at=time.time(), **decision
            )
            self._records[approval_id] = record
            self._changed.notify_all()
            return record

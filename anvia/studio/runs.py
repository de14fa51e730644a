"""Studio's chats and runs: each message runs its agent in a thread; the timelines stay in memory.

Every protected tool call of a model step is recorded in the approval store at once (all pending
together, each with the tool's preview), then the run's thread waits on the store in short slices
until each is decided (in Studio's page, or wherever the store's records can be decided), so that
Ctrl-C stops a waiting run within one slice. A decision approves, rejects, answers the model in
place of the tool (respond) or ends the whole run (terminate). Runs are Studio's own: they live
as long as the process, and when Studio stops, the requests they leave pending are cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anvia.core.agent import Agent
from anvia.core.errors import AgentRunError
from anvia.core.events import Event
from anvia.core.hooks import Hook, create_hook
from anvia.core.messages import Message
from anvia.core.tools import DEFAULT_REJECT_MESSAGE, ToolCall
from anvia.studio.changes import Changes
from anvia.studio.store import (
    ActingUser,
    Action,
    ApprovalRecord,
    ApprovalRequest,
    ApprovalStore,
    StoreError,
    decision_action,
)

logger = logging.getLogger("anvia.studio")

MAX_MESSAGE_CHARS = 4000
MAX_REASON_CHARS = 2000
MAX_RESPONSE_CHARS = 10000
HISTORY_MESSAGES = 20
RECENT_DECISIONS = 5
# How long a waiting run blocks on the store before it looks again: the most Ctrl-C waits for it.
DECISION_SLICE_SECONDS = 1.0
OPEN = ("running", "waiting_for_approval")
STATUS_AFTER_EVENT = {"approval_requested": "waiting_for_approval", "approval_decided": "running"}
STOPPED_REASON = "Studio stopped before anyone decided."


class StudioError(Exception):
    """A request Studio refuses; the message says why and what to do. ``status`` is its HTTP status."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass
class Run:
    """One message and what the agent did with it."""

    id: str
    message: str
    status: str = "running"
    error: str = ""
    answer: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    approvals: dict[str, int] = field(default_factory=dict)  # call id -> approval id
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None


@dataclass
class Chat:
    """A conversation with one agent, as one user."""

    id: int
    agent: str
    user: ActingUser | None
    title: str
    runs: list[Run] = field(default_factory=list)
    updated_at: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        return self.runs[-1].status if self.runs else "succeeded"


def agents_by_name(agents: Iterable[Agent]) -> dict[str, Agent]:
    """The agents by name; ``TypeError`` for a non-agent, ``ValueError`` for a repeated name or none."""
    named: dict[str, Agent] = {}
    for agent in agents:
        if not isinstance(agent, Agent):
            raise TypeError(f"Studio takes anvia Agent objects, not {agent!r}.")
        if agent.name in named:
            raise ValueError(f"Two agents are named {agent.name!r}; Studio tells them apart by name.")
        named[agent.name] = agent
    if not named:
        raise ValueError("Give Studio at least one agent: Studio([support_agent]).")
    return named


def model_label(agent: Agent) -> str:
    """The agent's model by name, as the page and the banner show it."""
    try:
        return str(getattr(agent.model, "name", "") or type(agent.model).__name__)
    except Exception as error:
        # A model whose settings are broken still lets the page load; the run will say more.
        return f"model unavailable ({error})"


class StudioRuns:
    """Starts, records, decides and stops Studio's runs. Safe to call from any thread."""

    def __init__(
        self,
        agents: Iterable[Agent],
        store: ApprovalStore,
        *,
        changes: Changes | None = None,
        decision_slice: float = DECISION_SLICE_SECONDS,
    ):
        self.agents = agents_by_name(agents)
        self.store = store
        self.changes = changes or Changes()
        self.decision_slice = decision_slice
        self._chats: dict[int, Chat] = {}
        self._chat_of_run: dict[str, Chat] = {}
        self._approval_ids: list[int] = []
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()

    # -- chats -------------------------------------------------------------------------------

    def chat_start(self, *, agent_name: object, user_id: object, message: object) -> Chat:
        """A new chat with ``agent_name``, acting as the store's user ``user_id``, answering ``message``."""
        self._refuse_when_stopping()
        agent = self.agents.get(agent_name) if isinstance(agent_name, str) else None
        if agent is None:
            known = ", ".join(self.agents)
            raise StudioError(f"No agent named {agent_name!r} in this Studio; there are: {known}.", field="agent")
        content = _message_text(message)
        user = self._acting_user(user_id)
        with self._lock:
            chat = Chat(id=len(self._chats) + 1, agent=agent.name, user=user, title=content[:80])
            self._chats[chat.id] = chat
            self._start(chat, content)
        return chat

    def chat_send(self, *, chat_id: int, message: object) -> Chat:
        """Answer ``message`` in an existing chat; refused while its last run is still open."""
        self._refuse_when_stopping()
        content = _message_text(message)
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                raise StudioError(f"There is no Studio chat #{chat_id}.", status=404)
            if chat.status in OPEN:
                raise StudioError(self._busy_message(chat.runs[-1]), status=409)
            self._start(chat, content)
        return chat

    def users(self) -> list[ActingUser]:
        """Who the page offers to act as (the store's users), the default first."""
        return self.store.users()

    def _acting_user(self, user_id: object) -> ActingUser | None:
        users = self.users()
        if not users and user_id in (None, ""):
            return None
        chosen = next((u for u in users if user_id is not None and str(u.id) == str(user_id)), None)
        if chosen is None:
            raise StudioError("Choose a user to act as, from the list the page offers.", field="user_id")
        return chosen

    def _busy_message(self, run: Run) -> str:
        if run.status == "waiting_for_approval":
            pending = [f"#{r.id}" for r in map(self._record, run.approvals.values()) if r and r.pending]
            which = f"approval {', '.join(pending)}" if pending else "an approval"
            return f"This chat is waiting for {which}: decide it in the Approvals panel, or start another chat."
        return "This chat is still answering your last message; wait for it, or start another chat."

    # -- decisions ---------------------------------------------------------------------------

    def decide(
        self,
        *,
        approval_id: int,
        action: Action | None = None,
        reason: str = "",
        response: str = "",
        approved: bool | None = None,
    ) -> ApprovalRecord:
        """Decide a request as the store's reviewer: ``action`` approve, reject, respond (with the
        ``response`` the model receives instead of the tool's result) or terminate (the run stops;
        its other pending requests are cancelled). ``approved=True/False`` is short for approve /
        reject. Its waiting run goes on (or ends)."""
        reason = (reason or "").strip()
        response = (response or "").strip()
        if len(reason) > MAX_REASON_CHARS:
            raise StudioError(f"The reason is longer than {MAX_REASON_CHARS} characters.", field="reason")
        if len(response) > MAX_RESPONSE_CHARS:
            raise StudioError(f"The response is longer than {MAX_RESPONSE_CHARS} characters.", field="response")
        try:
            action = decision_action(approved=approved, action=action, response=response)
            record = self.store.decide(approval_id, action=action, reason=reason, response=response)
        except StoreError as error:
            raise StudioError(str(error), field=error.field, status=error.status) from error
        self._post(self._chat_of_run.get(record.run_id), approvals=True)
        return record

    # -- what the page reads -----------------------------------------------------------------

    def chat_list(self) -> list[dict[str, Any]]:
        """Studio's chats, newest activity first, with their last run's status and pending approvals."""
        with self._lock:
            chats = sorted(self._chats.values(), key=lambda c: (c.updated_at, c.id), reverse=True)
        pending: dict[str, int] = {}
        for record in self.store.pending():
            pending[record.run_id] = pending.get(record.run_id, 0) + 1
        return [
            {**self._chat_head(chat), "pending_approvals": sum(pending.get(run.id, 0) for run in chat.runs)}
            for chat in chats
        ]

    def chat_detail(self, chat_id: int) -> dict[str, Any]:
        """One chat with the timeline of each run: its events, approvals, question and answer."""
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                raise StudioError(f"There is no Studio chat #{chat_id}.", status=404)
            runs = [(run, list(run.events), dict(run.approvals)) for run in chat.runs]
        return {
            **self._chat_head(chat),
            "runs": [
                {
                    "id": run.id,
                    "status": run.status,
                    "error": run.error,
                    "created_at": _iso(run.created_at),
                    "finished_at": _iso(run.finished_at),
                    "message": run.message,
                    "answer": run.answer,
                    "events": [self._timeline_event(event, approvals) for event in events],
                }
                for run, events, approvals in runs
            ],
        }

    def approvals_panel(self) -> dict[str, list[dict[str, Any]]]:
        """Pending requests, oldest first, and the latest few this Studio saw decided."""
        with self._lock:
            asked = list(self._approval_ids)
        decided = [r for r in (self._record(i) for i in asked) if r is not None and not r.pending]
        decided.sort(key=lambda r: (r.decided_at or 0, r.id), reverse=True)
        return {
            "pending": [self.approval_summary(r) for r in sorted(self.store.pending(), key=lambda r: r.created_at)],
            "recent": [self.approval_summary(r) for r in decided[:RECENT_DECISIONS]],
        }

    def approval_summary(self, record: ApprovalRecord) -> dict[str, Any]:
        """A request as the panel and the timeline show it: reason, arguments, who decided and why."""
        chat = self._chat_of_run.get(record.run_id)
        return {
            "id": record.id,
            "status": record.status,
            "tool_name": record.tool_name,
            "agent": record.agent_name,
            "chat_id": chat.id if chat else None,
            "requested_by": record.requested_by,
            "reason": record.reason,
            "args": record.args,
            "preview": record.preview,
            "reject_message": record.reject_message,
            "created_at": _iso(record.created_at),
            "decided_by": record.decided_by,
            "decided_at": _iso(record.decided_at),
            "action": record.action,
            "decision_reason": record.decision_reason,
            "response": record.response,
            "edited_args": record.edited_args,
        }

    def _chat_head(self, chat: Chat) -> dict[str, Any]:
        return {
            "id": chat.id,
            "agent": chat.agent,
            "user": chat.user.label if chat.user else None,
            "title": chat.title,
            "status": chat.status,
            "updated_at": _iso(chat.updated_at),
        }

    def _timeline_event(self, event: dict[str, Any], approvals: dict[str, int]) -> dict[str, Any]:
        if event["type"] not in ("approval_requested", "approval_decided"):
            return event
        record = self._record(approvals.get(event["data"].get("call_id"), 0))
        return {**event, "approval": self.approval_summary(record) if record else None}

    def _record(self, approval_id: int) -> ApprovalRecord | None:
        try:
            return self.store.get(approval_id)
        except StoreError:
            return None

    # -- starting and stopping ---------------------------------------------------------------

    def open_runs(self) -> int:
        """How many runs are going right now."""
        with self._lock:
            return len(self._threads)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Start no more runs; runs waiting for a decision stop within one slice and their requests
        are cancelled. ``False`` if a run was still busy (in a model call, say) at ``timeout``."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads.values())
            remaining = deadline - time.monotonic()
            if not threads or remaining <= 0:
                return not threads
            threads[0].join(remaining)

    def _refuse_when_stopping(self) -> None:
        if self._stopping.is_set():
            raise StudioError("Studio is stopping; start it again to chat.", status=503)

    def _start(self, chat: Chat, content: str) -> None:
        agent = self.agents[chat.agent]
        history = [
            message
            for run in chat.runs
            for message in (Message.user(run.message), Message(role="assistant", content=run.answer))
            if message.content
        ][-HISTORY_MESSAGES:]
        context = {"user_id": chat.user.id} if chat.user else {}
        request = agent.prompt(content, history=history, context=context)
        run = Run(id=request.state.run_id, message=content)
        chat.runs.append(run)
        chat.updated_at = run.created_at
        self._chat_of_run[run.id] = chat
        thread = threading.Thread(
            target=self._run_thread, args=(chat, run, request), name=f"studio-run-{run.id[:8]}", daemon=True
        )
        self._threads[run.id] = thread
        thread.start()
        self._post(chat)

    # -- one run, in its own thread ----------------------------------------------------------

    def _run_thread(self, chat: Chat, run: Run, request) -> None:
        try:
            response = (
                request.request_hook(self._approval_hook(chat, run)).on_event(self._recorder(chat, run)).send_sync()
            )
            if response.suspended:
                self._finish(chat, run, "stopped", error=STOPPED_REASON)
            elif response.state.status == "terminated":
                self._finish(chat, run, "stopped", error=response.state.terminated or "A reviewer stopped this run.")
            else:
                self._finish(chat, run, "succeeded", answer=response.text or "")
        except AgentRunError as error:
            self._finish(chat, run, "failed", error=str(error))  # the framework already sent its "error" event
        except Exception as error:
            # Studio's own trouble (a store that failed, a bug): show it in the timeline and keep serving.
            logger.exception("Studio could not run %s", run.id)
            message = f"Studio could not run this: {type(error).__name__}: {error}"
            with self._lock:
                run.events.append(_event_item("error", {"message": message, "kind": "StudioError"}))
            self._finish(chat, run, "failed", error=message)
        finally:
            self._cancel_left_requests(run)
            try:
                self.store.thread_done()
            finally:
                with self._lock:
                    self._threads.pop(run.id, None)
                self._post(chat, approvals=bool(run.approvals))

    def _finish(self, chat: Chat, run: Run, status: str, *, answer: str | None = None, error: str = "") -> None:
        with self._lock:
            run.status = status
            run.answer = answer or None
            run.error = error
            run.finished_at = chat.updated_at = time.time()

    def _cancel_left_requests(self, run: Run) -> None:
        for approval_id in list(run.approvals.values()):
            try:
                self.store.cancel(approval_id, reason=STOPPED_REASON)
            except StoreError:
                logger.warning("Studio could not cancel approval #%s of run %s", approval_id, run.id, exc_info=True)

    def _recorder(self, chat: Chat, run: Run):
        def record(event: Event) -> None:
            if event.type == "text_delta":
                return  # Studio shows the whole answer when it is done; pieces would only churn the page
            with self._lock:
                run.events.append(_event_item(event.type, event.data, event.at))
                run.status = STATUS_AFTER_EVENT.get(event.type, run.status)
                approval_id = run.approvals.get(event.data.get("call_id", ""))
            if event.type == "tool_result" and approval_id is not None:
                outcome = {key: event.data.get(key) for key in ("outcome", "result", "message")}
                self.store.record_outcome(approval_id, outcome)
            self._post(chat, approvals=event.type.startswith("approval"))

        return record

    def _approval_hook(self, chat: Chat, run: Run) -> Hook:
        # Requests the store refused while the step was announced: the call is skipped with why.
        refused: dict[str, str] = {}

        def ask(call: ToolCall) -> ApprovalRecord | None:
            try:
                record = self.store.request(
                    ApprovalRequest(
                        run_id=call.run_id,
                        call_id=call.call_id,
                        tool_name=call.tool_name,
                        args=call.args_json,
                        reason=call.approval_reason or f"Approve {call.tool_name}?",
                        reject_message=_reject_message(call),
                        agent_name=chat.agent,
                        requested_by=chat.user,
                        input_schema=call.definition.input.model_json_schema(),
                        preview=call.preview(),
                    )
                )
            except StoreError as error:
                refused[call.call_id] = str(error)
                return None
            with self._lock:
                if call.call_id not in run.approvals:
                    self._approval_ids.append(record.id)
                run.approvals[call.call_id] = record.id
            return record

        def on_approvals_requested(calls: Sequence[ToolCall]) -> None:
            """The step's protected calls all go into the store now, so they are pending together."""
            asked = [record for record in (ask(call) for call in calls) if record is not None and record.pending]
            if asked:
                # The chat waits from the moment its requests are in the panel, not from the events after.
                with self._lock:
                    run.status = "waiting_for_approval"
            self._post(chat, approvals=True)

        def on_tool_call(call: ToolCall):
            if not call.requires_approval:
                return None
            known = run.approvals.get(call.call_id)
            record = self._record(known) if known is not None else ask(call)
            if record is None:
                return call.tool.skip(refused.get(call.call_id, "Studio could not record this request."))
            while record.pending:
                if self._stopping.is_set():
                    return call.tool.suspend(STOPPED_REASON)
                record = self.store.wait(record.id, self.decision_slice)
            return _verdict(call, record)

        return create_hook(
            on_tool_call=on_tool_call, on_approvals_requested=on_approvals_requested, name="Studio approval hook"
        )

    def _post(self, chat: Chat | None, *, approvals: bool = False) -> None:
        self.changes.post(chat_id=chat.id if chat else None, approvals=approvals)


def _reject_message(call: ToolCall) -> str:
    return call.approval.reject_message if call.approval else DEFAULT_REJECT_MESSAGE


def _verdict(call: ToolCall, record: ApprovalRecord):
    """What the run does with a decided request: run the tool (with a reviewer's edited args),
    answer the model in its place, end the run, or skip it with the reasons."""
    if record.status == "approved":
        if record.edited_args is None:
            return call.tool.run()
        return call.tool.run(record.edited_args, note="A reviewer changed the arguments before approving.")
    if record.action == "respond":
        return call.tool.respond(record.response)
    if record.action == "terminate":
        return call.tool.terminate(record.decision_reason or f"{record.decided_by or 'A reviewer'} stopped this run.")
    return call.tool.skip(_refusal(_reject_message(call), record))


def _refusal(reject_message: str, record: ApprovalRecord) -> str:
    """What the model receives for a call that was not approved."""
    if record.status == "expired":
        return f"{reject_message} (The approval request expired before anyone decided.)"
    if record.status == "cancelled":
        return f"{reject_message} (The approval request was cancelled: {record.decision_reason})"
    return f"{reject_message} Reviewer's reason: {record.decision_reason}" if record.decision_reason else reject_message


def _event_item(type_: str, data: dict[str, Any], at: float | None = None) -> dict[str, Any]:
    return {"type": type_, "data": data, "at": _iso(at or time.time())}


def _message_text(message: object) -> str:
    content = message.strip() if isinstance(message, str) else ""
    if not content:
        raise StudioError("Type a message first.", field="message")
    if len(content) > MAX_MESSAGE_CHARS:
        raise StudioError(f"The message is longer than {MAX_MESSAGE_CHARS} characters.", field="message")
    return content


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None

"""Studio's run manager: each chat message runs its agent in a background thread.

Runs, messages, events and approvals are the app's own rows (``agents.models``,
``approvals.models``) written through the app's approval runtime, so the Django admin shows them
too. Two marks keep the app's Celery machinery away from Studio's runs:

- the framework's run id is ``studio-<AgentRun uuid hex>``, not the ``AgentRun`` uuid, so an
  approval's ``run_id`` never names an app run and the app's resume-on-decision signal
  (``agents.services.run_resume_after_decision``) ignores Studio's decisions;
- ``lease_owner`` is ``studio:<pid>`` and ``lease_expires_at`` stays empty, so the app's orphan
  recovery (active runs whose lease ran out) never picks a Studio run up, even with the app's beat
  running on the same database. Studio never leaves a run ``queued`` either.

A waiting run blocks its thread on the app's approval runtime in short slices, re-reading the
approval row each time, so a decision made elsewhere (the Django admin, the reviewer queue in
another process) reaches it too, and Ctrl-C can suspend it cleanly. The next Studio resumes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Sequence

from django.contrib.auth import get_user_model
from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from agents.models import AgentRun, Conversation, Message, RunEvent
from anvia import Agent, AgentRunError, Event, Hook, RunState, SuspendRun, ToolCall, create_hook
from anvia import Message as ModelMessage
from anvia.studio.changes import Changes
from anvia.studio.users import acting_users, studio_reviewer_ensure
from approvals.errors import ApprovalError
from approvals.hooks import approval_hook, approval_request_for
from approvals.models import Approval
from approvals.services import approval_decide, approval_record_call_outcome, approval_request

logger = logging.getLogger("anvia.studio")

RUN_ID_PREFIX = "studio-"
OWNER_PREFIX = "studio:"
MAX_MESSAGE_CHARS = 4000
MAX_REASON_CHARS = 2000
HISTORY_MESSAGES = 20
# How long a waiting run blocks before it re-reads its approval: the most a decision made in
# another process, or Ctrl-C, waits to be noticed.
DECISION_SLICE_SECONDS = 1.0
OPEN_STATUSES = (AgentRun.Status.RUNNING, AgentRun.Status.WAITING_FOR_APPROVAL, AgentRun.Status.SUSPENDED)
STATUS_AFTER_EVENT = {
    "approval_requested": AgentRun.Status.WAITING_FOR_APPROVAL,
    "approval_decided": AgentRun.Status.RUNNING,
}


class StudioError(Exception):
    """A request Studio refuses; the message says why and what to do. ``status`` is its HTTP status."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field = field
        self.status = status


def studio_run_id(run_pk: uuid.UUID) -> str:
    """The framework run id (and ``Approval.run_id``) of a Studio ``AgentRun``."""
    return f"{RUN_ID_PREFIX}{run_pk.hex}"


def studio_runs_all():
    """Every ``AgentRun`` Studio made, in any process."""
    return AgentRun.objects.filter(lease_owner__startswith=OWNER_PREFIX)


def studio_approvals():
    """Every approval a Studio run asked for."""
    return Approval.objects.filter(run_id__startswith=RUN_ID_PREFIX)


def agents_by_name(agents: Iterable[Agent]) -> dict[str, Agent]:
    """The agents by name; ``ValueError`` for a non-agent, a repeated name, or none at all."""
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


class StudioRuns:
    """Starts, records, decides and stops Studio's runs. Safe to call from any thread."""

    def __init__(
        self,
        agents: Sequence[Agent],
        *,
        changes: Changes | None = None,
        decision_slice: float = DECISION_SLICE_SECONDS,
    ):
        self.agents = agents_by_name(agents)
        self.changes = changes or Changes()
        self.decision_slice = decision_slice
        self.owner = f"{OWNER_PREFIX}{os.getpid()}"
        self._threads: dict[uuid.UUID, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reviewer_id: int | None = None

    # -- the reviewer ----------------------------------------------------------------------

    def reviewer(self):
        """The ``studio`` user, fresh from the database (its permissions are not cached)."""
        if self._reviewer_id is None:
            self._reviewer_id = studio_reviewer_ensure().pk
        return get_user_model().objects.get(pk=self._reviewer_id)

    # -- chats -----------------------------------------------------------------------------

    def chat_start(self, *, agent_name: str, user_id: int, message: str) -> AgentRun:
        """A new chat with ``agent_name``, acting as user ``user_id``, answering ``message``."""
        self._refuse_when_stopping()
        agent = self.agents.get(agent_name)
        if agent is None:
            known = ", ".join(self.agents)
            raise StudioError(f"No agent named {agent_name!r} in this Studio; there are: {known}.", field="agent")
        content = _message_text(message)
        user = acting_users().filter(pk=user_id).first() if isinstance(user_id, int) else None
        if user is None:
            raise StudioError("Choose a user to act as (any active user but the Studio reviewer).", field="user_id")
        with transaction.atomic():
            conversation = Conversation.objects.create(user=user, agent_name=agent.name, title=content[:80])
            run = self._run_create(conversation, content)
        self._start(run)
        return run

    def chat_send(self, *, conversation_id: int, message: str) -> AgentRun:
        """Answer ``message`` in an existing chat; refused while its last run is still open."""
        self._refuse_when_stopping()
        content = _message_text(message)
        conversation = Conversation.objects.filter(pk=conversation_id, runs__lease_owner__startswith=OWNER_PREFIX)
        conversation = conversation.select_related("user").first()
        if conversation is None:
            raise StudioError(f"There is no Studio chat #{conversation_id}.", status=404)
        if conversation.agent_name not in self.agents:
            raise StudioError(
                f"This chat is with {conversation.agent_name!r}, which this Studio was not started with.",
                status=409,
            )
        with self._lock:
            busy = conversation.runs.filter(status__in=OPEN_STATUSES).first()
            if busy is not None:
                raise StudioError(_busy_message(busy), status=409)
            with transaction.atomic():
                run = self._run_create(conversation, content)
        self._start(run)
        return run

    def _run_create(self, conversation: Conversation, content: str) -> AgentRun:
        now = timezone.now()
        run = AgentRun.objects.create(
            conversation=conversation,
            user=conversation.user,
            agent_name=conversation.agent_name,
            status=AgentRun.Status.RUNNING,
            lease_owner=self.owner,
            attempts=1,
            started_at=now,
        )
        Message.objects.create(conversation=conversation, run=run, role=Message.Role.USER, content=content)
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=now)
        return run

    # -- decisions -------------------------------------------------------------------------

    def decide(self, *, approval_id: int, approved: bool, reason: str = "") -> Approval:
        """Decide a Studio approval as the ``studio`` reviewer, through the app's runtime."""
        reason = (reason or "").strip()
        if len(reason) > MAX_REASON_CHARS:
            raise StudioError(f"The reason is longer than {MAX_REASON_CHARS} characters.", field="reason")
        if not studio_approvals().filter(pk=approval_id).exists():
            raise StudioError(f"There is no Studio approval #{approval_id}.", status=404)
        try:
            decided = approval_decide(
                approval_id=approval_id, reviewer=self.reviewer(), approved=approved, reason=reason
            )
        except ApprovalError as error:
            raise StudioError(str(error), status=error.status_code) from error
        self.changes.post(conversation_id=_int_or_none(decided.conversation_id), approval_id=decided.pk)
        return decided

    # -- starting and stopping -------------------------------------------------------------

    def resume_left_runs(self) -> list[AgentRun]:
        """Resume the runs a stopped Studio left open, for the agents this Studio has: suspended
        at Ctrl-C, or cut off when its process died. They continue from their saved state."""
        resumed = []
        candidates = studio_runs_all().filter(agent_name__in=list(self.agents), status__in=OPEN_STATUSES)
        for run in candidates.order_by("created_at"):
            if run.status != AgentRun.Status.SUSPENDED and not _owner_gone(run.lease_owner):
                continue
            claimed = AgentRun.objects.filter(pk=run.pk, status=run.status, lease_owner=run.lease_owner).update(
                status=AgentRun.Status.RUNNING, lease_owner=self.owner, attempts=F("attempts") + 1, suspended_at=None
            )
            if not claimed:
                continue
            RunEvent.objects.create(run=run, type="resumed", data={"message": "Studio started again; resuming."})
            self._start(run)
            resumed.append(run)
        return resumed

    def open_runs(self) -> int:
        """How many runs this Studio is running right now."""
        with self._lock:
            return len(self._threads)

    def wait_idle(self, timeout: float) -> bool:
        """Wait for every run thread to end; ``False`` if some are still going after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads.values())
            if not threads:
                return True
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                with self._lock:
                    return not any(t.is_alive() for t in self._threads.values())

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop starting runs; runs waiting for a decision suspend within one slice, to resume in
        the next Studio. ``False`` if a run was still busy (in a model call, say) at ``timeout``."""
        self._stopping.set()
        return self.wait_idle(timeout)

    def _refuse_when_stopping(self) -> None:
        if self._stopping.is_set():
            raise StudioError("Studio is stopping; start it again to chat.", status=503)

    def _start(self, run: AgentRun) -> None:
        thread = threading.Thread(
            target=self._run_thread, args=(run.pk,), name=f"studio-run-{run.pk.hex[:8]}", daemon=True
        )
        with self._lock:
            self._threads[run.pk] = thread
        thread.start()
        self.changes.post(conversation_id=run.conversation_id, run_id=str(run.pk))

    # -- one run, in its own thread --------------------------------------------------------

    def _run_thread(self, run_pk: uuid.UUID) -> None:
        conversation_id = None
        try:
            run = AgentRun.objects.select_related("conversation", "user").get(pk=run_pk)
            conversation_id = run.conversation_id
            agent = self.agents[run.agent_name]
            recorder = RunRecorder(run, self.changes)
            request = agent.resume(run.state) if run.state else self._first_prompt(agent, run)
            try:
                response = (
                    request.request_hook(self._approval_hook(run))
                    .on_event(recorder.event)
                    .on_checkpoint(recorder.checkpoint)
                    .send_sync()
                )
            except AgentRunError as error:
                # The framework already sent the "error" event the timeline shows.
                _run_finish(run_pk, AgentRun.Status.FAILED, error=str(error))
                return
            if response.suspended:
                _run_finish(run_pk, AgentRun.Status.SUSPENDED)
            else:
                _run_finish(run_pk, AgentRun.Status.SUCCEEDED, text=response.text or "")
        except Exception as error:
            # Studio's own trouble (the database, a bug): show it in the timeline and keep serving.
            logger.exception("Studio could not run %s", run_pk)
            message = f"Studio could not run this: {type(error).__name__}: {error}"
            with contextlib.suppress(Exception):
                RunEvent.objects.create(run_id=run_pk, type="error", data={"message": message, "kind": "StudioError"})
            with contextlib.suppress(Exception):
                _run_finish(run_pk, AgentRun.Status.FAILED, error=message)
        finally:
            with self._lock:
                self._threads.pop(run_pk, None)
            connections.close_all()
            self.changes.post(conversation_id=conversation_id, run_id=str(run_pk))

    def _first_prompt(self, agent: Agent, run: AgentRun):
        messages = list(run.conversation.messages.order_by("created_at", "id"))
        asked = next(m for m in reversed(messages) if m.run_id == run.pk and m.role == Message.Role.USER)
        earlier = [m for m in messages if m.created_at <= asked.created_at and m.pk != asked.pk][-HISTORY_MESSAGES:]
        return agent.prompt(
            asked.content,
            history=[ModelMessage(role=m.role, content=m.content) for m in earlier],
            context={"user_id": run.user_id, "conversation_id": run.conversation_id},
            run_id=studio_run_id(run.pk),
        )

    def _approval_hook(self, run: AgentRun) -> Hook:
        """The app's approval hook, asked again slice after slice until a decision lands."""
        identity = {"user": run.user, "conversation_id": run.conversation_id, "agent_name": run.agent_name}
        app_hook = approval_hook(**identity, block_seconds=self.decision_slice)

        def on_tool_call(call: ToolCall):
            if not call.requires_approval:
                return None
            # Create the record first, so the approvals panel hears of it at once.
            approval, _ = approval_request(request=approval_request_for(call, **identity))
            self.changes.post(conversation_id=run.conversation_id, approval_id=approval.pk)
            while True:
                verdict = app_hook.on_tool_call(call)
                if not isinstance(verdict, SuspendRun) or self._stopping.is_set():
                    return verdict

        return create_hook(on_tool_call=on_tool_call, name="Studio approval hook")


class RunRecorder:
    """Saves a Studio run's state and events as the app's rows; posts a change notice for each.

    Unlike ``agents.services.RunRecorder`` it never touches the lease: a Studio run must never
    look like an app run whose worker died.
    """

    def __init__(self, run: AgentRun, changes: Changes):
        self.run = run
        self.changes = changes

    def checkpoint(self, state: RunState) -> None:
        """Save the run's state (the admin shows it; a restarted Studio resumes from it)."""
        AgentRun.objects.filter(pk=self.run.pk).update(state=state.model_dump(mode="json"))

    def event(self, event: Event) -> None:
        """Record one framework event for the timeline and tell open pages."""
        status = STATUS_AFTER_EVENT.get(event.type)
        if status:
            AgentRun.objects.filter(pk=self.run.pk).update(status=status)
        RunEvent.objects.create(run_id=self.run.pk, type=event.type, data=event.data)
        if event.type == "tool_result" and event.data.get("requires_approval"):
            approval_record_call_outcome(
                run_id=event.run_id,
                call_id=event.data["call_id"],
                outcome={key: event.data.get(key) for key in ("outcome", "result", "message")},
            )
        self.changes.post(conversation_id=self.run.conversation_id, run_id=str(self.run.pk), event=event.type)


def _run_finish(run_pk: uuid.UUID, status: str, *, text: str = "", error: str = "") -> None:
    now = timezone.now()
    with transaction.atomic():
        run = AgentRun.objects.select_for_update().get(pk=run_pk)
        run.status = status
        run.error = error
        run.finished_at = now if status in AgentRun.FINISHED else None
        run.suspended_at = now if status == AgentRun.Status.SUSPENDED else None
        run.save(update_fields=["status", "error", "finished_at", "suspended_at"])
        if status == AgentRun.Status.SUCCEEDED and text:
            Message.objects.get_or_create(
                run=run, role=Message.Role.ASSISTANT, defaults={"conversation_id": run.conversation_id, "content": text}
            )
        Conversation.objects.filter(pk=run.conversation_id).update(updated_at=now)


def _message_text(message: object) -> str:
    content = message.strip() if isinstance(message, str) else ""
    if not content:
        raise StudioError("Type a message first.", field="message")
    if len(content) > MAX_MESSAGE_CHARS:
        raise StudioError(f"The message is longer than {MAX_MESSAGE_CHARS} characters.", field="message")
    return content


def _busy_message(run: AgentRun) -> str:
    if run.status == AgentRun.Status.WAITING_FOR_APPROVAL:
        pending = studio_approvals().filter(run_id=studio_run_id(run.pk), status=Approval.Status.PENDING).first()
        which = f"approval #{pending.pk}" if pending else "an approval"
        return f"This chat is waiting for {which}: decide it in the Approvals panel, or start another chat."
    return "This chat is still answering your last message; wait for it, or start another chat."


def _owner_gone(owner: str) -> bool:
    """Whether the Studio process named in ``lease_owner`` has ended (this process is alive)."""
    try:
        pid = int(owner.removeprefix(OWNER_PREFIX))
    except ValueError:
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None

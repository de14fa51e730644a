"""Conversations and agent runs: post a message, run the agent in a worker, suspend, resume, recover."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from contextlib import contextmanager
from datetime import timedelta
from functools import cache

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.errors import ConversationBusy, MessageRefused
from agents.leases import Lease, LeaseLost, keeper, lease_expiry
from agents.models import AgentRun, Conversation, Message, RunEvent
from agents.registry import get_agent
from agents.tasks import run_agent
from anvia import AgentRunError, Event, ModelError, RunState, ToolExecutionError
from anvia import Message as ModelMessage
from anvia_project.channel_layer import group_send_soon
from approvals.hooks import approval_hook
from approvals.models import Approval
from approvals.services import approval_record_call_outcome, approvals_cancel_for_run

logger = logging.getLogger("anvia.runs")

MAX_MESSAGE_CHARS = 4000
HISTORY_MESSAGES = 20
MAX_ERROR_CHARS = 4000


class RunStateRefused(Exception):
    """The database would not store the run's state (e.g. a NUL character in PostgreSQL's jsonb)."""


class RunAttemptsExhausted(Exception):
    """The run's workers stopped ``ANVIA_RUN_MAX_ATTEMPTS`` times before it ended."""


@cache
def _blocking_permits(count: int) -> threading.BoundedSemaphore:
    """Blocked runs hold a worker thread each. Past ``ANVIA_MAX_BLOCKED_RUNS`` per worker process
    a run suspends at once instead, so new chats always find a free thread (README "Agent runs").
    Keyed by the setting, read when a run starts, so a changed setting takes effect."""
    return threading.BoundedSemaphore(count)


def conversation_group(conversation_id: int) -> str:
    return f"conversation_{conversation_id}"


def conversation_create(*, user, agent_name: str = "support", title: str = "") -> Conversation:
    get_agent(agent_name)
    return Conversation.objects.create(user=user, agent_name=agent_name, title=title[:200])


def conversation_post_message(*, conversation: Conversation, content: str) -> AgentRun:
    """Save the customer's message and queue a run to answer it (after commit)."""
    content = (content or "").strip()
    if not content:
        raise MessageRefused("The message is empty.")
    if len(content) > MAX_MESSAGE_CHARS:
        raise MessageRefused(f"The message is longer than {MAX_MESSAGE_CHARS} characters.")
    if "\x00" in content:  # PostgreSQL cannot store it
        raise MessageRefused("The message contains a NUL character (\\u0000); remove it and send again.")
    with transaction.atomic():
        conversation_check_no_open_run(conversation=conversation)
        run = AgentRun.objects.create(
            conversation=conversation, user=conversation.user, agent_name=conversation.agent_name
        )
        Message.objects.create(conversation=conversation, run=run, role=Message.Role.USER, content=content)
        if not conversation.title:
            conversation.title = content[:80]
        conversation.save(update_fields=["title", "updated_at"])
        transaction.on_commit(lambda: run_enqueue(run_id=run.pk))
    logger.info("run queued run=%s conversation=%s user=%s", run.pk, conversation.pk, conversation.user_id)
    return run


def conversation_check_no_open_run(*, conversation: Conversation) -> None:
    """One run at a time per conversation: raise ``ConversationBusy`` while one is not finished.

    Call inside the transaction that creates the next run: the conversation's row stays locked
    until it commits, so two messages posted at once cannot both pass.
    """
    list(Conversation.objects.select_for_update().filter(pk=conversation.pk).values_list("pk", flat=True))
    open_run = conversation.runs.exclude(status__in=AgentRun.FINISHED).only("pk").order_by("-created_at").first()
    if open_run is not None:
        raise ConversationBusy(open_run)


def run_enqueue(*, run_id) -> None:
    run_agent.delay(str(run_id))


def run_claim(*, run_id, owner: str) -> AgentRun | None:
    """Take the run for this worker (``AgentRun.objects.claimable``), as a new attempt: the
    bumped ``attempts`` is this worker's fencing token. Taking over an active run whose lease
    ran out counts the previous attempt as interrupted."""
    now = timezone.now()
    claimed = (
        AgentRun.objects.claimable(now)
        .filter(pk=run_id)
        .update(
            status=AgentRun.Status.RUNNING,
            lease_owner=owner,
            lease_expires_at=lease_expiry(),
            attempts=F("attempts") + 1,
            interrupted_attempts=F("interrupted_attempts")
            + Case(When(status__in=AgentRun.ACTIVE, then=Value(1)), default=Value(0)),
            started_at=Coalesce(F("started_at"), now),
            error="",
        )
    )
    if not claimed:
        return None
    return AgentRun.objects.select_related("conversation", "user").get(pk=run_id)


class RunRecorder:
    """Saves a run's checkpoints and events and streams events to the chat, every write fenced
    on the lease: once another worker has taken the run, nothing more is written.

    Writes are batched (README "Benchmarks": a chat made a dozen transactions, now two). An event
    goes to the chat at once but is saved with the run's next write, in order. A checkpoint is
    saved at once only when something outside the run is about to depend on it: a tool starts
    (the fence, with the "executing" mark), or reviewers are about to be asked (a ``tool_call``
    that requires approval; then the ``approval_requested`` status). Otherwise the state rides
    along with the next write, at the latest the run's last one (``run_succeed``, ``run_stop``,
    ``run_fail``, ``run_suspend``). A worker that dies loses only progress that nothing depended
    on: the run resumes from the last saved state and may ask the model again, but never runs a
    tool twice (the idempotency key) nor loses a decision (the row).
    """

    def __init__(self, run: AgentRun, lease: Lease):
        self.run = run
        self.lease = lease
        self.group = conversation_group(run.conversation_id)
        self._unsaved_state: dict | None = None
        self._unsaved_status: str | None = None
        self._unsaved_events: list[RunEvent] = []

    def checkpoint(self, state: RunState) -> None:
        """Keep the state for the next write, or save it now (with everything unsaved) when a
        tool is about to start: this is also the fence on starting a tool, so a worker that lost
        the run raises ``LeaseLost`` here."""
        if self._keep(state):
            self.save()

    def _keep(self, state: RunState) -> bool:
        """Keep ``state`` as the unsaved one; ``True`` when it must be saved now: a tool starts,
        or the database would refuse it (then the run fails where the state was made)."""
        self._unsaved_state = state.model_dump(mode="json")
        return _tool_starting(state) or not _storable(self._unsaved_state)

    # The framework's loop calls these two. Most events and checkpoints only go into memory (and
    # to the chat): they stay on the loop; only a write hops to the worker's thread, where the
    # run's database connection is (each hop costs ~0.1 ms of CPU, README "Benchmarks").

    async def on_event(self, event: Event) -> None:
        if _writes_at_once(event) and not self.lease.lost.is_set():
            await sync_to_async(self.event, thread_sensitive=True)(event)
        else:
            self.event(event)

    async def on_checkpoint(self, state: RunState) -> None:
        if self._keep(state):
            await sync_to_async(self.save, thread_sensitive=True)()

    def save(self) -> None:
        """Write what is not saved yet (state, status, events) in one fenced transaction."""
        try:
            with self.fenced():
                pass
        except (LeaseLost, OperationalError, InterfaceError):
            raise
        except DatabaseError as error:
            raise RunStateRefused(f"The database refused to save the run's state: {error}") from error

    @contextmanager
    def fenced(self, **fields):
        """``Lease.fenced`` (renew the lease, or ``LeaseLost``) carrying what is not saved yet; the
        caller's ``fields`` win over the unsaved status. Yields the run's fields it writes."""
        if self._unsaved_state is not None:
            fields.setdefault("state", self._unsaved_state)
        if self._unsaved_status is not None:
            fields.setdefault("status", self._unsaved_status)
        with self.lease.fenced(**fields):
            if self._unsaved_events:
                RunEvent.objects.bulk_create(self._unsaved_events)
            yield fields
        self._unsaved_state, self._unsaved_status, self._unsaved_events = None, None, []

    def forget_state(self) -> None:
        """Drop the unsaved state (the database refused it): the run's last write goes without it."""
        self._unsaved_state = None

    def event(self, event: Event) -> None:
        if event.type == "text_delta":
            # A piece of the answer as it is written: shown live, never saved (the whole answer
            # is, once). No database fence per piece; a worker that lost the run stays quiet.
            if not self.lease.lost.is_set():
                message = {"type": "run.event", "run_id": str(self.run.pk), "event": event.type, "data": event.data}
                group_send_soon(self.group, message, merge=_joined_pieces)
            return
        if self.lease.lost.is_set():
            return  # logged once by the lease; the next checkpoint stops the run
        data = event.data
        if event.type == "error":
            # The technical message (hosts, stack details) stays in AgentRun.error, for staff only.
            data = {"kind": data.get("kind")}
        if not _storable(data):
            logger.warning(
                "run %s: the database would refuse the %s event; not saved nor shown", self.run.pk, event.type
            )
            return
        self._unsaved_events.append(RunEvent(run_id=self.run.pk, type=event.type, data=data))
        status = {
            "approval_requested": AgentRun.Status.WAITING_FOR_APPROVAL,
            "approval_decided": AgentRun.Status.RUNNING,
        }.get(event.type)
        if _reviewers_asked_next(event):
            # Saved with the state below, before the hook creates the approval: a reviewer who sees
            # the request finds the run already waiting for them.
            status = AgentRun.Status.WAITING_FOR_APPROVAL
        try:
            if status:
                self._unsaved_status = status
                logger.info("run status run=%s status=%s call=%s", self.run.pk, status, event.data.get("call_id"))
            if _reviewers_asked_next(event) or event.type == "approval_requested":
                # A protected call goes before reviewers next (the hook creates its approval before
                # the approval_requested event): the state holding the call is saved first, so an
                # approval never exists for a call a resumed run would not know.
                self.save()
            elif event.type == "tool_result" and event.data.get("requires_approval"):
                with self.fenced():
                    approval_record_call_outcome(
                        run_id=str(self.run.pk),
                        call_id=event.data["call_id"],
                        outcome={key: event.data.get(key) for key in ("outcome", "result", "message")},
                    )
        except LeaseLost:
            return  # logged once by the lease; the next checkpoint stops the run
        self.publish({"type": "run.event", "run_id": str(self.run.pk), "event": event.type, "data": data})

    def publish(self, message: dict) -> None:
        # Queued, not awaited: the run goes on while the message is sent, in order.
        group_send_soon(self.group, message)


def _joined_pieces(previous: dict, message: dict) -> dict | None:
    """Two pieces of the answer still waiting to be sent go as one (the page appends them)."""
    if previous.get("event") != "text_delta" or previous.get("run_id") != message["run_id"]:
        return None
    return {**previous, "data": {**previous["data"], "text": previous["data"]["text"] + message["data"]["text"]}}


def _writes_at_once(event: Event) -> bool:
    return (
        event.type == "approval_requested"
        or _reviewers_asked_next(event)
        or (event.type == "tool_result" and event.data.get("requires_approval"))
    )


def _reviewers_asked_next(event: Event) -> bool:
    return event.type == "tool_call" and bool(event.data.get("requires_approval"))


def _tool_starting(state: RunState) -> bool:
    return any(record.outcome == "executing" for record in state.tool_calls)


@cache
def _refuses_nul() -> bool:
    return "postgresql" in settings.DATABASES["default"]["ENGINE"]


def _storable(value) -> bool:
    """Whether the database takes ``value`` as JSON: PostgreSQL's jsonb refuses the NUL character
    (SQLite stores it). Checked before a write is deferred, so the refusal surfaces where it did
    when every write was immediate: a refused state fails the run, a refused event is dropped."""
    if not _refuses_nul():
        return True
    return "\\u0000" not in json.dumps(value)


@contextmanager
def _blocking_budget():
    permits = _blocking_permits(settings.ANVIA_MAX_BLOCKED_RUNS)
    permitted = permits.acquire(blocking=False)
    try:
        yield settings.ANVIA_APPROVAL_BLOCK_SECONDS if permitted else 0.0
    finally:
        if permitted:
            permits.release()


def run_execute(*, run_id, owner: str | None = None) -> AgentRun | None:
    """Run (or resume) the agent for this run until it answers, fails, or suspends.

    ``None`` when the run was not this worker's to take, or another worker took it over meanwhile.
    Any exception ends the run ``failed`` with the reason in ``AgentRun.error``, except a lost
    database connection: that attempt is interrupted and the run retried once its lease runs out,
    up to ``ANVIA_RUN_MAX_ATTEMPTS``.
    """
    owner = owner or uuid.uuid4().hex
    run = run_claim(run_id=run_id, owner=owner)
    if run is None:
        logger.info("run skipped run=%s: finished or held by a live worker", run_id)
        return None
    logger.info(
        "run claimed run=%s owner=%s attempt=%s interrupted_before=%s resumed=%s",
        run.pk,
        owner,
        run.attempts,
        run.interrupted_attempts,
        bool(run.state),
    )
    lease = Lease(run_id=run.pk, attempt=run.attempts, owner=owner)
    recorder = RunRecorder(run, lease)
    with keeper.holding(lease):
        try:
            if run.interrupted_attempts >= settings.ANVIA_RUN_MAX_ATTEMPTS:
                return run_fail(run=run, recorder=recorder, error=_attempts_exhausted(run))
            return _run_agent(run, recorder)
        except LeaseLost:
            logger.warning("run stopped run=%s attempt=%s owner=%s: lease lost", run.pk, run.attempts, owner)
            return None


def _run_agent(run: AgentRun, recorder: RunRecorder) -> AgentRun:
    try:
        agent = get_agent(run.agent_name)
        with _blocking_budget() as block_seconds:
            hook = approval_hook(
                user=run.user, conversation_id=run.conversation_id, agent_name=agent.name, block_seconds=block_seconds
            )
            request = agent.resume(run.state) if run.state else _first_prompt(agent, run)
            response = (
                request.request_hook(hook).on_event(recorder.on_event).on_checkpoint(recorder.on_checkpoint).send_sync()
            )
    except (LeaseLost, OperationalError, InterfaceError):
        raise
    except Exception as error:
        # A poison run (arguments nested too deep, a state the database refuses, a bug) fails
        # here, once, instead of being retried after every lease.
        if not isinstance(error, AgentRunError | RunStateRefused):
            logger.exception("run raised run=%s", run.pk)
        return run_fail(run=run, recorder=recorder, error=error)
    if response.suspended:
        return run_suspend(run=run, recorder=recorder)
    if response.state.status == "terminated":
        return run_stop(run=run, recorder=recorder, reason=response.state.terminated or "")
    return run_succeed(run=run, recorder=recorder, text=response.text or "")


def _attempts_exhausted(run: AgentRun) -> RunAttemptsExhausted:
    return RunAttemptsExhausted(
        f"Gave up after {run.interrupted_attempts} attempts: each time, the worker running it stopped before "
        f"the run ended (it crashed, was killed, stalled past its lease, or lost its database connection). "
        f"The limit is ANVIA_RUN_MAX_ATTEMPTS={settings.ANVIA_RUN_MAX_ATTEMPTS}."
    )


def _first_prompt(agent, run: AgentRun):
    asked, history = _question_and_history(run)
    return agent.prompt(
        asked.content,
        history=[ModelMessage(role=m.role, content=m.content) for m in history],
        context={"user_id": run.user_id, "conversation_id": run.conversation_id},
        run_id=str(run.pk),
    )


def _question_and_history(run: AgentRun) -> tuple[Message, list[Message]]:
    """The customer's message this run answers, and the ``HISTORY_MESSAGES`` before it, oldest
    first. Only those rows are read: the cost must not grow with the conversation."""
    newest_first = Message.objects.filter(conversation_id=run.conversation_id).order_by("-created_at", "-id")
    recent = list(newest_first[: HISTORY_MESSAGES + 1])
    # The usual case: the question is the conversation's newest message (one run at a time).
    if recent and recent[0].run_id == run.pk and recent[0].role == Message.Role.USER:
        return recent[0], recent[1:][::-1]
    asked = newest_first.filter(run=run, role=Message.Role.USER).first()
    if asked is None:
        raise Message.DoesNotExist(f"Run {run.pk} has no customer message to answer.")
    earlier = newest_first.filter(created_at__lte=asked.created_at).exclude(pk=asked.pk)[:HISTORY_MESSAGES]
    return asked, list(earlier)[::-1]


def run_succeed(*, run: AgentRun, recorder: RunRecorder, text: str) -> AgentRun:
    with recorder.fenced(
        status=AgentRun.Status.SUCCEEDED, finished_at=timezone.now(), lease_owner="", lease_expires_at=None
    ) as written:
        _save_answer(run, text)
    recorder.publish({"type": "run.finished", "run_id": str(run.pk), "status": "succeeded", "text": text})
    logger.info("run succeeded run=%s", run.pk)
    return _as_written(run, written)


def _save_answer(run: AgentRun, text: str) -> None:
    """The run's one answer in the chat. Called inside the fenced write that ends the run, whose
    update locks the run's row, so the check and the insert cannot race (no savepoint needed)."""
    if not Message.objects.filter(run=run, role=Message.Role.ASSISTANT).exists():
        Message.objects.create(run=run, role=Message.Role.ASSISTANT, conversation_id=run.conversation_id, content=text)


def _as_written(run: AgentRun, fields: dict) -> AgentRun:
    """The run as its last write left it, without reading it back: nothing else writes a finished
    run (the heartbeat and every fence match active runs only); a suspended one is a snapshot."""
    for name, value in fields.items():
        setattr(run, name, value)
    return run


STOPPED_TEXT = "A staff member stopped this request, so I won't go on with it. Contact support if you have questions."


def run_stop(*, run: AgentRun, recorder: RunRecorder, reason: str) -> AgentRun:
    """End the run ``stopped``: a reviewer terminated it. The customer is told plainly (the
    reviewer's reason stays with the approval, for staff); nothing more of it runs, and its
    other pending approvals are cancelled (the decision did that already; this covers any left)."""
    with recorder.fenced(
        status=AgentRun.Status.STOPPED, finished_at=timezone.now(), lease_owner="", lease_expires_at=None
    ) as written:
        _save_answer(run, STOPPED_TEXT)
        approvals_cancel_for_run(run_id=str(run.pk), reason="A reviewer stopped the run.")
    recorder.publish({"type": "run.finished", "run_id": str(run.pk), "status": "stopped", "text": STOPPED_TEXT})
    logger.info("run stopped by a reviewer run=%s reason=%s", run.pk, reason)
    return _as_written(run, written)


def run_fail(*, run: AgentRun, recorder: RunRecorder, error: Exception) -> AgentRun:
    """End the run ``failed``: the reason for staff in ``AgentRun.error``, plain words for the
    customer, and its pending approvals cancelled (nobody will act on them)."""
    text = customer_error_text(error)
    reason = staff_error_text(error)
    if isinstance(error, RunStateRefused):
        recorder.forget_state()
    with recorder.fenced(
        status=AgentRun.Status.FAILED, error=reason, finished_at=timezone.now(), lease_owner="", lease_expires_at=None
    ) as written:
        _save_answer(run, text)
        cancelled = approvals_cancel_for_run(run_id=str(run.pk), reason=f"The agent run failed: {reason}")
    recorder.publish({"type": "run.finished", "run_id": str(run.pk), "status": "failed", "text": text})
    logger.warning("run failed run=%s approvals_cancelled=%s error=%s", run.pk, cancelled, reason)
    return _as_written(run, written)


def staff_error_text(error: Exception) -> str:
    """What went wrong, for ``AgentRun.error``: the framework's and this module's own errors say
    it in words; anything else is named with its type. NUL characters (which PostgreSQL refuses)
    are shown escaped."""
    if isinstance(error, AgentRunError | RunStateRefused | RunAttemptsExhausted):
        text = str(error)
    else:
        text = f"The run stopped on an unexpected error: {type(error).__name__}: {error}"
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def customer_error_text(error: Exception) -> str:
    """The failure in words a customer can read; the details stay in ``AgentRun.error``."""
    if isinstance(error, ModelError):
        return "Sorry, the assistant is unavailable right now and couldn't answer. Please try again in a few minutes."
    if isinstance(error, ToolExecutionError):
        return (
            "Sorry, something went wrong while handling your request, so I stopped. A staff member has been notified."
        )
    return "Sorry, I couldn't finish handling your request. Please try again, or contact support."


def run_suspend(*, run: AgentRun, recorder: RunRecorder) -> AgentRun:
    """Free the worker; the decision resumes the run. Re-check, so a decision that landed while
    we were suspending is not left waiting for a wake-up that already happened."""
    with recorder.fenced(
        status=AgentRun.Status.SUSPENDED, suspended_at=timezone.now(), lease_owner="", lease_expires_at=None
    ) as written:
        pass
    recorder.publish({"type": "run.suspended", "run_id": str(run.pk)})
    logger.info("run suspended run=%s", run.pk)
    queued = run_queue_if_decided(run_id=run.pk)
    # As written (or queued by this call); a decision landing from now on moves it on its own.
    return _as_written(run, {**written, **({"status": AgentRun.Status.QUEUED} if queued else {})})


def run_queue_if_decided(*, run_id) -> bool:
    """Queue a suspended run once every call it waits on is decided, and only once: the decision
    that completes a step (or the suspend that finds it complete) moves it to ``queued`` in one
    conditional update, and only the one that did queues it."""
    state = AgentRun.objects.filter(pk=run_id, status=AgentRun.Status.SUSPENDED).values_list("state", flat=True)
    state = state.first()
    if state is None:
        return False
    waiting_on = [call.id for call in RunState.model_validate(state).pending_calls()]
    if Approval.objects.filter(run_id=str(run_id), call_id__in=waiting_on, status=Approval.Status.PENDING).exists():
        return False
    if not AgentRun.objects.filter(pk=run_id, status=AgentRun.Status.SUSPENDED).update(status=AgentRun.Status.QUEUED):
        return False
    run_enqueue(run_id=run_id)
    return True


def run_resume_after_decision(*, approval: Approval) -> bool:
    """Queue the run an approval belongs to once every call of its step is decided; a live
    worker's run gets the decision through the decision channel, an orphaned one is recovered."""
    try:
        run_id = uuid.UUID(approval.run_id)
    except ValueError:
        return False  # not a run of this app (Studio, a hand-written hook)
    if run_queue_if_decided(run_id=run_id):
        logger.info("run resume queued run=%s approval=%s", run_id, approval.pk)
        return True
    if AgentRun.objects.orphaned(timezone.now()).filter(pk=run_id).exists():
        run_enqueue(run_id=run_id)
        logger.info("run resume queued run=%s approval=%s: its worker is gone", run_id, approval.pk)
        return True
    logger.info(
        "run resume not queued run=%s approval=%s: other calls still pending, finished, or held by a live worker",
        run_id,
        approval.pk,
    )
    return False


def runs_recover_orphaned() -> int:
    """Queue again the runs whose worker died or stalled (``AgentRun.objects.orphaned``).

    Beat runs this every ``ANVIA_RUN_SWEEP_SECONDS`` and every worker on start. An orphan is
    queued on each sweep until a worker claims it; the extra messages find nothing to claim.
    """
    run_ids = list(AgentRun.objects.orphaned(timezone.now()).values_list("pk", flat=True))
    for run_id in run_ids:
        run_enqueue(run_id=run_id)
    if run_ids:
        logger.warning("runs recovered count=%s ids=%s", len(run_ids), [str(r) for r in run_ids])
    return len(run_ids)


def runs_requeue_stale() -> int:
    """Queue again the runs still queued ``ANVIA_RUN_QUEUED_RETRY_SECONDS`` after they were posted
    (their message may never have reached the broker). Beat, every minute, and worker start."""
    since = timezone.now() - timedelta(seconds=settings.ANVIA_RUN_QUEUED_RETRY_SECONDS)
    run_ids = list(
        AgentRun.objects.filter(status=AgentRun.Status.QUEUED, created_at__lt=since).values_list("pk", flat=True)
    )
    for run_id in run_ids:
        run_enqueue(run_id=run_id)
    if run_ids:
        logger.warning("runs requeued count=%s ids=%s", len(run_ids), [str(r) for r in run_ids])
    return len(run_ids)

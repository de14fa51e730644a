"""The agent loop: ask the model, route each tool call through the hooks, repeat."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync

from anvia.core.errors import (
    AgentRunError,
    MaxStepsExceeded,
    ModelError,
    ModelResponseError,
    ToolArgumentsError,
    ToolError,
    ToolExecutionError,
)
from anvia.core.events import Event, EventSink
from anvia.core.hooks import Hook
from anvia.core.messages import Message, ModelReply, ModelRequest, ToolCallRequest, Usage
from anvia.core.models.base import ModelClient, model_session
from anvia.core.policies import ASK, DENY
from anvia.core.state import RunState, ToolCallRecord
from anvia.core.tools import (
    RespondTool,
    RunTool,
    SkipTool,
    SuspendRun,
    TerminateRun,
    Tool,
    ToolCall,
    ToolContext,
    ToolHandle,
    ToolVerdict,
    call_maybe_async,
)

logger = logging.getLogger("anvia.agent")

Checkpoint = Callable[[RunState], Any]
ToolChoice = str | Callable[[RunState], "str | None"]

TOOL_CHOICE_KEYWORDS = ("auto", "none", "required")
# Call ids are kept as the server made them (llama.cpp's are 60+ characters), up to this length;
# a longer one, or one with control characters, is replaced by a digest of itself.
MAX_CALL_ID_CHARS = 200


class Agent:
    """An agent: instructions, a model and the tools it may call."""

    def __init__(
        self,
        *,
        name: str,
        instructions: str,
        model: ModelClient,
        tools: Sequence[Tool] = (),
        max_steps: int = 10,
        description: str = "",
        tool_choice: ToolChoice | None = None,
    ):
        names = [t.name for t in tools]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"Agent {name!r} has several tools named {', '.join(duplicated)}.")
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1.")
        if isinstance(tool_choice, str) and tool_choice not in (*TOOL_CHOICE_KEYWORDS, *names):
            raise ValueError(
                f"Agent {name!r}: tool_choice {tool_choice!r} is neither one of "
                f"{', '.join(TOOL_CHOICE_KEYWORDS)} nor the name of one of its tools."
            )
        self.name = name
        self.instructions = instructions
        self.model = model
        self.tools = {t.name: t for t in tools}
        self.max_steps = max_steps
        self.description = description
        # "auto", "none", "required", a tool's name, or a callable of the run state returning one
        # (e.g. force a tool on the first step only); None leaves it to the model client.
        self.tool_choice = tool_choice

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r}, tools={list(self.tools)})"

    def prompt(
        self,
        message: str,
        *,
        history: Iterable[Message] = (),
        context: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> PromptRequest:
        """Start a run with a user message, after an optional earlier conversation."""
        state = RunState(
            run_id=run_id or uuid.uuid4().hex,
            agent=self.name,
            messages=[*history, Message.user(message)],
            context=dict(context or {}),
        )
        return PromptRequest(self, state)

    def resume(self, state: RunState | str | Mapping[str, Any]) -> PromptRequest:
        """Continue a run from its saved state (a ``RunState``, its JSON text, or its dict)."""
        if isinstance(state, str):
            state = RunState.from_json(state)
        elif not isinstance(state, RunState):
            state = RunState.model_validate(state)
        if state.agent != self.name:
            raise ValueError(f"This state belongs to agent {state.agent!r}, not {self.name!r}.")
        return PromptRequest(self, state.model_copy(deep=True))


@dataclass
class AgentResponse:
    """The outcome of ``send()``: finished (``text``) or suspended at a pending tool call."""

    state: RunState

    @property
    def text(self) -> str | None:
        return self.state.final_text

    @property
    def messages(self) -> list[Message]:
        return self.state.messages

    @property
    def tool_calls(self) -> list[ToolCallRecord]:
        return self.state.tool_calls

    @property
    def usage(self) -> Usage:
        return self.state.usage

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def suspended(self) -> bool:
        return self.state.status == "suspended"


class PromptRequest:
    """A run about to be sent: attach hooks, an event sink and a checkpoint, then ``send()``."""

    def __init__(self, agent: Agent, state: RunState):
        self.agent = agent
        self.state = state
        self._hooks: list[Hook] = []
        self._sinks: list[EventSink] = []
        self._checkpoints: list[Checkpoint] = []

    def request_hook(self, hook: Hook) -> PromptRequest:
        """Route this run's tool calls through ``hook`` (hooks are asked in the order added)."""
        self._hooks.append(hook)
        return self

    def on_event(self, sink: EventSink) -> PromptRequest:
        """Send every event of this run to ``sink`` (sync or async) as it happens."""
        self._sinks.append(sink)
        return self

    def on_checkpoint(self, checkpoint: Checkpoint) -> PromptRequest:
        """Call ``checkpoint(state)`` whenever the state changes in a way worth saving."""
        self._checkpoints.append(checkpoint)
        return self

    def send_sync(self) -> AgentResponse:
        """``send()`` for sync code. Sync hooks and tools run in the calling thread."""
        return async_to_sync(self.send)()

    async def send(self) -> AgentResponse:
        """Run until the model answers without tool calls, or a hook suspends the run."""
        state = self.state
        if state.status in ("done", "terminated"):
            return AgentResponse(state)
        state.status = "running"
        state.error = None
        try:
            async with model_session(self.agent.model):
                return await self._loop()
        except AgentRunError as error:
            await self._fail(error)
            raise

    async def _loop(self) -> AgentResponse:
        state = self.state
        while True:
            pending = state.pending_calls()
            if pending:
                handled = await self._handle_calls(pending)
                if handled == "suspended":
                    state.status = "suspended"
                    await self._checkpoint()
                    await self._emit("suspended", {"pending": [c.id for c in state.pending_calls()]})
                    return AgentResponse(state)
                if handled == "terminated":
                    state.status = "terminated"
                    await self._checkpoint()
                    await self._emit("terminated", {"message": state.terminated})
                    return AgentResponse(state)
                continue
            if state.messages and state.messages[-1].role == "assistant":
                state.status = "done"
                await self._checkpoint()
                await self._emit("done", {"text": state.final_text, "usage": state.usage.model_dump()})
                return AgentResponse(state)
            await self._ask_model()

    async def _ask_model(self) -> None:
        state = self.state
        if state.step >= self.agent.max_steps:
            raise MaxStepsExceeded(
                f"Agent {self.agent.name!r} stopped after {self.agent.max_steps} steps: the model kept calling tools."
            )
        state.step += 1
        await self._emit("step", {"step": state.step, "model": self._model_name})
        choice = self.agent.tool_choice
        request = ModelRequest(
            instructions=self.agent.instructions,
            messages=state.messages,
            tools=[t.spec() for t in self.agent.tools.values()],
            tool_choice=choice(state) if callable(choice) else choice,
        )
        reply = await self._complete(request)
        if _is_empty(reply):
            # Small models sometimes stop at once; one more try, then a clear failure rather
            # than a "succeeded" run with no answer.
            logger.warning("model %s answered nothing in run %s; asking once more", self._model_name, state.run_id)
            reply = await self._complete(request)
            if _is_empty(reply):
                raise ModelResponseError(
                    f"The model {self._model_name} answered with neither text nor a tool call, twice in a row."
                )
        calls = self._unique_call_ids(reply.tool_calls)
        state.messages.append(Message(role="assistant", content=reply.text, tool_calls=calls))
        await self._checkpoint()
        if reply.text:
            await self._emit("text", {"text": reply.text, "final": not calls})

    @property
    def _model_name(self) -> str:
        return str(getattr(self.agent.model, "name", "") or type(self.agent.model).__name__)

    async def _complete(self, request: ModelRequest) -> ModelReply:
        # Stream only when someone listens: the pieces are for showing the answer as it is written.
        stream = getattr(self.agent.model, "stream", None) if self._sinks else None
        try:
            if stream is not None:
                reply = await stream(request, self._emit_text_piece)
            else:
                reply = await self.agent.model.complete(request)
        except ModelError:
            raise
        except Exception as error:
            raise ModelError(f"The model failed: {error}") from error
        self.state.usage.add(reply.usage)
        return reply

    async def _emit_text_piece(self, piece: str) -> None:
        if piece:
            await self._emit("text_delta", {"text": piece})

    def _unique_call_ids(self, calls: list[ToolCallRequest]) -> list[ToolCallRequest]:
        # Some servers number calls per reply ("call_0" every step); the id must be unique in the
        # run because it is half of the idempotency key.
        used = {c.id for m in self.state.messages for c in m.tool_calls}
        unique = []
        for call in calls:
            call_id = _usable_call_id(call.id) or f"call_{uuid.uuid4().hex[:12]}"
            if call_id in used:
                call_id = f"{call_id}-s{self.state.step}-{uuid.uuid4().hex[:6]}"
            used.add(call_id)
            unique.append(call.model_copy(update={"id": call_id}))
        return unique

    async def _handle_calls(self, calls: list[ToolCallRequest]) -> str:
        """One model step's calls: those that need no approval run at once, in order; those that
        do are all announced to the hooks together, then each gets its verdict; none of them runs
        before every one has one (a single ``suspend()`` suspends the step, to be asked again on
        resume). Returns "handled", "suspended" or "terminated"."""
        protected: list[tuple[ToolCallRequest, ToolCall]] = []
        for request in calls:
            call = await self._prepare_call(request)
            if call is None:
                continue
            if call.requires_approval:
                protected.append((request, call))
                continue
            verdict = await self._ask_hooks(call)
            if isinstance(verdict, SuspendRun | TerminateRun):
                return await self._stop_at(verdict)
            await self._apply(request, call, verdict)
        if protected:
            await self._announce([call for _, call in protected])
            for _, call in protected:
                if call.approved_without_review is None:  # e.g. a standing grant: nobody is asked
                    await self._emit(
                        "approval_requested",
                        {
                            "call_id": call.call_id,
                            "tool_name": call.tool_name,
                            "args": call.args_json,
                            "reason": call.approval_reason,
                            "quorum": call.policy.quorum if call.policy else 1,
                        },
                    )
            verdicts = [await self._ask_hooks(call) for _, call in protected]
            stop = next((v for v in verdicts if isinstance(v, TerminateRun)), None) or next(
                (v for v in verdicts if isinstance(v, SuspendRun)), None
            )
            for (_, call), verdict in zip(protected, verdicts, strict=True):
                if not isinstance(verdict, SuspendRun):
                    await self._emit_decided(call, verdict)
            if stop is not None:
                return await self._stop_at(stop)
            for (request, call), verdict in zip(protected, verdicts, strict=True):
                await self._apply(request, call, verdict)
        self._add_notes(calls)
        return "handled"

    async def _prepare_call(self, request: ToolCallRequest) -> ToolCall | None:
        """The validated call, its approval rule applied and announced; ``None`` when the model
        named an unknown tool or sent invalid arguments (answered with the error already)."""
        state = self.state
        tool = self.agent.tools.get(request.name)
        raw_arguments = _loads_or_text(request.arguments)
        if tool is None:
            available = ", ".join(self.agent.tools) or "none"
            message = f"Unknown tool {request.name!r}. Available tools: {available}."
            await self._finish_call(request, raw_arguments, "invalid", message=message)
            return None
        try:
            args = tool.parse_args(request.arguments)
        except ToolArgumentsError as error:
            await self._finish_call(request, raw_arguments, "invalid", message=str(error))
            return None

        call = ToolCall(
            tool_name=tool.name,
            call_id=request.id,
            args=args,
            run_id=state.run_id,
            context=state.context,
            tool=ToolHandle(tool),
            messages=tuple(state.messages),
        )
        if tool.approval is not None:
            # The rules may read the app's records (facts): a sync function runs where a sync tool would.
            call.policy = await call_maybe_async(tool.approval.evaluate, call)
            call.requires_approval = call.policy.outcome == ASK
            call.approval_reason = call.policy.reason if call.requires_approval else None
            await self._tell_hooks_policy(call)
        arguments = call.args_json
        await self._emit(
            "tool_call",
            {
                "call_id": call.call_id,
                "tool_name": tool.name,
                "args": arguments,
                "requires_approval": call.requires_approval,
                **({"policy": call.policy.outcome, "policy_rule": call.policy.rule} if call.policy else {}),
            },
        )
        if call.policy is not None and call.policy.outcome == DENY:
            await self._finish_call(
                request, arguments, "skipped", message=call.policy.message, policy=_policy_record(call)
            )
            return None
        return call

    async def _tell_hooks_policy(self, call: ToolCall) -> None:
        for hook in self._hooks:
            if hook.on_policy is None:
                continue
            try:
                await call_maybe_async(hook.on_policy, call)
            except Exception as error:
                logger.exception(
                    "hook %s raised recording the policy of %s in run %s", hook.name, call.tool_name, call.run_id
                )
                raise AgentRunError(
                    f"The {hook.name} failed recording the policy of {call.tool_name}: {error}"
                ) from error

    async def _announce(self, calls: list[ToolCall]) -> None:
        for hook in self._hooks:
            if hook.on_approvals_requested is None:
                continue
            try:
                await call_maybe_async(hook.on_approvals_requested, calls)
            except Exception as error:
                logger.exception("hook %s raised announcing approvals in run %s", hook.name, self.state.run_id)
                raise AgentRunError(f"The {hook.name} failed announcing approvals: {error}") from error

    async def _emit_decided(self, call: ToolCall, verdict: ToolVerdict) -> None:
        await self._emit(
            "approval_decided",
            {
                "call_id": call.call_id,
                "tool_name": call.tool_name,
                "approved": isinstance(verdict, RunTool),
                "action": _action_of(verdict),
                "message": _verdict_message(verdict),
                "without_review": call.approved_without_review,
            },
        )

    async def _stop_at(self, verdict: SuspendRun | TerminateRun) -> str:
        if isinstance(verdict, TerminateRun):
            self.state.terminated = verdict.message
            return "terminated"
        return "suspended"

    async def _apply(self, request: ToolCallRequest, call: ToolCall, verdict: ToolVerdict) -> None:
        """Carry out a verdict: run the tool, or answer the model for it."""
        common = {
            "requires_approval": call.requires_approval,
            "approval_reason": call.approval_reason,
            "policy": _policy_record(call),
        }
        approved = (isinstance(verdict, RunTool)) if call.requires_approval else None
        arguments = call.args_json
        if isinstance(verdict, SkipTool):
            await self._finish_call(request, arguments, "skipped", message=verdict.message, approved=approved, **common)
            return
        if isinstance(verdict, RespondTool):
            await self._finish_call(
                request, arguments, "responded", message=verdict.response, approved=approved, **common
            )
            return
        run_args = verdict.args or call.args
        run_arguments = run_args.model_dump(mode="json")
        self._set_record(request, run_arguments, "executing", approved=approved, **common)
        await self._checkpoint()
        state = self.state
        context = ToolContext(
            run_id=state.run_id, call_id=call.call_id, tool_name=call.tool_name, context=state.context
        )
        tool = call.definition
        try:
            result = await tool.invoke(run_args, context)
        except ToolError as error:
            await self._finish_call(
                request, run_arguments, "error", message=str(error), note=verdict.note, approved=approved, **common
            )
            return
        except Exception as error:
            logger.exception("tool %s raised in run %s", tool.name, state.run_id)
            raise ToolExecutionError(f"The tool {tool.name} failed: {error}") from error
        await self._finish_call(
            request, run_arguments, "ran", result=result, note=verdict.note, approved=approved, **common
        )

    def _add_notes(self, calls: list[ToolCallRequest]) -> None:
        """What reviewers added reaches the model after the step's results, in a message of its
        own: a tool's result stays exactly what the tool returned."""
        notes = []
        for request in calls:
            record = self.state.record_for(request.id)
            if record is not None and record.note:
                notes.append(f"Note from the reviewer about {record.tool_name} (call {record.call_id}): {record.note}")
        if notes:
            self.state.messages.append(Message(role="system", content="\n".join(notes)))

    async def _ask_hooks(self, call: ToolCall) -> ToolVerdict:
        for hook in self._hooks:
            if hook.on_tool_call is None:
                continue
            try:
                verdict = await call_maybe_async(hook.on_tool_call, call)
            except ToolArgumentsError as error:
                return SkipTool(f"The approved arguments were not valid: {error}")
            except Exception as error:
                logger.exception("hook %s raised on %s in run %s", hook.name, call.tool_name, call.run_id)
                raise AgentRunError(f"The {hook.name} failed on {call.tool_name}: {error}") from error
            if verdict is None:
                continue
            if not isinstance(verdict, RunTool | SkipTool | RespondTool | TerminateRun | SuspendRun):
                raise AgentRunError(
                    f"The {hook.name} returned {verdict!r} for {call.tool_name}; return call.tool.run(), "
                    "call.tool.skip(message), call.tool.respond(text), call.tool.terminate(message), "
                    "call.tool.suspend() or None."
                )
            return verdict
        if call.requires_approval:
            # Fail closed: nobody approved this call.
            return SkipTool(call.approval.reject_message)
        return RunTool()

    def _set_record(self, request: ToolCallRequest, arguments: Any, outcome: str, **fields: Any) -> ToolCallRecord:
        state = self.state
        record = state.record_for(request.id)
        values = {"tool_name": request.name, "arguments": arguments, "outcome": outcome, "step": state.step, **fields}
        if record is None:
            record = ToolCallRecord(call_id=request.id, **values)
            state.tool_calls.append(record)
        else:
            for key, value in values.items():
                setattr(record, key, value)
        return record

    async def _finish_call(
        self,
        request: ToolCallRequest,
        arguments: Any,
        outcome: str,
        *,
        result: Any = None,
        message: str | None = None,
        **fields: Any,
    ) -> None:
        record = self._set_record(request, arguments, outcome, result=_jsonable(result), message=message, **fields)
        content = _tool_message_content(record)
        self.state.messages.append(Message.tool_result(call_id=request.id, name=request.name, content=content))
        await self._checkpoint()
        await self._emit(
            "tool_result",
            {
                "call_id": request.id,
                "tool_name": request.name,
                "outcome": outcome,
                "result": record.result,
                "message": message,
                "note": record.note,
                "content": content,
                "requires_approval": record.requires_approval,
                "policy": record.policy,
            },
        )

    async def _fail(self, error: AgentRunError) -> None:
        self.state.status = "failed"
        self.state.error = str(error)
        error.state = self.state
        try:
            await self._checkpoint()
        finally:
            await self._emit("error", {"message": str(error), "kind": type(error).__name__})

    async def _checkpoint(self) -> None:
        for checkpoint in self._checkpoints:
            await call_maybe_async(checkpoint, self.state)

    async def _emit(self, type_: str, data: dict[str, Any]) -> None:
        event = Event(type=type_, run_id=self.state.run_id, step=self.state.step, data=data)
        for sink in self._sinks:
            try:
                await call_maybe_async(sink, event)
            except Exception:
                # A broken progress display must not break the run it displays.
                logger.exception("event sink failed on %s in run %s", type_, self.state.run_id)


def _policy_record(call: ToolCall) -> dict[str, str] | None:
    if call.policy is None:
        return None
    return {"outcome": call.policy.outcome, "rule": call.policy.rule}


def _action_of(verdict: ToolVerdict) -> str:
    if isinstance(verdict, RunTool):
        return "approve"
    if isinstance(verdict, RespondTool):
        return "respond"
    if isinstance(verdict, TerminateRun):
        return "terminate"
    return "reject"


def _verdict_message(verdict: ToolVerdict) -> str | None:
    if isinstance(verdict, SkipTool | TerminateRun):
        return verdict.message
    if isinstance(verdict, RespondTool):
        return verdict.response
    if isinstance(verdict, RunTool):
        return verdict.note
    return None


def _is_empty(reply) -> bool:
    return not reply.tool_calls and not (reply.text or "").strip()


def _usable_call_id(call_id: str) -> str:
    if len(call_id) <= MAX_CALL_ID_CHARS and call_id.isprintable():
        return call_id
    return "call_" + hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _tool_message_content(record: ToolCallRecord) -> str:
    if record.outcome == "ran":
        return record.result if isinstance(record.result, str) else json.dumps(record.result)
    if record.outcome in ("error", "invalid"):
        return f"Error: {record.message}"
    return record.message or ""


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def _loads_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except (json.JSONDecodeError, TypeError):
        return arguments

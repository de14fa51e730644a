"""Tools, their approval metadata, and what a hook sees of a tool call."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, get_type_hints

from asgiref.sync import sync_to_async
from pydantic import BaseModel, ValidationError, create_model

from anvia.core.errors import ToolArgumentsError
from anvia.core.messages import Message, ToolSpec
from anvia.core.policies import ALLOW, ASK, DENY, PolicyRule, PolicyVerdict, ask, code_fingerprint, jsonable, text_for

DEFAULT_REJECT_MESSAGE = "The tool call was not approved."


@dataclass(frozen=True)
class ToolContext:
    """Handed to a tool's ``execute``: who runs it and the key that makes it idempotent.

    ``idempotency_key`` is ``"<run id>:<call id>"``; a resumed run passes the same key again, so a
    side effect keyed on it happens once however often the call is retried.
    """

    run_id: str
    call_id: str
    tool_name: str
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.call_id}"


@dataclass(frozen=True)
class RunTool:
    """A hook's verdict: execute the tool (with ``args`` when a reviewer edited them)."""

    args: BaseModel | None = None
    note: str | None = None


@dataclass(frozen=True)
class SkipTool:
    """A hook's verdict: don't execute; ``message`` goes to the model as the tool result."""

    message: str


@dataclass(frozen=True)
class RespondTool:
    """A hook's verdict: don't execute; ``response`` goes to the model in place of the tool's
    result (a reviewer answering for the tool)."""

    response: str


@dataclass(frozen=True)
class TerminateRun:
    """A hook's verdict: end the whole run now; no other call runs and the model is not asked
    again. ``message`` says why, for the person the run answers."""

    message: str


@dataclass(frozen=True)
class SuspendRun:
    """A hook's verdict: stop the run here; it resumes later from its saved state."""

    reason: str = ""


ToolVerdict = RunTool | SkipTool | RespondTool | TerminateRun | SuspendRun


class ToolHandle:
    """``call.tool`` in a hook: ``run()``, ``skip(message)``, ``respond(text)``, ``terminate(message)``
    or ``suspend()``."""

    def __init__(self, definition: Tool):
        self.definition = definition

    @property
    def name(self) -> str:
        return self.definition.name

    def run(self, args: Mapping[str, Any] | BaseModel | None = None, *, note: str | None = None) -> RunTool:
        """Execute the tool and give its result to the model.

        ``args`` replaces the model's arguments (a reviewer's edit); they are validated again
        against the tool's input model and ``ToolArgumentsError`` is raised when they fail.
        ``note`` reaches the model beside the tool's result (never inside it), e.g. that a reviewer
        changed the arguments.
        """
        validated = None if args is None else self.definition.parse_args(args)
        return RunTool(args=validated, note=note)

    def skip(self, message: str) -> SkipTool:
        """Do not execute the tool; the model receives ``message`` as the tool's result."""
        return SkipTool(message=message)

    def respond(self, response: str) -> RespondTool:
        """Do not execute the tool; the model receives ``response`` in place of its result."""
        return RespondTool(response=response)

    def terminate(self, message: str) -> TerminateRun:
        """End the whole run: nothing more runs, the model is not asked again."""
        return TerminateRun(message=message)

    def suspend(self, reason: str = "") -> SuspendRun:
        """Stop the run at this call; resume it later with ``agent.resume(state)``."""
        return SuspendRun(reason=reason)


@dataclass
class ToolCall:
    """One tool call, as approval rules and hooks see it. ``args`` are already validated;
    ``messages`` is the conversation up to this call (read-only)."""

    tool_name: str
    call_id: str
    args: BaseModel
    run_id: str
    context: Mapping[str, Any]
    tool: ToolHandle
    requires_approval: bool = False
    approval_reason: str | None = None
    messages: Sequence[Message] = ()
    # What the app knows about this call (``Approval(facts=...)``), for rules and reasons.
    facts: Mapping[str, Any] = field(default_factory=dict)
    # What the tool's policy decided (allow, deny or ask) and why; ``None`` for a tool without approval.
    policy: PolicyVerdict | None = None
    # Set by a hook's ``on_approvals_requested`` when a standing decision (e.g. a grant) already
    # approved this asked call: no person is asked, so no ``approval_requested`` event is sent.
    approved_without_review: str | None = None

    @property
    def definition(self) -> Tool:
        return self.tool.definition

    @property
    def approval(self) -> Approval | None:
        return self.definition.approval

    @property
    def args_json(self) -> dict[str, Any]:
        """The validated arguments as plain JSON values."""
        return self.args.model_dump(mode="json")

    def preview(self) -> dict[str, Any] | None:
        """The tool's preview of this call for a reviewer, as ``{"warnings": [...], "facts":
        [{"name": ..., "value": ...}, ...]}`` in the order the tool gave them (JSON stores may
        reorder an object's keys); ``None`` when the tool has none. A preview that fails says so in
        its warnings instead of failing the run."""
        build = self.definition.preview
        if build is None:
            return None
        context = ToolContext(run_id=self.run_id, call_id=self.call_id, tool_name=self.tool_name, context=self.context)
        try:
            given = json.loads(json.dumps(dict(build(self.args, context)), default=str))
        except Exception as error:
            return {"warnings": [f"The preview could not be built: {type(error).__name__}: {error}"], "facts": []}
        warnings = given.pop("warnings", None) or []
        return {
            "warnings": [str(w) for w in warnings] if isinstance(warnings, list) else [str(warnings)],
            "facts": [{"name": name, "value": value} for name, value in given.items()],
        }


ApprovalRule = Callable[[ToolCall], bool]
ApprovalReason = str | Callable[[ToolCall], str]


@dataclass(frozen=True)
class Approval:
    """Approval metadata on a tool: its policy, and who decides when a person is asked.

    ``when`` decides per call whether a person must approve it (absent: always);
    ``reason`` is what the reviewer reads (a string or a function of the call);
    ``reject_message`` is what the model is told when the call is refused.

    ``policy`` lists rules (``allow``/``deny``/``ask`` from ``anvia.core.policies``) tried in
    order before ``when``; the first that matches decides. ``facts(call)`` gives the rules what
    the app knows about the call (``call.facts``), e.g. the order's earlier refunds.

    ``quorum``: how many distinct reviewers must approve an asked call (a rule may ask for more).
    ``reviewer_group`` / ``reviewer_permission``: who may decide (a Django group name, a permission
    ``"app.codename"``), beyond the app's reviewer permission. ``escalate_after`` (seconds):
    a request still pending that long is also put to ``escalate_to`` (a group name).
    ``grant_amount`` names the argument a standing grant's total is counted in (e.g. ``"amount"``);
    ``grant_scope`` the arguments a grant may be limited to (e.g. ``("order_id",)``).
    """

    when: ApprovalRule | None = None
    reason: ApprovalReason | None = None
    reject_message: str = DEFAULT_REJECT_MESSAGE
    policy: Sequence[PolicyRule] = ()
    facts: Callable[[ToolCall], Mapping[str, Any]] | None = None
    quorum: int = 1
    reviewer_group: str = ""
    reviewer_permission: str = ""
    escalate_after: float | None = None
    escalate_to: str = ""
    grant_amount: str = ""
    grant_scope: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.quorum < 1:
            raise ValueError("quorum must be at least 1.")
        if (self.escalate_after is None) != (not self.escalate_to):
            raise ValueError("escalate_after and escalate_to go together: how long, and to which group.")

    def rules(self) -> list[PolicyRule]:
        """The policy as tried: its rules, then ``when`` (ask when it holds, else allow), or,
        without ``when``, ask (fail closed)."""
        if self.when is None:
            return [*self.policy, ask(name="every call is asked")]
        return [*self.policy, ask(self.when, name="when"), PolicyRule(ALLOW, name="when did not hold")]

    def evaluate(self, call: ToolCall) -> PolicyVerdict:
        """Decide the call: the first matching rule's outcome, with what it saw. Sets
        ``call.facts`` first. A facts function or a rule that raises asks a person (fail closed),
        the reason saying what failed."""
        fingerprint = self.fingerprint()
        try:
            call.facts = dict(self.facts(call)) if self.facts is not None else {}
        except Exception as error:
            call.facts = {}
            return self._failed_closed(call, f"the facts could not be gathered: {type(error).__name__}: {error}")
        for index, rule in enumerate(self.rules()):
            try:
                matched = rule.when is None or bool(rule.when(call))
            except Exception as error:
                return self._failed_closed(call, f"{rule.label(index)} raised {type(error).__name__}: {error}")
            if not matched:
                continue
            return PolicyVerdict(
                outcome=rule.outcome,
                rule=rule.label(index),
                reason=self._reason(rule, call),
                message=(text_for(rule.message, call) or "") if rule.outcome == DENY else "",
                quorum=(rule.quorum or self.quorum) if rule.outcome == ASK else 1,
                facts=jsonable(call.facts),
                fingerprint=fingerprint,
            )
        raise AssertionError("rules() ends with a rule that always matches")  # pragma: no cover

    def _reason(self, rule: PolicyRule, call: ToolCall) -> str:
        if rule.outcome == DENY:
            return text_for(rule.message, call) or ""
        if rule.outcome == ALLOW:
            return text_for(rule.reason, call) or f"allowed by {rule.name or 'the policy'}"
        return text_for(rule.reason, call) or self.reason_for(call)

    def _failed_closed(self, call: ToolCall, why: str) -> PolicyVerdict:
        return PolicyVerdict(
            outcome=ASK,
            rule="failed closed",
            reason=f"{self.reason_for(call)} (Asked because {why}.)",
            quorum=self.quorum,
            facts=jsonable(call.facts),
            fingerprint=self.fingerprint(),
        )

    def is_required(self, call: ToolCall) -> bool:
        """Whether this call needs a decision (the policy says ask). Fails closed."""
        return self.evaluate(call).outcome == ASK

    def reason_for(self, call: ToolCall) -> str:
        """The text a reviewer sees for this call."""
        if self.reason is None:
            return f"Approve {call.tool_name}?"
        if isinstance(self.reason, str):
            return self.reason
        try:
            return str(self.reason(call))
        except Exception as error:
            return f"Approve {call.tool_name}? (the reason could not be built: {error})"

    @cached_property
    def _fingerprint(self) -> str:
        return code_fingerprint(
            self.rules(),
            self.facts,
            self.quorum,
            self.reviewer_group,
            self.reviewer_permission,
            self.grant_amount,
            self.grant_scope,
        )

    def fingerprint(self) -> str:
        """A digest of the policy that decides (its rules' code and the values they read, the
        quorum, who decides; not the wording shown): an approval given under one policy is not
        used under another."""
        return self._fingerprint


Execute = Callable[..., Any] | Callable[..., Awaitable[Any]]
# What a reviewer needs to judge a call: a JSON object; its "warnings" (a list of sentences) are
# shown first, every other key as a labelled fact, in order. Called with the validated args and the
# context; ``ToolCall.preview()`` returns it as {"warnings": [...], "facts": [{"name", "value"}...]}.
Preview = Callable[[BaseModel, ToolContext], Mapping[str, Any]]


@dataclass(frozen=True, eq=False)
class Tool:
    """A function the model may call, with a pydantic input model and optional approval."""

    name: str
    description: str
    input: type[BaseModel]
    execute: Execute
    approval: Approval | None = None
    preview: Preview | None = None

    def fingerprint(self) -> str:
        """A digest of the tool as a call to it is judged: its name and input schema. An approval
        asked under one schema is not used for a call under another."""
        return hashlib.sha256(f"{self.name}\n{_schema_json(self.input)}".encode()).hexdigest()[:16]

    def spec(self) -> ToolSpec:
        """The tool as a model sees it."""
        return ToolSpec(name=self.name, description=self.description, parameters=json.loads(_schema_json(self.input)))

    def parse_args(self, raw: str | Mapping[str, Any] | BaseModel) -> BaseModel:
        """Validate untrusted arguments; ``ToolArgumentsError`` names each bad field."""
        if isinstance(raw, self.input):
            return raw
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as error:
                raise ToolArgumentsError(
                    self.name, f"Arguments for {self.name} are not valid JSON: {error.msg} at position {error.pos}."
                ) from None
        if not isinstance(raw, Mapping):
            raise ToolArgumentsError(self.name, f"Arguments for {self.name} must be a JSON object.")
        try:
            return self.input.model_validate(dict(raw))
        except ValidationError as error:
            fields = {".".join(str(part) for part in e["loc"]) or "(arguments)": e["msg"] for e in error.errors()}
            listed = "; ".join(f"{name}: {message}" for name, message in fields.items())
            raise ToolArgumentsError(
                self.name, f"Invalid arguments for {self.name}: {listed}.", fields=fields
            ) from None

    async def invoke(self, args: BaseModel, context: ToolContext) -> Any:
        """Run ``execute``; a sync function runs in a worker thread (see ``call_maybe_async``)."""
        if _accepts_context(self.execute):
            return await call_maybe_async(self.execute, args, context)
        return await call_maybe_async(self.execute, args)


class NoArguments(BaseModel):
    """The input model of a tool that takes no arguments."""


def create_tool(
    *,
    name: str,
    description: str,
    execute: Execute,
    input: type[BaseModel] = NoArguments,
    approval: Approval | None = None,
    preview: Preview | None = None,
) -> Tool:
    """Build a tool. ``execute(args)`` or ``execute(args, ctx)``, sync or async; ``input`` is a
    pydantic model (omit it for a tool without arguments). ``preview(args, ctx)`` returns what a
    reviewer needs to judge a call (a JSON object; ``"warnings"``, a list, is shown first)."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"Tool name {name!r} may only hold letters, digits, '_' and '-'.")
    if not (isinstance(input, type) and issubclass(input, BaseModel)):
        raise TypeError(f"input for tool {name!r} must be a pydantic model class.")
    return Tool(name=name, description=description, input=input, execute=execute, approval=approval, preview=preview)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    approval: Approval | None = None,
    preview: Preview | None = None,
) -> Any:
    """Decorator: a typed function becomes a tool; its signature becomes the input model.

    A parameter annotated ``ToolContext`` receives the call's context and is not shown to the model.
    The description defaults to the docstring.
    """

    def build(function: Callable[..., Any]) -> Tool:
        hints = get_type_hints(function, include_extras=True)
        fields: dict[str, Any] = {}
        context_param = None
        for param in inspect.signature(function).parameters.values():
            annotation = hints.get(param.name, Any)
            if annotation is ToolContext:
                context_param = param.name
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (annotation, default)
        tool_name = name or function.__name__
        model = create_model(f"{_camel(tool_name)}Input", **fields)

        async def execute(args: BaseModel, ctx: ToolContext) -> Any:
            kwargs = {key: getattr(args, key) for key in fields}
            if context_param:
                kwargs[context_param] = ctx
            return await call_maybe_async(function, **kwargs)

        doc = inspect.getdoc(function) or ""
        return create_tool(
            name=tool_name,
            description=description or doc or tool_name,
            input=model,
            execute=execute,
            approval=approval,
            preview=preview,
        )

    return build(fn) if fn is not None else build


@functools.cache
def _schema_json(model: type[BaseModel]) -> str:
    # Generating a JSON schema took ~0.8 ms a tool, for every model call (README "Benchmarks");
    # a model's schema does not change. Each caller gets a fresh copy (json.loads).
    return json.dumps(model.model_json_schema())


async def call_maybe_async(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await an async function; run a sync one through asgiref's thread-sensitive executor.

    Under ``send_sync`` that executor is the calling thread, so a sync tool or hook runs where a
    plain sync caller would run it (a Celery worker thread keeps its own database connection).
    """
    if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(type(function).__call__):
        return await function(*args, **kwargs)
    result = await sync_to_async(function, thread_sensitive=True)(*args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


def _accepts_context(function: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))

"""Approval policies: what happens to a protected tool call before any person is asked.

A tool's ``Approval(policy=[...])`` lists rules, tried in order; the first that matches decides:

- ``allow(when)``: the call runs without review (the audit trail records which rule let it);
- ``deny(when, message=...)``: the call does not run; the model is told ``message``;
- ``ask(when, reason=..., quorum=...)``: a person (or ``quorum`` distinct people) must approve it.

Rules see the call and what the app knows about it: ``Approval(facts=...)`` is a function of the
call returning a mapping (e.g. the order's refunds in the last 30 days), computed once per call
and read by rules as ``call.facts``. When no rule matches, ``Approval(when=...)`` decides as it
always did (ask when it holds, else allow); without ``when`` the call is asked (fail closed).
A rule or a facts function that raises asks a person, saying why.
"""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from anvia.core.tools import ToolCall

Outcome = Literal["allow", "deny", "ask"]
ALLOW: Outcome = "allow"
DENY: Outcome = "deny"
ASK: Outcome = "ask"

RuleTest = Callable[["ToolCall"], Any]
Text = str | Callable[["ToolCall"], Any]


@dataclass(frozen=True)
class PolicyRule:
    """One rule of a policy; build it with ``allow``, ``deny`` or ``ask``."""

    outcome: Outcome
    when: RuleTest | None = None
    reason: Text | None = None
    message: Text = ""
    quorum: int | None = None
    name: str = ""

    def label(self, index: int) -> str:
        """How the audit trail names this rule: its name, or its outcome and position."""
        return self.name or f"{self.outcome} rule {index + 1}"


def allow(when: RuleTest | None = None, *, reason: Text | None = None, name: str = "") -> PolicyRule:
    """Run the call without review when ``when(call)`` holds (always, without ``when``).
    ``reason`` says why, for the audit trail."""
    return PolicyRule(ALLOW, when=when, reason=reason, name=name)


def deny(when: RuleTest | None = None, *, message: Text, name: str = "") -> PolicyRule:
    """Refuse the call when ``when(call)`` holds; the model is told ``message`` (a string or a
    function of the call)."""
    if not message:
        raise ValueError("deny() needs the message the model is told.")
    return PolicyRule(DENY, when=when, message=message, name=name)


def ask(
    when: RuleTest | None = None, *, reason: Text | None = None, quorum: int | None = None, name: str = ""
) -> PolicyRule:
    """Ask a person when ``when(call)`` holds; ``quorum`` distinct reviewers must approve
    (default: the tool's ``Approval(quorum=...)``, 1)."""
    if quorum is not None and quorum < 1:
        raise ValueError("quorum must be at least 1.")
    return PolicyRule(ASK, when=when, reason=reason, quorum=quorum, name=name)


@dataclass(frozen=True)
class PolicyVerdict:
    """What the policy decided for one call, and why: the record an audit trail keeps.

    ``rule`` names the rule that matched; ``reason`` is what a reviewer reads (ask) or why the
    call ran unasked (allow); ``message`` is what the model is told (deny); ``facts`` is what the
    rules saw; ``fingerprint`` identifies the policy that decided (see ``code_fingerprint``).
    """

    outcome: Outcome
    rule: str
    reason: str = ""
    message: str = ""
    quorum: int = 1
    facts: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rule": self.rule,
            "reason": self.reason,
            "message": self.message,
            "quorum": self.quorum,
            "facts": jsonable(self.facts),
            "fingerprint": self.fingerprint,
        }


def text_for(text: Text | None, call: ToolCall) -> str | None:
    """A rule's text: a string, or a function of the call (one that raises says so)."""
    if text is None or isinstance(text, str):
        return text
    try:
        return str(text(call))
    except Exception as error:
        return f"(the text could not be built: {type(error).__name__}: {error})"


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values (a Decimal becomes a string, as money should)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def code_fingerprint(*parts: Any) -> str:
    """A short digest of what a policy does: each function's code (bytecode, constants, nested
    functions) and the plain values it reads from its module, closure or defaults, plus any other
    value given. Editing a rule's code or a threshold it reads changes the digest; reloading the
    same code does not."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(_describe(part, depth=0).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


_PLAIN = (str, int, float, bool, Decimal, type(None))


def _describe(value: Any, *, depth: int) -> str:
    if depth > 4:
        return "..."
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_describe(v, depth=depth + 1) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k!r}:{_describe(v, depth=depth + 1)}" for k, v in sorted(value.items(), key=str)) + "}"
    if isinstance(value, PolicyRule):
        return (
            "rule("
            + ",".join(
                _describe(v, depth=depth + 1)
                for v in (value.outcome, value.when, value.message, value.quorum, value.name)
            )
            + ")"
        )
    if isinstance(value, types.FunctionType):
        return _describe_function(value, depth=depth)
    if isinstance(value, types.CodeType):
        return _describe_code(value, depth=depth)
    if callable(value):
        call = getattr(type(value), "__call__", None)  # noqa: B004
        if isinstance(call, types.FunctionType):
            return f"{type(value).__qualname__}:" + _describe_function(call, depth=depth)
    return type(value).__qualname__


def _describe_function(function: types.FunctionType, *, depth: int) -> str:
    code = function.__code__
    seen = [_describe_code(code, depth=depth + 1)]
    for name in code.co_names:
        known = function.__globals__.get(name)
        if isinstance(known, _PLAIN):
            seen.append(f"{name}={known!r}")
    for cell in function.__closure__ or ():
        try:
            seen.append(_describe(cell.cell_contents, depth=depth + 1))
        except ValueError:  # an empty cell
            seen.append("<empty>")
    if function.__defaults__:
        seen.append(_describe(function.__defaults__, depth=depth + 1))
    return f"{function.__module__}.{function.__qualname__}(" + ";".join(seen) + ")"


def _describe_code(code: types.CodeType, *, depth: int) -> str:
    constants = [
        _describe_code(c, depth=depth + 1) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts
    ]
    return code.co_code.hex() + "|" + ",".join(constants) + "|" + ",".join(code.co_names)

"""The offline demo model: deterministic, no network, good enough to drive the support desk demo."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from anvia.core.messages import Message, ModelReply, ModelRequest, ToolCallRequest, Usage
from anvia.core.models.base import TextPieceSink

ORDER_ID = re.compile(r"\b([A-Za-z]{1,3}-\d{2,})\b")
AMOUNT = re.compile(r"(?:\$\s*(\d+(?:[.,]\d{1,2})?))|(?:(\d+(?:[.,]\d{1,2})?)\s*(?:dollars|usd|\$))", re.IGNORECASE)
WORD_PIECE = re.compile(r"\s*\S+\s*")
GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening))\b", re.IGNORECASE)

OFFLINE_NOTICE = "I'm the offline demo model (no real language model is configured)"


class OfflineModel:
    """Turns support-desk requests into tool calls and answers from their results.

    It understands "refund order A-1001, $150" (several orders in one message: one call each, in
    one step), "cancel order A-1003" and "where is my order A-1002", calls the matching tool when
    the agent has it, and otherwise says what it is. It tells when a refund ran with another
    amount than it asked for (a reviewer changed it).

    ``stream()`` hands its text over word by word, ``word_delay`` seconds apart (0: at once), so a
    page shows the answer being written as it would with a real model.
    """

    name = "offline demo model"

    def __init__(self, *, word_delay: float = 0.0):
        if word_delay < 0:
            raise ValueError("word_delay cannot be negative.")
        self.word_delay = word_delay

    async def stream(self, request: ModelRequest, on_text: TextPieceSink) -> ModelReply:
        """``complete()``, with the text handed to ``on_text`` one word (and its spaces) at a time."""
        reply = await self.complete(request)
        for number, piece in enumerate(WORD_PIECE.findall(reply.text or "")):
            if number and self.word_delay:
                await asyncio.sleep(self.word_delay)
            await on_text(piece)
        return reply

    async def complete(self, request: ModelRequest) -> ModelReply:
        messages = request.messages
        available = {tool.name for tool in request.tools}
        results = _latest_turn_results(messages)
        if results:
            return _reply(text=_answer_from_results(results, _requested_args(messages)))
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        return _plan(last_user.content or "" if last_user else "", available)


def _plan(text: str, available: set[str]) -> ModelReply:
    order = ORDER_ID.search(text)
    order_id = order.group(1).upper() if order else None
    lowered = text.lower()
    if "refund" in lowered and "refund_order" in available:
        refunds = _refunds_asked(text)
        if len(refunds) > 1:  # "refund order A-1001, $150 and order A-1002, $120": one step, two calls
            return _calls([("refund_order", {"order_id": o, "amount": a}) for o, a in refunds])
        amount = _amount(text)
        if order_id and amount is not None:
            return _call("refund_order", {"order_id": order_id, "amount": amount})
        missing = "the order number (like A-1001)" if not order_id else "the amount (like $150)"
        return _reply(text=f"I can refund that, but I need {missing}.")
    if "cancel" in lowered and "cancel_order" in available:
        if order_id:
            return _call("cancel_order", {"order_id": order_id})
        return _reply(text="Which order should I cancel? Give me its number, like A-1003.")
    if order_id and "lookup_order" in available:
        return _call("lookup_order", {"order_id": order_id})
    if GREETING.search(text):
        return _reply(text=f"Hello! {OFFLINE_NOTICE}. {_capabilities(available)}")
    return _reply(text=f"{OFFLINE_NOTICE}, so I can't answer that. {_capabilities(available)}")


def _capabilities(available: set[str]) -> str:
    examples = {
        "lookup_order": "'where is my order A-1002'",
        "refund_order": "'refund order A-1001, $150'",
        "cancel_order": "'cancel order A-1003'",
    }
    known = [example for name, example in examples.items() if name in available]
    if not known:
        return "I only understand order requests, and this agent has no order tools."
    return "Try " + ", ".join(known) + "."


def _amount(text: str) -> float | None:
    match = AMOUNT.search(text)
    if not match:
        return None
    return float((match.group(1) or match.group(2)).replace(",", "."))


def _refunds_asked(text: str) -> list[tuple[str, float]]:
    """Each order number with the first amount after it, before the next order number."""
    orders = list(ORDER_ID.finditer(text))
    asked = []
    for order, following in zip(orders, [*orders[1:], None], strict=True):
        amount = _amount(text[order.end() : following.start() if following else len(text)])
        if amount is not None:
            asked.append((order.group(1).upper(), amount))
    return asked


def _latest_turn_results(messages: list[Message]) -> list[Message]:
    """The tool results of the last step (a reviewer's notes may follow them: skipped here)."""
    results: list[Message] = []
    for message in reversed(messages):
        if message.role == "system" and not results:
            continue
        if message.role != "tool":
            break
        results.append(message)
    return list(reversed(results))


def _requested_args(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """What this model asked each call of the last step to do, by call id."""
    last = next((m for m in reversed(messages) if m.role == "assistant" and m.tool_calls), None)
    asked: dict[str, dict[str, Any]] = {}
    for call in last.tool_calls if last else []:
        try:
            asked[call.id] = json.loads(call.arguments)
        except json.JSONDecodeError:
            asked[call.id] = {}
    return asked


def _answer_from_results(results: list[Message], asked: dict[str, dict[str, Any]]) -> str:
    return " ".join(_describe(result, asked.get(result.tool_call_id or "", {})) for result in results)


def _describe(result: Message, asked: dict[str, Any]) -> str:
    content = result.content or ""
    data: Any
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        data = None
    if content.startswith("Error:"):
        return f"I couldn't do that: {content.removeprefix('Error:').strip()}"
    if not isinstance(data, dict):
        if result.name in ("refund_order", "cancel_order"):
            return f"That didn't go through. {content}"
        return content
    if result.name == "refund_order":
        changed = ""
        if asked.get("amount") is not None and _money(asked["amount"]) != _money(data.get("amount")):
            changed = f" (a reviewer changed it from ${_money(asked['amount'])})"
        return f"Done: I refunded ${_money(data.get('amount'))}{changed} for order {data.get('order_id')}" + (
            f" (refund {data['refund_id']})." if data.get("refund_id") else "."
        )
    if result.name == "cancel_order":
        return f"Done: order {data.get('order_id')} is now {data.get('status', 'cancelled')}."
    if result.name == "lookup_order":
        parts = [f"Order {data.get('order_id')} is {data.get('status', 'on file')}"]
        if data.get("total") is not None:
            parts.append(f"total ${_money(data['total'])}")
        if data.get("refunded"):
            parts.append(f"refunded ${_money(data['refunded'])}")
        return ", ".join(parts) + "."
    listed = ", ".join(f"{key}: {value}" for key, value in data.items())
    return f"{result.name} returned {listed}."


def _money(value: Any) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


def _call(name: str, arguments: dict[str, Any]) -> ModelReply:
    return _calls([(name, arguments)])


def _calls(calls: list[tuple[str, dict[str, Any]]]) -> ModelReply:
    requests = [
        ToolCallRequest(id=f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=json.dumps(arguments))
        for name, arguments in calls
    ]
    return ModelReply(tool_calls=requests, usage=Usage(model_calls=1))


def _reply(*, text: str) -> ModelReply:
    return ModelReply(text=text, usage=Usage(model_calls=1))

"""What a person may decide about a protected tool call, and the one check of a decision.

``approve`` runs the tool (with edited arguments, if given), ``reject`` tells the model why not,
``respond`` gives the model the reviewer's words instead of the tool's result, ``terminate`` ends
the whole run. Every place that takes a decision (Studio, the app's runtime) checks it here.
"""

from __future__ import annotations

from typing import Literal

from anvia.core.errors import AnviaError

Action = Literal["approve", "reject", "respond", "terminate"]
ACTIONS: tuple[Action, ...] = ("approve", "reject", "respond", "terminate")


class DecisionError(AnviaError):
    """A decision that says nothing or contradicts itself; ``field`` names what to fix."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


def decision_action(
    *, approved: bool | None = None, action: str | None = None, response: str = "", edited: bool = False
) -> Action:
    """The action a decision takes (``approved=True/False`` is short for approve / reject), or
    ``DecisionError`` naming the field that is missing or wrong. ``edited``: it carries edited
    arguments, which only an approval may."""
    if action is None:
        if approved is None:
            raise DecisionError("Say what to do: approve, reject, respond or terminate.", field="action")
        action = "approve" if approved else "reject"
    elif action not in ACTIONS:
        raise DecisionError(f"{action!r} is not an action: approve, reject, respond or terminate.", field="action")
    elif approved is not None and approved != (action == "approve"):
        raise DecisionError(f"approved={approved} does not go with action {action!r}.", field="action")
    if action == "respond" and not (response or "").strip():
        raise DecisionError("Write what the model should receive instead of the tool's result.", field="response")
    if edited and action != "approve":
        raise DecisionError("Edited arguments are only accepted when approving.", field="args")
    return action

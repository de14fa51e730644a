"""A tool's input schema as typed fields a reviewer can edit, and its limits in plain words.

Only flat objects of numbers, strings, booleans and enums are rendered as fields; anything else
(nested objects, arrays, unions, references) is edited as JSON. The schema itself is enforced by
``approval_decide`` (jsonschema); this module only describes it and words its errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema

MONEY_NAMES = frozenset({"amount", "price", "total", "refund", "sum"})
KINDS = {"number": "number", "integer": "integer", "string": "string", "boolean": "boolean"}


@dataclass(frozen=True)
class ArgField:
    """One editable argument and the schema's limits on it."""

    name: str
    label: str
    kind: str  # number, integer, string, boolean or enum
    required: bool
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def money(self) -> bool:
        return self.kind in ("number", "integer") and (
            self.name.lower() in MONEY_NAMES or "dollar" in self.description.lower()
        )

    def value_text(self, value: Any) -> str:
        """``value`` as the reviewer reads it: ``118`` for 118.0, ``$105`` for money."""
        return arg_value_text(value, money=self.money)

    @property
    def limits_text(self) -> str:
        """Every limit of the field in one sentence, e.g. "More than $0."; empty without limits."""
        parts = [message.removeprefix(self.label + " must be ").removesuffix(".") for message in self._limit_messages()]
        return ("Must be " + "; ".join(parts) + ".") if parts else ""

    def _limit_messages(self) -> list[str]:
        keywords = ("exclusiveMinimum", "minimum", "exclusiveMaximum", "maximum", "minLength", "maxLength", "enum")
        return [message for keyword in keywords if (message := self.limit_message(keyword))]

    def limit_message(self, keyword: str) -> str:
        """The rule behind schema ``keyword`` in words ("Amount must be more than $0."), or ``""``."""
        number = self.value_text
        if keyword == "exclusiveMinimum" and self.exclusive_minimum is not None:
            return f"{self.label} must be more than {number(self.exclusive_minimum)}."
        if keyword == "minimum" and self.minimum is not None:
            return f"{self.label} must be at least {number(self.minimum)}."
        if keyword == "exclusiveMaximum" and self.exclusive_maximum is not None:
            return f"{self.label} must be less than {number(self.exclusive_maximum)}."
        if keyword == "maximum" and self.maximum is not None:
            return f"{self.label} must be at most {number(self.maximum)}."
        if keyword == "minLength" and self.min_length:
            if self.min_length == 1:
                return f"{self.label} must not be empty."
            return f"{self.label} must be at least {self.min_length} characters."
        if keyword == "maxLength" and self.max_length is not None:
            return f"{self.label} must be at most {self.max_length} characters."
        if keyword == "enum" and self.choices:
            return f"{self.label} must be one of: {', '.join(str(choice) for choice in self.choices)}."
        if keyword == "type":
            return f"{self.label} must be {TYPE_WORDS.get(self.kind, 'a valid value')}."
        if keyword == "required":
            return f"{self.label} is required."
        return ""


TYPE_WORDS = {
    "number": "a number",
    "integer": "a whole number",
    "string": "text",
    "boolean": "yes or no",
    "enum": "one of the choices",
}


def arg_label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize() or name


def arg_value_text(value: Any, *, money: bool = False) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | float):
        return f"${value}" if money else str(value)
    if value is None:
        return "—"
    return str(value)


def arg_fields(schema: Any) -> list[ArgField] | None:
    """The schema's properties as fields, the required ones first in their listed order, then the
    rest by name; ``None`` if the schema cannot be rendered as fields."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return None
    required = [name for name in schema.get("required") or [] if name in properties]
    # PostgreSQL's jsonb does not keep the properties' order; the required list keeps its own.
    names = list(dict.fromkeys(required)) + sorted(set(properties) - set(required))
    fields = []
    for name in names:
        field = _field(str(name), properties[name], required=name in required)
        if field is None:
            return None
        fields.append(field)
    return fields


def _field(name: str, spec: Any, *, required: bool) -> ArgField | None:
    if not isinstance(spec, dict):
        return None
    choices = spec.get("enum")
    if isinstance(choices, list) and choices and all(isinstance(c, str | int | float) for c in choices):
        kind = "enum"
    elif spec.get("type") in KINDS:
        kind = KINDS[spec["type"]]
        choices = None
    else:
        return None
    return ArgField(
        name=name,
        label=arg_label(name),
        kind=kind,
        required=required,
        description=str(spec.get("description") or ""),
        minimum=_number(spec.get("minimum")),
        maximum=_number(spec.get("maximum")),
        exclusive_minimum=_number(spec.get("exclusiveMinimum")),
        exclusive_maximum=_number(spec.get("exclusiveMaximum")),
        min_length=_count(spec.get("minLength")),
        max_length=_count(spec.get("maxLength")),
        choices=tuple(choices or ()),
    )


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def schema_error_text(schema: Any, error: jsonschema.ValidationError, *, field_name: str | None) -> str:
    """A jsonschema error in the reviewer's words, from the field's own limits where it has one."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    spec = properties.get(field_name) if isinstance(properties, dict) and field_name else None
    field = _field(field_name, spec, required=False) if field_name and spec is not None else None
    if field is None and field_name:
        field = ArgField(name=field_name, label=arg_label(field_name), kind="", required=False)
    if field is not None:
        if error.validator == "required":
            return field.limit_message("required")
        message = field.limit_message(str(error.validator))
        if message:
            return message
    return str(error.message)

"""A tool's input schema as typed fields, and its limits in the reviewer's words."""

from __future__ import annotations

from approvals.arg_schema import arg_fields

REFUND_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "maxLength": 20, "description": "The order number."},
        "amount": {"type": "number", "exclusiveMinimum": 0, "description": "The amount to refund, in dollars."},
        "speed": {"enum": ["standard", "express"]},
        "items": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["order_id", "amount"],
}


def test_a_flat_schema_becomes_typed_fields_required_first():
    fields = arg_fields(REFUND_SCHEMA)
    assert [(f.name, f.kind, f.required) for f in fields] == [
        ("order_id", "string", True),
        ("amount", "number", True),
        ("items", "integer", False),
        ("speed", "enum", False),
    ]


def test_limits_read_as_sentences():
    order_id, amount, items, speed = arg_fields(REFUND_SCHEMA)
    assert amount.limit_message("exclusiveMinimum") == "Amount must be more than $0."
    assert order_id.limit_message("maxLength") == "Order id must be at most 20 characters."
    assert speed.limit_message("enum") == "Speed must be one of: standard, express."
    assert items.limit_message("minimum") == "Items must be at least 1."
    assert items.limit_message("maximum") == "Items must be at most 10."
    assert items.limits_text == "Must be at least 1; at most 10."
    assert amount.limit_message("type") == "Amount must be a number."


def test_schemas_that_cannot_be_fields_fall_back_to_json():
    assert arg_fields({"type": "object", "properties": {"lines": {"type": "array"}}}) is None
    assert (
        arg_fields({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}) is None
    )
    assert arg_fields({"type": "string"}) is None
    assert arg_fields({}) is None

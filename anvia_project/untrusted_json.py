"""JSON from clients, bounded: the API's parser and the pages' JSON fields read it through here.

``json.loads`` alone lets a body nested 5,000 deep raise ``RecursionError`` (an HTTP 500), and
accepts text no database stores (a NUL character, an unpaired surrogate). Every refusal here is
a ``ValueError`` with a sentence for people; the API answers it with 400 (413 for a body over
``ANVIA_API_MAX_BODY_BYTES``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError

# Deeper than any tool's arguments need; well below the interpreter's recursion limit, so nothing
# that walks the value later (serializers, canonical JSON, the database) can hit it either.
MAX_JSON_DEPTH = 32
# PostgreSQL refuses NUL in text and jsonb; no encoding can store an unpaired surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UntrustedJSONError(ValueError):
    """JSON this project refuses to read; ``str()`` says why in plain words."""


def json_loads_bounded(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse ``text`` as strict JSON of at most ``max_depth`` nested arrays/objects.

    Raises ``UntrustedJSONError`` for invalid JSON, ``NaN``/``Infinity``, nesting deeper than
    ``max_depth``, and strings holding a NUL character or an unpaired surrogate.
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise UntrustedJSONError(_too_deep(max_depth)) from None
    except json.JSONDecodeError as error:
        raise UntrustedJSONError(f"Not valid JSON: {error.msg} (line {error.lineno}, column {error.colno}).") from None
    except UnicodeDecodeError:
        raise UntrustedJSONError("Not valid JSON: the text is not UTF-8.") from None
    except ValueError as error:  # a refused constant
        raise UntrustedJSONError(f"Not valid JSON: {error}.") from None
    _check_storable(value, max_depth)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _too_deep(max_depth: int) -> str:
    return f"The JSON is nested too deeply: at most {max_depth} levels of arrays and objects are accepted."


def _check_storable(value: Any, max_depth: int) -> None:
    # Iterative, so the check itself cannot recurse too deeply.
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise UntrustedJSONError(_too_deep(max_depth))
            if isinstance(item, dict):
                for key in item:
                    _check_text(key)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return
    if found.group() == "\x00":
        raise UntrustedJSONError("Text may not contain the NUL character (\\u0000).")
    raise UntrustedJSONError("Text may not contain an unpaired surrogate (\\ud800-\\udfff).")


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "body_too_large"


class JSONParser(parsers.JSONParser):
    """The API's only parser (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``): bounded size and depth."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.ANVIA_API_MAX_BODY_BYTES
        # DRF reads the request's stream directly, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE check.
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes, the most the API accepts.")
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            text = body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError(f"The request body is not valid {encoding} text.") from None
        try:
            return json_loads_bounded(text)
        except UntrustedJSONError as error:
            raise ParseError(f"The request body could not be read. {error}") from None

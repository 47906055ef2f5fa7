"""The one way a request body becomes JSON: strict, bounded, and every failure a 400.

    >>> strict_loads(b'{"a": [1, "x"]}')
    {'a': [1, 'x']}
    >>> strict_loads(b'NaN')
    Traceback (most recent call last):
    ...
    runtime.exceptions.InvalidInput: request body: NaN is not JSON (RFC 8259 has no NaN or Infinity)

Refused: what is not UTF-8 or not JSON, NaN and Infinity (Python's json accepts them, and a
stored NaN could never be sent back as JSON), nesting deeper than :data:`MAX_DEPTH`, and
strings with lone surrogates (``"\\ud800"``: valid JSON escapes, but not text).
"""

from __future__ import annotations

import json

from runtime.exceptions import InvalidInput

MAX_DEPTH = 32


def _no_constant(name: str) -> object:
    raise InvalidInput(f"request body: {name} is not JSON (RFC 8259 has no NaN or Infinity)")


def strict_loads(body: bytes) -> object:
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidInput(f"request body: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {str(exc)[:120]}") from None
    _check(value, 0)
    return value


def _check(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"request body: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _text(value)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _text(key)
            _check(item, depth + 1)


def _text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            "request body: a string holds a lone surrogate (\\ud800-\\udfff), which is not text"
        ) from None

"""Key and value rules shared by every backend and by the kv API.

>>> validate_key("users/alice")
'users/alice'
>>> validate_key("")
Traceback (most recent call last):
...
runtime.exceptions.InvalidInput: key must be 1-512 bytes of UTF-8, got 0 bytes
"""

from __future__ import annotations

import re

from runtime.exceptions import InvalidInput, ValueTooLarge

KEY_MAX_BYTES = 512
VALUE_MAX_BYTES = 1024 * 1024
# Services prefix client keys with a short tag ("k/", "jobs/q/"), so the stored key may be
# a little longer than what a client may send.
STORED_KEY_MAX_BYTES = KEY_MAX_BYTES + 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAMESPACE_NAME = re.compile(r"^_?[a-z][a-z0-9]{0,31}$")


def validate_key(key: str, *, max_bytes: int = KEY_MAX_BYTES) -> str:
    """Return ``key`` if it is 1..max_bytes of UTF-8 with no control character."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= max_bytes:
        raise InvalidInput(f"key must be 1-{max_bytes} bytes of UTF-8, got {size} bytes")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput("key is not valid UTF-8") from exc
    found = _CONTROL.search(key)
    if found:
        raise InvalidInput(f"key has a control character {found.group()!r} at offset {found.start()}")
    return key


def validate_value(value: bytes) -> bytes:
    if len(value) > VALUE_MAX_BYTES:
        raise ValueTooLarge(f"value is {len(value)} bytes, the limit is {VALUE_MAX_BYTES}")
    return value


def validate_namespace(name: str) -> str:
    if not NAMESPACE_NAME.match(name):
        raise InvalidInput(f"namespace name must match {NAMESPACE_NAME.pattern}, got {name!r}")
    return name

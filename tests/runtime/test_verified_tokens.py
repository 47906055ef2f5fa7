"""The cache of verified tokens: bounded, hashed, and never past a token's expiry."""

from __future__ import annotations

import pytest

from runtime.security.authz import Principal
from runtime.security.verified import VerifiedTokens


def ann(expires: float = 100.0) -> Principal:
    return Principal("ann", ("reader",), expires)


def test_the_least_recently_used_token_goes_first_when_full() -> None:
    cache = VerifiedTokens(capacity=2)
    cache.put("a", ann(), until=100)
    cache.put("b", ann(), until=100)
    assert cache.get("a", now=1) is not None  # a is now the most recent
    cache.put("c", ann(), until=100)
    assert len(cache) == 2 and cache.get("b", now=1) is None and cache.get("a", now=1) is not None


def test_an_entry_ends_at_its_until_and_is_dropped() -> None:
    cache = VerifiedTokens()
    cache.put("a", ann(50), until=40)
    assert cache.get("a", now=39.9) is not None
    assert cache.get("a", now=40) is None and len(cache) == 0


def test_the_cache_holds_no_usable_token() -> None:
    cache = VerifiedTokens()
    token = "eyJhbGciOiJFUzI1NiJ9.secret-part.signature"
    cache.put(token, ann(), until=100)
    assert all(token.encode() not in key for key in cache._entries)


def test_a_lone_surrogate_in_a_token_is_a_miss_not_a_crash() -> None:
    assert VerifiedTokens().get("\udcff", now=0) is None


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        VerifiedTokens(capacity=0)

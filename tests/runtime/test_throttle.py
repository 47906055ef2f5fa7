"""Login throttling: atomic under concurrency, bounded in memory, and no lockout for everyone."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.security.throttle import LoginThrottle, keys_for
from tests.conftest import RuntimeProcess, trust


def test_concurrent_guesses_are_counted_before_any_is_checked(server: RuntimeProcess) -> None:
    """30 wrong passwords and the right one, all at once from one address: only the free
    attempts are evaluated; the rest are refused with 429 before their password is checked."""
    password = (server.data_dir / "admin-password").read_text().strip()
    guesses = [f"wrong-{i}" for i in range(30)] + [password]

    def login(guess: str) -> int:
        with httpx.Client(verify=trust(server.ca_file), timeout=30) as client:
            body = {"username": "admin", "password": guess}
            return client.post(server.url + "/v1/auth/login", json=body).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(guesses)) as pool:
        statuses = Counter(pool.map(login, guesses))
    spread = time.monotonic() - started
    evaluated = statuses[401] + statuses[200]
    # Over HTTP, arrivals spread over time: one that comes after a lock ran out is rightly
    # allowed another try, and locks double (1 s, 2 s, 4 s...), so a burst spread over T
    # seconds (a busy machine's TLS handshakes) earns at most log2(T + 1) + 1 more. And the
    # right password, if it is checked before the lock, starts the pair again (by design): up
    # to free - 1 wrong ones before it, free after. CI saw 8 wrong + 1 right in 0.5 s. Before
    # the fix all 31 were checked; the exact bound is shown in-process, with a frozen clock,
    # below.
    bound = 2 * LoginThrottle.free + int(math.log2(spread + 1)) + 1
    assert evaluated <= bound, f"{evaluated} passwords were checked over {spread:.1f} s: {dict(statuses)}"
    assert statuses[429] == len(guesses) - evaluated, dict(statuses)


def test_a_huge_username_costs_a_fixed_size_key() -> None:
    pair, address = keys_for("x" * (1 << 20), "10.0.0.9")
    assert len(pair) == len(address) == 16


def test_the_table_is_bounded_and_drops_the_least_recently_failed() -> None:
    throttle = LoginThrottle(max_keys=100)
    for n in range(1000):
        throttle.failed(keys_for(f"user{n}", f"10.0.{n // 250}.{n % 250}"), now=1.0)
    assert len(throttle) <= 100


def test_a_strangers_guesses_lock_the_stranger_out_not_the_user() -> None:
    throttle = LoginThrottle()
    for _ in range(6):
        throttle.failed(keys_for("alice", "10.0.0.66"), now=10.0)
    assert throttle.retry_after(keys_for("alice", "10.0.0.66"), now=10.5) > 0, "the guesser waits"
    assert throttle.retry_after(keys_for("alice", "10.0.0.7"), now=10.5) == 0, "alice, elsewhere, does not"


def test_a_success_clears_the_pair_but_not_the_address() -> None:
    throttle = LoginThrottle(free=2, per_address_free=3)
    mallory = keys_for("mallory", "10.0.0.66")
    throttle.failed(keys_for("alice", "10.0.0.66"), now=1.0)
    throttle.failed(keys_for("bob", "10.0.0.66"), now=1.0)
    throttle.failed(mallory, now=1.0)
    throttle.succeeded(mallory)  # mallory's own account: the address budget is not reset
    assert throttle.retry_after(keys_for("carol", "10.0.0.66"), now=1.0) > 0


def test_counts_decay_after_the_cap() -> None:
    throttle = LoginThrottle(free=2, cap=60)
    key = keys_for("alice", "10.0.0.66")
    throttle.failed(key, now=0.0)
    throttle.failed(key, now=0.0)
    assert throttle.retry_after(key, now=0.5) > 0
    assert throttle.retry_after(key, now=200.0) == 0


def test_concurrent_correct_logins_of_one_user_all_succeed(tmp_path: Path) -> None:
    """A load generator's ten users log in as admin at once from one address: they queue for
    their turn, and every one gets a token (counting at the start of an attempt refused five)."""
    server = RuntimeProcess(tmp_path / "node").start().wait_ready()
    password = (server.data_dir / "admin-password").read_text().strip()

    def login(_: int) -> int:
        with httpx.Client(verify=trust(server.ca_file), timeout=30) as client:
            return client.post(
                server.url + "/v1/auth/login", json={"username": "admin", "password": password}
            ).status_code

    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            assert list(pool.map(login, range(10))) == [200] * 10
    finally:
        server.kill()


def test_x_forwarded_for_from_a_local_client_does_not_change_its_address(server: RuntimeProcess) -> None:
    """uvicorn's proxy_headers trusted X-Forwarded-For from any process on localhost, so a
    local client could pose as any address (and dodge its throttle). Now the address is the
    connection's own; only cluster members (mutual TLS) may name the original client."""
    password = (server.data_dir / "admin-password").read_text().strip()
    with httpx.Client(verify=trust(server.ca_file), timeout=30) as client:
        statuses = [
            client.post(
                server.url + "/v1/auth/login",
                json={"username": "nobody", "password": f"guess-{i}"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(12)
        ]
        assert 429 in statuses, f"a fresh X-Forwarded-For per guess dodged the throttle: {statuses}"
        assert client.post(server.url + "/v1/auth/login", json={"username": "admin", "password": password})


@pytest.mark.anyio
async def test_exactly_the_free_attempts_are_checked_when_guesses_arrive_together(tmp_path: Path) -> None:
    """In process, with the clock frozen (no lock runs out): 30 wrong passwords and the right
    one, all at once, for one user from one address. Exactly ``free`` are checked."""
    import asyncio

    from starlette.requests import Request

    from runtime.security.keystore import KeyStore
    from runtime.security.secretbox import SecretBox
    from runtime.services.auth import AuthService
    from runtime.services.base import Call
    from runtime.storage import MemoryBackend, Namespace

    backend, now = MemoryBackend(), lambda: 1_000.0
    keys = KeyStore(
        Namespace(backend, "_cluster"), SecretBox("s" * 32), token_ttl=60, rotation=3600, ca_lifetime=86400, clock=now
    )
    await keys.ensure_signing_keys()
    auth = AuthService(Namespace(backend, "auth"), keys, data_dir=tmp_path, admin_password="right-password", clock=now)
    await auth.start()
    request = Request({"type": "http", "method": "POST", "path": "/v1/auth/login", "headers": []})

    async def login(password: str) -> int:
        body = json.dumps({"username": "admin", "password": password}).encode()
        return (await auth.login(Call(request, {}, None, body, "10.0.0.66"))).status_code

    statuses = Counter(await asyncio.gather(*(login(f"wrong-{i}") for i in range(30)), login("right-password")))
    assert statuses[401] + statuses[200] == LoginThrottle.free and statuses[429] == 31 - LoginThrottle.free, statuses


async def _auth_service(tmp_path: Path, throttle: LoginThrottle | None = None) -> tuple[Any, Any]:
    from runtime.security.keystore import KeyStore
    from runtime.security.secretbox import SecretBox
    from runtime.services.auth import AuthService
    from runtime.storage import MemoryBackend, Namespace

    backend, now = MemoryBackend(), lambda: 1_000.0
    keys = KeyStore(
        Namespace(backend, "_cluster"), SecretBox("s" * 32), token_ttl=60, rotation=3600, ca_lifetime=86400, clock=now
    )
    await keys.ensure_signing_keys()
    auth = AuthService(
        Namespace(backend, "auth"),
        keys,
        data_dir=tmp_path,
        admin_password="right-password",
        clock=now,
        throttle=throttle,
    )
    await auth.start()
    return auth, keys


@pytest.mark.anyio
async def test_guesses_for_many_users_from_one_address_are_counted_as_they_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 concurrent failures for 120 distinct usernames from one address: before, all 120
    ran scrypt before the address was locked; now at most the address's budget plus its
    concurrent slots do, and never more than ``hashing`` hashes run at once."""
    import asyncio
    import threading

    from starlette.requests import Request

    from runtime.security import passwords
    from runtime.services import auth as auth_module
    from runtime.services.base import Call

    throttle = LoginThrottle(per_address_free=20)
    service, _ = await _auth_service(tmp_path, throttle)
    running, most, hashed, lock = [0], [0], [0], threading.Lock()
    real = passwords.verify_password

    def counted(password: str, stored: str | None) -> bool:
        with lock:
            running[0] += 1
            hashed[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(password, stored)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(auth_module, "verify_password", counted)
    request = Request({"type": "http", "method": "POST", "path": "/v1/auth/login", "headers": []})

    async def login(user: str) -> int:
        body = json.dumps({"username": user, "password": "wrong-password"}).encode()
        return int((await service.login(Call(request, {}, None, body, "10.0.0.66"))).status_code)

    statuses = Counter(await asyncio.gather(*(login(f"user{i}") for i in range(120))))
    assert hashed[0] <= throttle.per_address_free + throttle.per_address_hashing, (hashed[0], dict(statuses))
    assert statuses[429] >= 120 - hashed[0] and most[0] <= throttle.per_address_hashing


@pytest.mark.anyio
async def test_changing_ones_password_counts_against_the_same_throttle(tmp_path: Path) -> None:
    """With a stolen token, wrong current passwords at /v1/auth/password were never
    throttled (12 got 403, then the right one 204); now they lock like wrong logins."""
    from starlette.requests import Request

    from runtime.services.base import Call

    service, keys = await _auth_service(tmp_path)
    token, _ = keys.sign("admin", ("admin",))
    principal = keys.verify(token)
    request = Request({"type": "http", "method": "POST", "path": "/v1/auth/password", "headers": []})

    async def change(current: str) -> int:
        body = json.dumps({"current": current, "new": "a-new-password"}).encode()
        call = Call(request, {}, principal, body, "10.0.0.66")
        return int((await service.change_own_password(call)).status_code)

    statuses = [await change(f"guess-{i}") for i in range(8)] + [await change("right-password")]
    assert statuses[: LoginThrottle.free] == [403] * LoginThrottle.free
    assert set(statuses[LoginThrottle.free :]) == {429}, statuses

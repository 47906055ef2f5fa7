"""The auth service: users and roles in the auth namespace, tokens signed by the KeyStore.

Records: ``users/<name>`` -> ``{"password": <scrypt hash>, "roles": [...], "created_at": t}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.responses import Response

from runtime import http
from runtime.exceptions import Conflict, InvalidInput, StorageUnavailable
from runtime.files import write_atomic
from runtime.security.authz import ROLES, Principal
from runtime.security.keystore import KeyStore
from runtime.security.passwords import hash_password, verify_password
from runtime.security.throttle import LoginThrottle, keys_for
from runtime.services.base import Call, Handler, ensure_marker
from runtime.storage import Namespace

log = logging.getLogger("runtime.auth")
ADMIN = "admin"
_USERNAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")


class AuthService:
    name = "auth"
    schema_version = 1

    def __init__(
        self,
        ns: Namespace,
        keys: KeyStore,
        *,
        data_dir: Path,
        admin_password: str | None,
        throttle: LoginThrottle | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ns, self._keys, self._clock = ns, keys, clock
        self._data_dir, self._admin_password = data_dir, admin_password
        self._throttle = throttle if throttle is not None else LoginThrottle()  # an empty one has len 0

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {
            "auth.login": self.login,
            "auth.users.create": self.create_user,
            "auth.whoami": self.whoami,
            "auth.jwks": self.jwks,
            "auth.logout": self.logout,
            "auth.password": self.change_own_password,
            "auth.users.delete": self.delete_user,
            "auth.users.update": self.update_user,
            "auth.users.password": self.set_password,
        }

    async def start(self) -> None:
        await ensure_marker(self._ns, self.name, self.schema_version)
        await self._ensure_admin()

    async def _ensure_admin(self) -> None:
        if await self._ns.get(f"users/{ADMIN}") is not None:
            return
        password = self._admin_password or secrets.token_urlsafe(18)
        try:
            await self._create(ADMIN, password, [ADMIN])
        except Conflict:
            return  # another node created it first
        if self._admin_password is None:
            path = self._data_dir / "admin-password"
            write_atomic(path, password.encode() + b"\n", mode=0o600)
            log.warning("generated the first admin password", extra={"fields": {"written_to": str(path)}})

    async def _create(self, username: str, password: str, roles: list[str]) -> None:
        hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
        record = {"password": hashed, "roles": roles, "created_at": self._clock()}
        await self._ns.put(f"users/{username}", json.dumps(record).encode(), if_revision=0)

    async def login(self, call: Call) -> Response:
        body = _object(call.json(), "login body")
        username, password = _string(body, "username"), _string(body, "password")
        checked = await self._throttled_check(username, password, call.client)
        if isinstance(checked, Response):
            return checked
        token, expires_at = self._keys.sign(username, tuple(checked["roles"]))
        return http.json({"token": token, "expires_at": expires_at})

    async def _throttled_check(self, username: str, password: str, client: str) -> dict[str, Any] | Response:
        """Every password check, a login's or a password change's: in the throttle's turn, the
        lock looked at inside it, the outcome counted. The user's record, or the refusal. A
        disabled user's right password is refused like a wrong one (and counted like one), so
        the answer never confirms it."""
        throttle_keys = keys_for(username, client)
        async with self._throttle.turn(throttle_keys):  # check and outcome in one turn
            wait = self._throttle.retry_after(throttle_keys, self._clock())
            if wait > 0:
                return http.error(
                    429,
                    "too_many_attempts",
                    f"too many failed password checks; retry in {wait:.0f} s",
                    headers={"Retry-After": str(int(wait) + 1)},
                )
            record = await self._check(username, password)
            if record is None or record.get("disabled"):
                self._throttle.failed(throttle_keys, self._clock())
                return http.error(
                    401, "invalid_credentials", "unknown user or wrong password", headers={"WWW-Authenticate": "Bearer"}
                )
            self._throttle.succeeded(throttle_keys)
            return record

    async def _check(self, username: str, password: str) -> dict[str, Any] | None:
        """The user's record if the password is right; constant work whether or not it exists."""
        entry = await self._ns.get(f"users/{username}") if _USERNAME.match(username) else None
        record: dict[str, Any] | None = json.loads(entry.value) if entry else None
        async with self._throttle.hashing_slot():
            ok = await asyncio.get_running_loop().run_in_executor(
                None, verify_password, password, record["password"] if record else None
            )
        return record if ok and record is not None else None

    async def create_user(self, call: Call) -> Response:
        body = _object(call.json(), "user body")
        username, password = _string(body, "username"), _string(body, "password")
        roles = body.get("roles")
        if not _USERNAME.match(username):
            raise InvalidInput(f"username: expected 1-64 of A-Z a-z 0-9 _ . @ -, got {username[:70]!r}")
        _check_password(password)
        if not isinstance(roles, list) or not roles or any(not isinstance(r, str) or r not in ROLES for r in roles):
            raise InvalidInput(f"roles: expected a non-empty list from {', '.join(ROLES)}, got {str(roles)[:80]}")
        try:
            await self._create(username, password, sorted(set(roles)))
        except Conflict:
            return http.error(409, "exists", f"user {username!r} already exists")
        return http.json({"username": username, "roles": sorted(set(roles))}, status=201)

    # -- the lifecycle of users and tokens: every change revokes what it must, on every node --

    async def logout(self, call: Call) -> Response:
        principal = _caller(call)
        await self._keys.revoke_token(principal)
        return Response(status_code=204)

    async def change_own_password(self, call: Call) -> Response:
        principal = _caller(call)
        body = _object(call.json(), "password body")
        current, new = _string(body, "current"), _string(body, "new")
        checked = await self._throttled_check(principal.username, current, call.client)
        if isinstance(checked, Response):
            if checked.status_code == 401:  # the caller has a valid token: its password is what is wrong
                return http.error(403, "wrong_password", "the current password does not match")
            return checked
        return await self._replace_password(principal.username, new)

    async def set_password(self, call: Call) -> Response:
        return await self._replace_password(_user(call), _string(_object(call.json(), "password body"), "password"))

    async def _replace_password(self, username: str, password: str) -> Response:
        _check_password(password)
        hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
        if not await self._change(username, lambda record: {**record, "password": hashed}):
            return http.error(404, "not_found", f"no user {username!r}")
        await self._keys.revoke_user(username)
        return Response(status_code=204)

    async def update_user(self, call: Call) -> Response:
        username, body = _user(call), _object(call.json(), "user update")
        disabled = body.get("disabled")
        if set(body) != {"disabled"} or not isinstance(disabled, bool):
            raise InvalidInput('user update: expected {"disabled": true|false}')
        if username == ADMIN and disabled:
            raise InvalidInput(f"{ADMIN!r} cannot be disabled: it is the way back in")
        if not await self._change(username, lambda record: {**record, "disabled": disabled}):
            return http.error(404, "not_found", f"no user {username!r}")
        if disabled:
            await self._keys.revoke_user(username)
        return http.json({"username": username, "disabled": disabled})

    async def delete_user(self, call: Call) -> Response:
        username = _user(call)
        if username == ADMIN:
            raise InvalidInput(f"{ADMIN!r} cannot be deleted: it is the way back in")
        if not await self._ns.delete(f"users/{username}"):
            return http.error(404, "not_found", f"no user {username!r}")
        await self._keys.revoke_user(username)
        return Response(status_code=204)

    async def _change(self, username: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
        """Compare-and-swap a user's record; False if there is no such user."""
        for _ in range(20):
            entry = await self._ns.get(f"users/{username}")
            if entry is None:
                return False
            try:
                await self._ns.put(
                    entry.key, json.dumps(change(json.loads(entry.value))).encode(), if_revision=entry.revision
                )
                return True
            except Conflict:
                continue
        raise StorageUnavailable(f"user {username!r} changed 20 times during this update; try again", applied=False)

    async def whoami(self, call: Call) -> Response:
        principal = call.principal
        if principal is None:
            return http.error(401, "unauthenticated", "a bearer token is required")
        return http.json(
            {"username": principal.username, "roles": list(principal.roles), "expires_at": principal.expires_at}
        )

    async def jwks(self, call: Call) -> Response:
        return http.json(self._keys.jwks())


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what}: expected a JSON object")
    return value


def _string(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name}: expected a non-empty string")
    return value


def _check_password(password: str) -> None:
    if not 8 <= len(password) <= 1024:
        raise InvalidInput(f"password: expected 8 to 1024 characters, got {len(password)}")


def _user(call: Call) -> str:
    name = call.params["user"]
    if not _USERNAME.match(name):
        raise InvalidInput(f"user: expected 1-64 of A-Z a-z 0-9 _ . @ -, got {name[:70]!r}")
    return name


def _caller(call: Call) -> Principal:
    if call.principal is None:
        raise InvalidInput("this call needs a bearer token")
    return call.principal

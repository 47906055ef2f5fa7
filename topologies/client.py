"""An HTTP client for a whole cluster: trusts the cluster CA, carries a token, fails over.

When to try the next endpoint is :func:`topologies.retry.after`; anything it does not retry
is returned (or raised) to the caller, who knows whether a retry is safe. The client sticks
to the endpoint that answered last, so a healthy cluster sees one connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from topologies import retry
from topologies.retry import Outcome


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class ClusterClient:
    def __init__(
        self,
        endpoints: Sequence[str],
        ca_file: Path,
        credentials: Credentials | None = None,
        *,
        timeout: float = 5.0,
        login: bool = True,
        first: int = 0,
        resend_idempotent: bool = True,
    ) -> None:
        """``resend_idempotent``: after an unknown outcome, send a read or an unconditional PUT
        or DELETE to the next endpoint (a user's write right after a leader kill then succeeds);
        a recorder of histories turns it off, so that each call is one operation."""
        if not endpoints:
            raise ValueError("a cluster client needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.credentials = credentials
        context = ssl.create_default_context(cafile=str(ca_file))
        self._clients = {e: httpx.Client(base_url=e, verify=context, timeout=timeout) for e in self.endpoints}
        self._current = first % len(self.endpoints)  # spread many clients over the endpoints
        self.resend_idempotent = resend_idempotent
        self.token: str | None = None
        if login and credentials is not None:
            self.login()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def login(self) -> str:
        if self.credentials is None:
            raise ValueError("no credentials to log in with")
        body = {"username": self.credentials.username, "password": self.credentials.password}
        reply = self.request("POST", "/v1/auth/login", json=body, authenticate=False)
        reply.raise_for_status()
        self.token = str(reply.json()["token"])
        return self.token

    def request(self, method: str, path: str, *, authenticate: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if authenticate and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        reply = self._send(method, path, headers, kwargs)
        if reply.status_code == 401 and authenticate and self.credentials is not None:
            headers["Authorization"] = f"Bearer {self.login()}"
            reply = self._send(method, path, headers, kwargs)
        return reply

    def _send(self, method: str, path: str, headers: dict[str, str], kwargs: dict[str, Any]) -> httpx.Response:
        resend = self.resend_idempotent and retry.idempotent(method, headers)
        last: Exception | None = None
        reply: httpx.Response | None = None
        for step in range(len(self.endpoints)):
            index = (self._current + step) % len(self.endpoints)
            try:
                reply = self._clients[self.endpoints[index]].request(method, path, headers=headers, **kwargs)
                outcome = retry.of_reply(reply.status_code, reply.text)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last, outcome = exc, Outcome.NOT_SENT
            except httpx.TransportError as exc:
                last, outcome = exc, Outcome.LOST
            decision = retry.after(method, outcome, idempotent=resend)
            if decision.rotate:
                self._current = (index + 1) % len(self.endpoints)
            if decision.retry_elsewhere:
                continue
            if outcome is Outcome.LOST and last is not None:
                raise last
            if reply is not None:
                return reply
        if reply is not None:
            return reply
        raise last if last else httpx.ConnectError("no endpoint")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

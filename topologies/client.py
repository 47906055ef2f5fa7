"""An HTTP client for a whole cluster: trusts the cluster CA, carries a token, fails over.

When to try the next endpoint is :func:`topologies.retry.after`; anything it does not retry
is returned (or raised) to the caller, who knows whether a retry is safe. The client sticks
to the endpoint that answered last, so a healthy cluster sees one connection.
"""

from __future__ import annotations

import ssl
import time
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
        budget: float | None = None,
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
        # a request that may be resent is resent, round after round, for this long (0: one round)
        self.budget = timeout if budget is None else budget
        self.token: str | None = None
        if login and credentials is not None:
            try:
                self.login()
            except BaseException:
                self.close()  # a client that could not log in leaves no connection open
                raise

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
        # a login may be sent twice (it changes nothing a caller sees but the token it gets): a
        # connection dropped before the answer (a port-forward whose pod just went) is resent
        reply = self.request("POST", "/v1/auth/login", json=body, authenticate=False, resend=True)
        reply.raise_for_status()
        self.token = str(reply.json()["token"])
        return self.token

    def request(
        self, method: str, path: str, *, authenticate: bool = True, resend: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if authenticate and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        reply = self._send(method, path, headers, kwargs, resend)
        if reply.status_code == 401 and authenticate and self.credentials is not None:
            headers["Authorization"] = f"Bearer {self.login()}"
            reply = self._send(method, path, headers, kwargs, resend)
        return reply

    def _send(
        self, method: str, path: str, headers: dict[str, str], kwargs: dict[str, Any], resend: bool | None = None
    ) -> httpx.Response:
        """Send to the current endpoint; while :func:`retry.after` says the request may go
        elsewhere, go on to the next, round after round (a short pause between rounds) until
        the client's timeout budget is spent. Then the last answer, or the last error."""
        if resend is None:
            resend = self.resend_idempotent and retry.idempotent(method, headers)
        ends = time.monotonic() + self.budget
        last: Exception | None = None
        reply: httpx.Response | None = None
        for step in range(len(self.endpoints) * 20):
            if step and step % len(self.endpoints) == 0:
                if time.monotonic() >= ends:
                    break
                time.sleep(0.1)  # every endpoint refused: give an election a moment
            index = self._current % len(self.endpoints)
            try:
                reply = self._clients[self.endpoints[index]].request(method, path, headers=headers, **kwargs)
                outcome, last = retry.of_reply(reply.status_code, reply.text), None
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last, outcome = exc, Outcome.NOT_SENT
            except httpx.TransportError as exc:
                last, outcome = exc, Outcome.LOST
            decision = retry.after(method, outcome, idempotent=resend)
            if decision.rotate:
                self._current = (index + 1) % len(self.endpoints)
            if not decision.retry_elsewhere:
                break
        if last is not None and (reply is None or outcome is Outcome.LOST):
            raise last
        if reply is None:
            raise httpx.ConnectError("no endpoint")
        return reply

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

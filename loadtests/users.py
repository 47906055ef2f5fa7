"""The simulated client: logs in once, then a weighted mix of kv and queue calls."""

from __future__ import annotations

import random
import time
from typing import Any

import gevent.ssl
from locust import FastHttpUser, between, task
from locust.env import Environment

from topologies import retry
from topologies.retry import Outcome


class RuntimeUser(FastHttpUser):
    """kv GET most, PUT, CAS, list; queue enqueue/claim/ack. Users are spread over every
    endpoint and, like an HA client that knows every address, move to the next one when a
    connection fails (:func:`topologies.retry.after`; the failed request still counts)."""

    abstract = True
    wait_time = between(0.005, 0.05)
    insecure = False
    keys = 200

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        self.endpoints: list[str] = list(getattr(options, "endpoints", None) or [environment.host or ""])
        self._endpoint = random.randrange(len(self.endpoints))  # spread users over the endpoints
        self.host = self.endpoints[self._endpoint % len(self.endpoints)]
        self.ca_file = getattr(options, "ca_file", "") or None
        self.password = getattr(options, "admin_password", "")
        self.ssl_context_factory = lambda **_: gevent.ssl.create_default_context(cafile=self.ca_file)
        super().__init__(environment)
        self.prefix = f"load-{getattr(options, 'load_mode', 'run')}"

    def context(self) -> dict[str, Any]:
        """Locust hands this to every request event: :func:`fail_over` finds the user by it."""
        return {"user": self}

    def after_failure(self, method: str, error: BaseException) -> None:
        if not isinstance(error, OSError) or len(self.endpoints) < 2:
            return
        outcome = Outcome.NOT_SENT if isinstance(error, ConnectionRefusedError) else Outcome.LOST
        if retry.after(method, outcome).rotate:
            self._next_endpoint()

    def _next_endpoint(self) -> None:
        self._endpoint += 1
        self.client.base_url = self.endpoints[self._endpoint % len(self.endpoints)]

    def on_start(self) -> None:
        """Log in, on the next endpoint if one does not answer (the failed try counts): a user
        without a token would fail every call."""
        for _ in range(len(self.endpoints)):
            with self.client.post(
                "/v1/auth/login", json={"username": "admin", "password": self.password}, catch_response=True
            ) as reply:
                if reply.status_code == 200:
                    self.client.auth_header = f"Bearer {reply.json()['token']}"
                    return
                reply.failure(f"login: HTTP {reply.status_code}")
                if reply.status_code != 0:
                    return  # an answer (a wrong password): another endpoint would say the same
            self._next_endpoint()

    def key(self) -> str:
        return f"{self.prefix}/{random.randrange(self.keys)}"

    @task(50)
    def kv_get(self) -> None:
        with self.client.get(f"/v1/kv/{self.key()}", name="/v1/kv/[key] GET", catch_response=True) as reply:
            if reply.status_code in (200, 404):
                reply.success()

    @task(15)
    def kv_put(self) -> None:
        self.client.put(f"/v1/kv/{self.key()}", data=random.randbytes(32).hex(), name="/v1/kv/[key] PUT")

    @task(8)
    def kv_cas(self) -> None:
        key = self.key()
        with self.client.get(f"/v1/kv/{key}", name="/v1/kv/[key] GET (cas)", catch_response=True) as read:
            if read.status_code == 404:
                read.success()
                headers = {"If-None-Match": "*"}
            elif read.status_code == 200:
                headers = {"If-Match": read.headers["etag"]}
            else:
                return
        with self.client.put(
            f"/v1/kv/{key}", data="cas", headers=headers, name="/v1/kv/[key] PUT If-Match", catch_response=True
        ) as reply:
            if reply.status_code in (200, 412):  # losing a CAS race is a correct answer
                reply.success()

    @task(5)
    def kv_list(self) -> None:
        self.client.get(f"/v1/kv?prefix={self.prefix}/1&limit=20", name="/v1/kv?prefix")

    @task(6)
    def enqueue(self) -> None:
        self.client.post(f"/v1/queue/{self.prefix}/jobs", json={"t": time.time()}, name="/v1/queue/[q]/jobs")

    @task(6)
    def claim_and_ack(self) -> None:
        with self.client.post(
            f"/v1/queue/{self.prefix}/claim?lease=30", name="/v1/queue/[q]/claim", catch_response=True
        ) as claim:
            if claim.status_code == 204:
                claim.success()
                return
            if claim.status_code != 200:
                return
            job = claim.json()
        self.client.post(
            f"/v1/queue/{self.prefix}/jobs/{job['id']}/ack",
            json={"lease_id": job["lease_id"]},
            name="/v1/queue/[q]/jobs/[id]/ack",
        )


def fail_over(request_type: str, exception: BaseException | None = None, context: Any = None, **_: Any) -> None:
    """A request-event listener: the next request of a user whose connection failed goes to
    the next endpoint (the failed one still counts as failed)."""
    user = (context or {}).get("user")
    if exception is not None and isinstance(user, RuntimeUser):
        user.after_failure(request_type, exception)

"""Fixtures of the runtime's tests: one real runtime process per test module, and a client
of it logged in as admin."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RuntimeProcess, running


@pytest.fixture(scope="module")
def server() -> Iterator[RuntimeProcess]:
    with running() as proc:
        yield proc


@pytest.fixture(scope="module")
def api(server: RuntimeProcess) -> Iterator[httpx.Client]:
    with server.client(server.login()) as client:
        yield client

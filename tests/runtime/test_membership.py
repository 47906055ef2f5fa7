"""Replacing an etcd member, against three real members on loopback: remove one (it stops
itself), add a member at its address, start a new process there on an empty data dir with
``--initial-cluster-state existing`` (what ``db_initial_cluster_state`` passes), and it has
every key written before, while the two others served all along."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from runtime.storage import etcd_membership
from tests.conftest import EtcdCluster, _healthy
from topologies.wait import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.anyio]


def _put(url: str, key: str, value: str) -> None:
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    httpx.post(url + "/v3/kv/put", json={"key": b64(key), "value": b64(value)}, timeout=2).raise_for_status()


def _sent(url: str, key: str, value: str) -> bool:
    try:
        _put(url, key, value)
    except httpx.HTTPError:
        return False
    return True


def _get(url: str, key: str) -> str | None:
    import base64

    reply = httpx.post(
        url + "/v3/kv/range", json={"key": base64.b64encode(key.encode()).decode(), "serializable": True}, timeout=5
    )
    kvs = reply.json().get("kvs", [])
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


async def test_a_member_removed_and_added_again_joins_on_an_empty_data_dir(etcd3: EtcdCluster, tmp_path: Path) -> None:
    if not shutil.which("etcd"):
        pytest.skip("needs the host's etcd binary (Debian etcd-server)")
    first, _, last = etcd3.members
    _put(first.url, "before", "kept")
    others = [m.url for m in etcd3.members if m is not last]

    said = await etcd_membership.remove(others, None, last.name)
    assert said.startswith(f"removed member '{last.name}'"), said
    assert (await etcd_membership.remove(others, None, last.name)).startswith("no member"), "idempotent"
    last.kill()
    # a quorum of the two that are left; a proposal in flight when the removed member was the
    # leader is dropped by etcd (the client's to send again), and the two elect a leader in ~1 s
    wait_until(lambda: _sent(first.url, "during", "two members"), timeout=30, interval=0.2, message="a put")

    peer = f"http://127.0.0.1:{last.peer_port}"
    said = await etcd_membership.add(others, None, last.name, peer)
    assert said.startswith(f"added member '{last.name}'"), said
    assert "already added" in await etcd_membership.add(others, None, last.name, peer), "idempotent"

    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in etcd3.members)
    argv = last.argv(initial, str(tmp_path / "fresh"))
    argv[argv.index("--initial-cluster-state") + 1] = "existing"
    with open(tmp_path / "fresh.log", "ab") as log:
        last.process = subprocess.Popen(["etcd", *argv], stdout=log, stderr=log)
    wait_until(lambda: _healthy(last.url), timeout=30, interval=0.2, message="the new member healthy")
    assert _get(last.url, "before") == "kept" and _get(last.url, "during") == "two members"


async def test_the_only_member_is_not_removed(etcd: EtcdCluster) -> None:
    with pytest.raises(ValueError, match="only member"):
        await etcd_membership.remove(etcd.endpoints, None, etcd.members[0].name)


async def test_an_address_that_is_another_members_is_refused(etcd3: EtcdCluster) -> None:
    taken = f"http://127.0.0.1:{etcd3.members[1].peer_port}"
    with pytest.raises(ValueError, match="remove it first"):
        await etcd_membership.add(etcd3.endpoints, None, "newcomer", taken)

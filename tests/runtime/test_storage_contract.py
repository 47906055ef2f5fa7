"""One contract, every backend: memory (the fake), SQLite, and a real etcd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runtime.exceptions import Conflict, InvalidInput, StorageUnavailable, ValueTooLarge
from runtime.storage import Backend, EtcdBackend, MemoryBackend, Namespace, SqliteBackend
from runtime.storage.keys import VALUE_MAX_BYTES

pytestmark = pytest.mark.anyio
_counter = iter(range(1_000_000))


@pytest.fixture(params=["memory", "sqlite", "etcd", "etcd-1-of-3-dead"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made: Backend
    if request.param == "memory":
        made = MemoryBackend()
    elif request.param == "sqlite":
        made = SqliteBackend(tmp_path / "db.sqlite")
    elif request.param == "etcd":
        made = EtcdBackend(request.getfixturevalue("etcd").endpoints)
    else:
        made = EtcdBackend(request.getfixturevalue("etcd_degraded").endpoints)
    await made.open()
    yield made
    await made.close()


@pytest.fixture
def ns(backend: Backend) -> Callable[[str], Namespace]:
    """Fresh namespace names per test, so tests on a shared etcd never see each other."""

    def make(base: str = "t") -> Namespace:
        return Namespace(backend, f"{base}{next(_counter)}")

    return make


async def test_put_then_get_returns_value_and_revision(ns: Callable[[str], Namespace]) -> None:
    space = ns("t")
    revision = await space.put("a", b"1")
    entry = await space.get("a")
    assert entry is not None and (entry.key, entry.value, entry.revision) == ("a", b"1", revision)


async def test_revisions_grow_with_every_write(ns: Callable[[str], Namespace]) -> None:
    space = ns("t")
    first = await space.put("a", b"1")
    second = await space.put("a", b"2")
    third = await space.put("b", b"3")
    assert first < second < third


async def test_get_of_absent_key_is_none(ns: Callable[[str], Namespace]) -> None:
    assert await ns("t").get("missing") is None


async def test_compare_and_swap_on_revision(ns: Callable[[str], Namespace]) -> None:
    space = ns("t")
    revision = await space.put("a", b"1")
    with pytest.raises(Conflict) as lost:
        await space.put("a", b"x", if_revision=revision + 100)
    assert lost.value.current == revision
    newer = await space.put("a", b"2", if_revision=revision)
    assert (await space.get("a")).value == b"2"  # type: ignore[union-attr]
    assert newer > revision


async def test_create_only_with_revision_zero(ns: Callable[[str], Namespace]) -> None:
    space = ns("t")
    await space.put("a", b"1", if_revision=0)
    with pytest.raises(Conflict):
        await space.put("a", b"2", if_revision=0)
    assert (await space.get("a")).value == b"1"  # type: ignore[union-attr]


async def test_delete_plain_and_conditional(ns: Callable[[str], Namespace]) -> None:
    space = ns("t")
    revision = await space.put("a", b"1")
    assert await space.delete("missing") is False
    with pytest.raises(Conflict):
        await space.delete("a", if_revision=revision + 1)
    assert await space.delete("a", if_revision=revision) is True
    assert await space.get("a") is None
    assert await space.delete("a") is False


async def test_range_by_prefix_in_key_order_with_paging(ns: Callable[[str], Namespace]) -> None:
    space = ns("t")
    for key in ["p/c", "p/a", "q/z", "p/b", "p", "pa"]:
        await space.put(key, key.encode())
    assert [e.key for e in await space.range("p/")] == ["p/a", "p/b", "p/c"]
    assert [e.key for e in await space.range("p/", limit=2)] == ["p/a", "p/b"]
    assert [e.key for e in await space.range("p/", after="p/b")] == ["p/c"]
    assert [e.key for e in await space.range("")] == ["p", "p/a", "p/b", "p/c", "pa", "q/z"]


async def test_namespaces_never_see_each_other(ns: Callable[[str], Namespace]) -> None:
    mine, theirs = ns("a"), ns("b")
    await theirs.put("secret", b"theirs")
    await theirs.put("../x", b"theirs")
    await mine.put("secret", b"mine")
    assert (await mine.get("secret")).value == b"mine"  # type: ignore[union-attr]
    assert [e.key for e in await mine.range("")] == ["secret"]
    for sneaky in ("../secret", f"/{theirs.name}/secret", f"../{theirs.name}/secret", "/modematrix/b/secret"):
        assert await mine.get(sneaky) is None
    assert await mine.delete("secret") is True
    assert (await theirs.get("secret")).value == b"theirs"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["", "a\x00b", "tab\there", "x" * 2000, "del\x7f"])
async def test_bad_keys_are_refused(ns: Callable[[str], Namespace], bad: str) -> None:
    with pytest.raises(InvalidInput):
        await ns("t").put(bad, b"v")


async def test_unicode_keys_and_values_at_the_size_limit(ns: Callable[[str], Namespace]) -> None:
    space = ns("t")
    await space.put("ключ/日本", b"\x00\xff" * (VALUE_MAX_BYTES // 2))
    entry = await space.get("ключ/日本")
    assert entry is not None and len(entry.value) == VALUE_MAX_BYTES
    with pytest.raises(ValueTooLarge):
        await space.put("big", b"x" * (VALUE_MAX_BYTES + 1))
    assert await space.get("big") is None


async def test_sqlite_survives_a_restart(tmp_path: Path) -> None:
    first = SqliteBackend(tmp_path / "db")
    await first.open()
    revision = await Namespace(first, "kv").put("a", b"durable")
    await first.close()
    second = SqliteBackend(tmp_path / "db")
    await second.open()
    entry = await Namespace(second, "kv").get("a")
    assert entry is not None and entry.value == b"durable" and entry.revision == revision
    assert await Namespace(second, "kv").put("b", b"x") > revision
    await second.close()


@pytest.mark.etcd
async def test_etcd_leader_killed_mid_use_keeps_acknowledged_writes(etcd3: object) -> None:
    """Kill a member while the client uses it: a write in flight may end as unknown
    (StorageUnavailable), never as a wrong answer; once a new leader is elected every
    acknowledged write is there and CAS still works."""
    import anyio

    cluster = etcd3
    backend = EtcdBackend(cluster.endpoints)  # type: ignore[attr-defined]
    await backend.open()
    space = Namespace(backend, "kv")
    before = await space.put("a", b"1")
    cluster.members[0].kill()  # type: ignore[attr-defined]  # the endpoint the client tries first
    outcome = "unknown"
    try:
        await space.put("b", b"maybe")
        outcome = "acknowledged"
    except StorageUnavailable:
        pass

    async def writable() -> bool:
        try:
            await space.put("probe", b"x")
            return True
        except StorageUnavailable:
            return False

    for _ in range(100):
        if await writable():
            break
        await anyio.sleep(0.2)
    assert (await space.get("a")).value == b"1"  # type: ignore[union-attr]
    if outcome == "acknowledged":
        assert (await space.get("b")).value == b"maybe"  # type: ignore[union-attr]
    await space.put("a", b"2", if_revision=before)
    with pytest.raises(Conflict):
        await space.put("a", b"3", if_revision=before)
    await backend.close()


@pytest.mark.etcd
async def test_etcd_without_quorum_answers_every_write_unknown_then_refused(etcd3: object) -> None:
    """Two of three members dead. Until the survivor notices (one election timeout) it takes
    proposals that can never commit: those writes end unknown. After that it refuses before
    proposing, and the error says nothing was applied. Every write ends: a guard of five
    deadlines tells a hang from an answer; the seconds each took are printed, not asserted."""
    cluster = etcd3
    backend = EtcdBackend(cluster.endpoints)  # type: ignore[attr-defined]
    await backend.open()
    space = Namespace(backend, "kv")
    await space.put("a", b"1")
    cluster.members[0].kill()  # type: ignore[attr-defined]
    cluster.members[1].kill()  # type: ignore[attr-defined]
    outcomes: list[tuple[bool | None, float]] = []
    for _ in range(10):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as failed:
            await asyncio.wait_for(space.put("a", b"2"), 5 * backend.deadline)
        outcomes.append((failed.value.applied, time.monotonic() - started))
        if failed.value.applied is False:
            break
    print(f"\nno quorum: (applied, seconds) per write: {outcomes}")
    assert outcomes[-1][0] is False, f"the survivor never refused before proposing: {outcomes}"
    await backend.close()


@pytest.mark.etcd
async def test_a_hung_member_makes_a_write_unknown_not_a_hang(etcd3: object) -> None:
    """The only endpoint is frozen (SIGSTOP): the write's fate is unknown, said rather than
    waited on (a guard five deadlines long tells a hang from an answer; how soon it comes is
    not asserted)."""
    cluster = etcd3
    backend = EtcdBackend([cluster.members[2].url])  # type: ignore[attr-defined]
    await backend.open()
    space = Namespace(backend, "kv")
    await space.put("a", b"1")
    cluster.members[2].pause()  # type: ignore[attr-defined]
    hang_guard = 5 * backend.deadline
    try:
        with pytest.raises(StorageUnavailable) as unknown:
            await asyncio.wait_for(space.put("a", b"2"), hang_guard)
        assert unknown.value.applied is None and "outcome unknown" in str(unknown.value)
        with pytest.raises(StorageUnavailable) as read:
            await asyncio.wait_for(space.get("a"), hang_guard)
        assert read.value.applied is False, "a read never applies anything"
    finally:
        cluster.members[2].resume()  # type: ignore[attr-defined]
    await backend.close()


async def test_sqlite_concurrent_writes_share_commits_and_each_is_durable(tmp_path: Path) -> None:
    """Group commit: 200 concurrent puts take fewer commits than puts; every one is acknowledged
    with its own revision, a lost CAS in a batch fails alone, and all are there after reopening."""
    import asyncio

    backend = SqliteBackend(tmp_path / "db.sqlite")
    await backend.open()
    space = Namespace(backend, "kv")
    await space.put("cas", b"0")
    writes = [space.put(f"k{i}", str(i).encode()) for i in range(200)]
    doomed = space.put("cas", b"lost", if_revision=999_999)
    results = await asyncio.gather(*writes, doomed, return_exceptions=True)
    revisions, lost = results[:-1], results[-1]
    assert isinstance(lost, Conflict)
    assert all(isinstance(r, int) for r in revisions) and len(set(revisions)) == 200
    assert backend.batches < 200, f"{backend.batches} commits for 200 concurrent writes"
    print(f"\ngroup commit: 200 concurrent puts in {backend.batches} commits")
    await backend.close()
    again = SqliteBackend(tmp_path / "db.sqlite")
    await again.open()
    assert [e.value for e in await Namespace(again, "kv").range("k", limit=1000)] == sorted(
        str(i).encode() for i in range(200)
    )
    assert (await Namespace(again, "kv").get("cas")).value == b"0"  # type: ignore[union-attr]
    await again.close()


async def test_changes_wake_at_once_then_on_every_write_of_the_key(backend: Backend) -> None:
    """Every backend: a follower reads the current state first, then hears each write of its
    key by any client of the same DB."""
    import asyncio

    name = f"t{next(_counter)}"
    follower, writer = Namespace(backend, name), Namespace(backend, name)
    wakes = aiter(follower.changes("watched"))
    await asyncio.wait_for(anext(wakes), 5)  # at once: read what is there
    await writer.put("other", b"x")
    await writer.put("watched", b"1")
    await asyncio.wait_for(anext(wakes), 5)
    assert (await follower.get("watched")).value == b"1"  # type: ignore[union-attr]
    await writer.delete("watched")
    await asyncio.wait_for(anext(wakes), 5)
    assert await follower.get("watched") is None
    await wakes.aclose()  # type: ignore[attr-defined]


async def test_a_revision_no_key_can_have_is_a_mismatch(ns: Callable[[str], Namespace]) -> None:
    """If-Match "9223372036854775808" (past int64) was a 500 on etcd and a 412 on SQLite."""
    space = ns("t")
    await space.put("a", b"1")
    for too_big in (2**63, 10**19 - 1):
        with pytest.raises(Conflict):
            await space.put("a", b"2", if_revision=too_big)
        with pytest.raises(Conflict):
            await space.delete("a", if_revision=too_big)
        with pytest.raises(Conflict):
            await space.put("absent", b"2", if_revision=too_big)
    assert (await space.get("a")).value == b"1"  # type: ignore[union-attr]


async def test_a_watch_names_the_keys_that_changed_under_its_prefix(backend: Backend) -> None:
    """Every backend: None first (read everything), then the keys written or deleted under
    the prefix, by any client; keys outside it are not named."""
    import asyncio

    name = f"t{next(_counter)}"
    watcher, writer = Namespace(backend, name), Namespace(backend, name)
    events = aiter(watcher.watch("p/"))
    assert await asyncio.wait_for(anext(events), 5) is None
    await writer.put("q/outside", b"x")
    await writer.put("p/a", b"1")
    await writer.put("p/b", b"2")
    await writer.delete("p/a")
    seen: list[str] = []
    while seen != ["p/a", "p/b", "p/a"]:
        found = await asyncio.wait_for(anext(events), 5)
        assert found is not None
        seen += found
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_keys_only_range_reads_no_value(ns: Callable[[str], Namespace]) -> None:
    """Listing keys must not read values (a list of 1000 one-MiB values read a gigabyte)."""
    space = ns("t")
    await space.put("a", b"x" * 1000)
    await space.put("b", b"y")
    listed = await space.range("", keys_only=True)
    assert [(e.key, e.value) for e in listed] == [("a", b""), ("b", b"")]
    assert [e.revision for e in listed] == [e.revision for e in await space.range("")]

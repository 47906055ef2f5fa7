"""SQLite with no room left: a write is refused as StorageFull (507 at the API), rolled back,
the writes acknowledged before stay, reads go on, and writes succeed again once there is room,
without reopening. The room is SQLite's own page limit here (``PRAGMA max_page_count``, which
fails a write with SQLITE_FULL, as a full disk does); the full file system itself is the
``full-disk`` scenario's, on a real node (scenarios/test_full_disk.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runtime.exceptions import StorageFull, StorageUnavailable
from runtime.storage import Namespace, SqliteBackend

pytestmark = pytest.mark.anyio


async def test_a_full_database_refuses_writes_keeps_what_it_had_and_recovers(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "db")
    await backend.open()
    kv = Namespace(backend, "kv")
    try:
        acknowledged = {}
        for i in range(5):
            acknowledged[f"k{i}"] = await kv.put(f"k{i}", b"v" * 1000)
        writer = backend._writer
        assert writer is not None
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageFull, match="full"):
            for i in range(1000):  # a few pages of room may be left in the last ones
                await kv.put(f"big{i}", b"x" * 4000)
        for key, revision in acknowledged.items():  # reads go on, and nothing acknowledged is gone
            entry = await kv.get(key)
            assert entry is not None and entry.revision == revision
        writer.execute("PRAGMA max_page_count = 1000000")  # room again
        assert await kv.put("after", b"ok") > max(acknowledged.values())
    finally:
        await backend.close()


async def test_a_write_failing_on_io_makes_the_backend_not_ready_until_a_write_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing disk (SQLITE_IOERR) is not a full one: readiness then tries a write itself,
    and says not ready while that fails. The real disk is the ``io-errors`` scenario's, on
    lazyfs (scenarios/test_lazy_fs.py); here SQLite's error is raised where its write is."""
    from runtime.storage import sqlite as module

    backend = SqliteBackend(tmp_path / "db")
    await backend.open()
    kv = Namespace(backend, "kv")

    def failing(db: sqlite3.Connection) -> None:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = 778  # SQLITE_IOERR_WRITE
        raise error

    try:
        await kv.put("before", b"v")
        await backend.ping()
        monkeypatch.setattr(module, "_touch", failing)
        with pytest.raises(StorageUnavailable, match="I/O"):
            await backend._write(("kv", "x"), failing)
        with pytest.raises(StorageUnavailable, match=r"writes are failing: .*disk I/O error"):
            await backend.ping()
        monkeypatch.undo()  # the disk works again
        await backend.ping()
        assert backend.write_failure is None
        assert (await kv.get("before")) is not None
    finally:
        await backend.close()

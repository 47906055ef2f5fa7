"""SQLite with no room left: a write is refused as StorageFull (507 at the API), rolled back,
the writes acknowledged before stay, reads go on, and writes succeed again once there is room,
without reopening. The room is SQLite's own page limit here (``PRAGMA max_page_count``, which
fails a write with SQLITE_FULL, as a full disk does); the full file system itself is the
``full-disk`` scenario's, on a real node (scenarios/test_full_disk.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.exceptions import StorageFull
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

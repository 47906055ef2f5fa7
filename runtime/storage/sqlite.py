"""The embedded backend: one SQLite file in WAL mode, fsync on every commit.

All statements run on one dedicated thread, so writes are serialised and the revision
counter (stored in the DB, not in memory) is strictly increasing even across restarts.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from runtime.exceptions import Conflict, StorageUnavailable
from runtime.storage.base import Entry, prefix_end, range_start

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    ns TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, revision INTEGER NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters VALUES ('revision', 0);
"""


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(lambda: self._db.execute("SELECT 1").fetchone())

    async def get(self, ns: str, key: str) -> Entry | None:
        row = await self._run(self._select_one, ns, key.encode())
        return Entry(key, row[0], row[1]) if row else None

    async def put(self, ns: str, key: str, value: bytes, if_revision: int | None) -> int:
        return await self._run(self._put, ns, key, value, if_revision)

    async def delete(self, ns: str, key: str, if_revision: int | None) -> bool:
        return await self._run(self._delete, ns, key, if_revision)

    async def range(self, ns: str, prefix: str, after: str | None, limit: int) -> list[Entry]:
        rows = await self._run(self._range, ns, range_start(prefix, after), prefix_end(prefix.encode()), limit)
        return [Entry(bytes(k).decode(), v, r) for k, v, r in rows]

    # -- on the DB thread -------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageUnavailable(f"SQLite database {self.path} is not open")
        return self._conn

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def _select_one(self, ns: str, key: bytes) -> tuple[bytes, int] | None:
        row = self._db.execute("SELECT value, revision FROM entries WHERE ns=? AND key=?", (ns, key)).fetchone()
        return (row[0], row[1]) if row else None

    def _write(self, ns: str, key: str, if_revision: int | None, action: Callable[[int], object]) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            found = self._select_one(ns, key.encode())
            current = found[1] if found else 0
            if if_revision is not None and current != if_revision:
                raise Conflict(key, if_revision, current)
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'revision'")
            revision: int = db.execute("SELECT value FROM counters WHERE name = 'revision'").fetchone()[0]
            action(revision)
            db.execute("COMMIT")
            return revision
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _put(self, ns: str, key: str, value: bytes, if_revision: int | None) -> int:
        def write(revision: int) -> None:
            self._db.execute(
                "INSERT OR REPLACE INTO entries (ns, key, value, revision) VALUES (?, ?, ?, ?)",
                (ns, key.encode(), value, revision),
            )

        return self._write(ns, key, if_revision, write)

    def _delete(self, ns: str, key: str, if_revision: int | None) -> bool:
        found = self._select_one(ns, key.encode())
        current = found[1] if found else 0
        if if_revision is not None and current != if_revision:
            raise Conflict(key, if_revision, current)
        if found is None:
            return False
        self._write(
            ns, key, current, lambda _: self._db.execute("DELETE FROM entries WHERE ns=? AND key=?", (ns, key.encode()))
        )
        return True

    def _range(self, ns: str, start: bytes, end: bytes | None, limit: int) -> list[tuple[bytes, bytes, int]]:
        sql = "SELECT key, value, revision FROM entries WHERE ns=? AND key>=?"
        args: list[object] = [ns, start]
        if end is not None:
            sql += " AND key<?"
            args.append(end)
        rows = self._db.execute(sql + " ORDER BY key LIMIT ?", (*args, limit)).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"SQLite {self.path}: {exc}") from exc

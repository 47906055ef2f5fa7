"""The embedded backend: one SQLite file in WAL mode, fsync on every commit, group commit.

Writes go to one writer thread. While it commits a batch, new writes queue up; the next
batch takes all of them into one transaction, so concurrent writes share one fsync. Each
write in a batch is checked and applied on its own (a lost compare-and-swap fails only that
write), and none is acknowledged before its batch's COMMIT returned. Reads run on their own
connection, on the event loop: WAL lets them proceed while a batch commits, and they see
every write acknowledged before they started.

A batch that failed on an I/O error (SQLITE_IOERR: a failing disk) makes the node not ready
(:meth:`SqliteBackend.ping`) until a write commits again: readiness then tries one itself.

The revision counter lives in the DB, not in memory, so it grows strictly across restarts.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from runtime.exceptions import Conflict, StorageFull, StorageUnavailable
from runtime.files import private_dir
from runtime.storage.base import Entry, prefix_end, range_start
from runtime.storage.changes import LocalChanges

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]

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

    def __init__(self, path: Path, *, batch_max: int = 512) -> None:
        self.path, self.batch_max = path, batch_max
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-write")
        self._pending: list[tuple[Write, asyncio.Future[Any], tuple[str, str]]] = []
        self._changes = LocalChanges()
        self._committer: asyncio.Task[None] | None = None
        self.batches = 0  # commits so far: with concurrent writers, fewer than the writes
        self.write_failure: str | None = None  # the last batch's I/O error, until a batch commits

    async def open(self) -> None:
        self._writer = await self._on(self._write_thread, self._open_writer)
        self._reader = self._connect()

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._writer is not None:
            await self._on(self._write_thread, self._writer.close)
        if self._reader is not None:
            self._reader.close()
        self._writer = self._reader = None
        self._write_thread.shutdown(wait=True)

    async def ping(self) -> None:
        """Reads answer; and after a write failed on I/O, a write commits (one that changes
        nothing: the revision counter set to itself, so a page and an fsync)."""
        await self._read(lambda db: db.execute("SELECT 1").fetchone())
        if self.write_failure is not None:
            try:
                await self._write(("", ""), _touch)
            except StorageUnavailable as exc:
                raise StorageUnavailable(f"writes are failing: {exc}", applied=False) from exc

    async def get(self, ns: str, key: str) -> Entry | None:
        row = await self._read(lambda db: _select_one(db, ns, key.encode()))
        return Entry(key, row[0], row[1]) if row else None

    async def put(self, ns: str, key: str, value: bytes, if_revision: int | None) -> int:
        revision: int = await self._write((ns, key), lambda db: _put(db, ns, key, value, if_revision))
        return revision

    async def delete(self, ns: str, key: str, if_revision: int | None) -> bool:
        deleted: bool = await self._write((ns, key), lambda db: _delete(db, ns, key, if_revision))
        return deleted

    def changes(self, ns: str, key: str) -> AsyncIterator[None]:
        """Only this process writes the file: a committed write of ``key`` wakes its followers."""
        return self._changes.follow(ns, key)

    def watch(self, ns: str, prefix: str) -> AsyncIterator[Sequence[str] | None]:
        return self._changes.watch(ns, prefix)

    async def range(
        self, ns: str, prefix: str, after: str | None, limit: int, *, keys_only: bool = False
    ) -> list[Entry]:
        start, end = range_start(prefix, after), prefix_end(prefix.encode())
        rows = await self._read(lambda db: _range(db, ns, start, end, limit, keys_only))
        return [Entry(bytes(k).decode(), v, r) for k, v, r in rows]

    # -- writes: one committer, batches ----------------------------------------------------

    async def _write(self, where: tuple[str, str], write: Write) -> Any:
        if self._writer is None:
            raise StorageUnavailable(f"SQLite database {self.path} is not open", applied=False)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((write, done, where))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_pending())
        return await asyncio.shield(done)  # a cancelled caller does not cancel the batch

    async def _commit_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.batch_max], self._pending[self.batch_max :]
            try:
                results = await self._on(self._write_thread, self._apply, [w for w, _, _ in batch])
            except Exception as exc:  # the whole batch rolled back: every write in it failed
                results = [exc] * len(batch)
                if _io_error(exc):
                    self.write_failure = str(exc)
            else:
                self.write_failure = None
            self.batches += 1
            for (_, done, (ns, key)), result in zip(batch, results, strict=True):
                if not isinstance(result, Exception):
                    self._changes.notify(ns, key)
                if done.cancelled():
                    continue
                if isinstance(result, Exception):
                    done.set_exception(result)
                else:
                    done.set_result(result)

    def _apply(self, writes: list[Write]) -> list[Any]:
        """On the writer thread: every write of the batch in one transaction, one COMMIT."""
        db = self._db(self._writer)
        db.execute("BEGIN IMMEDIATE")
        results: list[Any] = []
        try:
            for write in writes:
                try:
                    results.append(write(db))
                except Conflict as exc:  # checked before the write touched anything
                    results.append(exc)
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _refused(self.path, exc) from exc
            raise
        return results

    # -- reads and plumbing ----------------------------------------------------------------

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """On the event loop itself: a WAL read never waits for the writer, and a point read
        takes microseconds, less than handing it to a thread and back."""
        try:
            return read(self._db(self._reader))
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"SQLite {self.path}: {exc}", applied=False) from exc

    def _db(self, conn: sqlite3.Connection | None) -> sqlite3.Connection:
        if conn is None:
            raise StorageUnavailable(f"SQLite database {self.path} is not open", applied=False)
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        private_dir(self.path.parent)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives its WAL the same mode
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        return conn

    async def _on(self, thread: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, fn, *args)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"SQLite {self.path}: {exc}", applied=False) from exc


def _refused(path: Path, exc: sqlite3.Error) -> StorageUnavailable:
    """A write's transaction that SQLite rolled back, as the error the caller gets: a full disk
    (SQLITE_FULL: no room for the WAL's pages) is :class:`StorageFull`, the rest unavailable.
    Either way nothing was applied.

    >>> full = sqlite3.OperationalError("database or disk is full")
    >>> full.sqlite_errorcode = sqlite3.SQLITE_FULL
    >>> type(_refused(Path("db"), full)).__name__
    'StorageFull'
    """
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull(f"SQLite {path}: {exc}")
    return StorageUnavailable(f"SQLite {path}: {exc}", applied=False)


def _io_error(exc: BaseException) -> bool:
    """Whether SQLite failed on I/O (SQLITE_IOERR and its extended codes), not on the data.

    >>> error = sqlite3.OperationalError("disk I/O error")
    >>> error.sqlite_errorcode = 778  # SQLITE_IOERR_WRITE
    >>> _io_error(error), _io_error(sqlite3.OperationalError("no such table"))
    (True, False)
    """
    cause = exc.__cause__ if isinstance(exc, StorageUnavailable) else exc
    code = getattr(cause, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_IOERR


# -- statements (run on the DB threads, inside the writer's transaction for writes) ----------


def _select_one(db: sqlite3.Connection, ns: str, key: bytes) -> tuple[bytes, int] | None:
    row = db.execute("SELECT value, revision FROM entries WHERE ns=? AND key=?", (ns, key)).fetchone()
    return (row[0], row[1]) if row else None


def _touch(db: sqlite3.Connection) -> None:
    db.execute("UPDATE counters SET value = value WHERE name = 'revision'")


def _next_revision(db: sqlite3.Connection) -> int:
    db.execute("UPDATE counters SET value = value + 1 WHERE name = 'revision'")
    revision: int = db.execute("SELECT value FROM counters WHERE name = 'revision'").fetchone()[0]
    return revision


def _current(db: sqlite3.Connection, ns: str, key: str, if_revision: int | None) -> tuple[bytes, int] | None:
    found = _select_one(db, ns, key.encode())
    current = found[1] if found else 0
    if if_revision is not None and current != if_revision:
        raise Conflict(key, if_revision, current)
    return found


def _put(db: sqlite3.Connection, ns: str, key: str, value: bytes, if_revision: int | None) -> int:
    _current(db, ns, key, if_revision)
    revision = _next_revision(db)
    db.execute(
        "INSERT OR REPLACE INTO entries (ns, key, value, revision) VALUES (?, ?, ?, ?)",
        (ns, key.encode(), value, revision),
    )
    return revision


def _delete(db: sqlite3.Connection, ns: str, key: str, if_revision: int | None) -> bool:
    if _current(db, ns, key, if_revision) is None:
        return False
    _next_revision(db)
    db.execute("DELETE FROM entries WHERE ns=? AND key=?", (ns, key.encode()))
    return True


def _range(
    db: sqlite3.Connection, ns: str, start: bytes, end: bytes | None, limit: int, keys_only: bool
) -> list[tuple[Any, ...]]:
    columns = "key, x'', revision" if keys_only else "key, value, revision"
    sql = f"SELECT {columns} FROM entries WHERE ns=? AND key>=?"  # noqa: S608 (columns is one of two constants)
    args: list[object] = [ns, start]
    if end is not None:
        sql += " AND key<?"
        args.append(end)
    return [tuple(r) for r in db.execute(sql + " ORDER BY key LIMIT ?", (*args, limit)).fetchall()]

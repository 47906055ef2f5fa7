"""images/lazyfs, the fault layer under a node's data dir, against a known sequence of writes
and fsyncs: a real FUSE mount (root and /dev/fuse, as in CI), a real crash (SIGKILL of the file
system and the program writing), and what a second mount shows afterwards.

After a crash each file is as its last fsync left it; a command that exits on its own, even
crashing, keeps every write (the kernel would have written its page cache back); SQLite with
``synchronous=FULL`` loses no commit, and with ``synchronous=OFF`` it does, so the layer
bites."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from images import golang

LAZYFS = Path(golang.__file__).with_name("lazyfs")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/dev/fuse").exists(),
    reason="a FUSE mount needs root and /dev/fuse (CI has both)",
)


@pytest.fixture(scope="module")
def lazyfs() -> Path:
    return golang.binary(LAZYFS)


class Mount:
    """``lazyfs run`` over ``volume`` at ``mount``, running ``script`` (Python) in the mount."""

    def __init__(self, binary: Path, volume: Path, mount: Path, script: str) -> None:
        mount.mkdir(exist_ok=True)
        socket = volume.parent / f"{volume.name}.sock"
        command = [str(binary), "run", f"-volume={volume}", f"-mount={mount}", f"-socket={socket}", "--"]
        self.mount = mount
        self.socket = socket
        self.binary = binary
        self.process = subprocess.Popen(
            [*command, sys.executable, "-u", "-c", textwrap.dedent(script)],
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "MOUNT": str(mount)},
        )

    def line(self) -> str:
        """The next line the script prints (it says when it is done writing)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise AssertionError(
                f"lazyfs or its script ended: {self.process.stderr.read() if self.process.stderr else ''}"
            )
        return line.strip()

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def ctl(self, *request: str) -> str:
        done = subprocess.run(
            [str(self.binary), "ctl", f"-socket={self.socket}", *request], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() or done.stderr.strip()

    def crash(self) -> None:
        """SIGKILL the file system and everything it runs, as ``docker kill`` does."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=10)
        subprocess.run(["umount", "-l", str(self.mount)], check=False, capture_output=True)

    def finish(self) -> tuple[int, str]:
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "volume").mkdir()
    yield tmp_path / "volume"
    subprocess.run(["umount", "-l", str(tmp_path / "mnt")], check=False, capture_output=True)


SEQUENCE = """
    import os
    m = os.environ["MOUNT"]
    def write(name, data, offset=None, sync=False, flags=os.O_WRONLY | os.O_CREAT):
        fd = os.open(os.path.join(m, name), flags, 0o600)
        os.pwrite(fd, data, os.fstat(fd).st_size if offset is None else offset)
        if sync:
            os.fsync(fd)
        os.close(fd)
    def sync(name):
        fd = os.open(os.path.join(m, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    write("appended", b"A1", sync=True); write("appended", b"A2")           # the tail is lost
    write("created", b"never synced")                                      # exists, empty
    write("overwritten", b"x" * 8192, sync=True); write("overwritten", b"y" * 100, offset=4000)
    write("truncated", b"D1", sync=True); os.truncate(os.path.join(m, "truncated"), 0)
    write("moved", b"E", sync=True); os.rename(os.path.join(m, "moved"), os.path.join(m, "renamed"))
    write("renamed", b"F")                                                 # follows its file
    write("reborn", b"old"); os.unlink(os.path.join(m, "reborn")); write("reborn", b"new", sync=True)
    write("datasync", b"kept"); fd = os.open(os.path.join(m, "datasync"), os.O_RDONLY); os.fdatasync(fd); os.close(fd)
    write("wronly", b"W1", sync=True); write("wronly", b"W2", offset=0, flags=os.O_WRONLY)  # read via the path
    write("writeonly-synced", b"Z" * 10, sync=True)
    fd = os.open(os.path.join(m, "preallocated"), os.O_RDWR | os.O_CREAT, 0o600)  # as etcd's WAL
    os.write(fd, b"T" * 10); os.posix_fallocate(fd, 0, 3 << 20); os.fsync(fd)
    os.pwrite(fd, b"Q", 2 << 20); os.truncate(os.path.join(m, "preallocated"), 10); os.close(fd)
    print("written", flush=True)
    __import__("time").sleep(60)
"""

EXPECTED_AFTER_CRASH = {
    "appended": b"A1",
    "created": b"",
    "overwritten": b"x" * 8192,
    "truncated": b"D1",
    "renamed": b"E",
    "reborn": b"new",
    "datasync": b"kept",
    "wronly": b"W1",
    "writeonly-synced": b"Z" * 10,
    "preallocated": b"T" * 10 + bytes((3 << 20) - 10),  # the zeros are counted in the journal, not kept
}


def read_all(volume: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((volume / "data").iterdir())}


def test_a_crash_leaves_each_file_as_its_last_fsync_saw_it(lazyfs: Path, volume: Path) -> None:
    mounted = Mount(lazyfs, volume, volume.parent / "mnt", SEQUENCE)
    assert mounted.line() == "written"
    assert (volume / "data" / "appended").read_bytes() == b"A1A2"  # written through, until the crash
    mounted.crash()
    again = Mount(lazyfs, volume, volume.parent / "mnt", "print('up', flush=True)")
    assert again.line() == "up"
    code, err = again.finish()
    assert code == 0, err
    assert "undid" in err
    assert read_all(volume) == EXPECTED_AFTER_CRASH


def test_a_command_that_ends_by_itself_keeps_every_write(lazyfs: Path, volume: Path) -> None:
    script = """
        import os
        with open(os.path.join(os.environ["MOUNT"], "unsynced"), "wb") as f:
            f.write(b"kept")
        raise SystemExit(3)  # a crash of the program, not of the machine
    """
    code, _ = Mount(lazyfs, volume, volume.parent / "mnt", script).finish()
    assert code == 3, "lazyfs exits with its command's code"
    code, err = Mount(lazyfs, volume, volume.parent / "mnt", "pass").finish()
    assert code == 0, err
    assert read_all(volume) == {"unsynced": b"kept"}


SQLITE = """
    import os, sqlite3
    db = sqlite3.connect(os.path.join(os.environ["MOUNT"], "db.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous={sync}")
    db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)")
    for k in range(300):
        db.execute("INSERT INTO t VALUES (?)", (k,))
    print("committed", flush=True)
    __import__("time").sleep(60)
"""


@pytest.mark.parametrize(("sync", "loses"), [("FULL", False), ("OFF", True)])
def test_sqlite_loses_commits_on_a_crash_only_without_fsync(lazyfs: Path, volume: Path, sync: str, loses: bool) -> None:
    mounted = Mount(lazyfs, volume, volume.parent / "mnt", SQLITE.format(sync=sync))
    assert mounted.line() == "committed"
    mounted.crash()
    code, err = Mount(lazyfs, volume, volume.parent / "mnt", "pass").finish()  # undo, then unmount
    assert code == 0, err
    db = sqlite3.connect(volume / "data" / "db.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = _count(db)
    finally:
        db.close()
    if loses:
        assert rows < 300, "with synchronous=OFF a crash should lose commits: the layer did not bite"
    else:
        assert rows == 300


def _count(db: sqlite3.Connection) -> int:
    """Rows of ``t``, 0 when the crash took the table itself (its CREATE was never synced)."""
    try:
        return int(db.execute("SELECT count(*) FROM t").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_ctl_fails_writes_with_eio_until_ok_and_says_what_is_in_force(lazyfs: Path, volume: Path) -> None:
    script = """
        import os
        path = os.path.join(os.environ["MOUNT"], "f")
        print("up", flush=True)
        while input() != "end":
            try:
                with open(path, "ab") as f:
                    f.write(b"w"); f.flush(); os.fsync(f.fileno())
                print("written", flush=True)
            except OSError as exc:
                print(f"errno {exc.errno}", flush=True)
    """
    mounted = Mount(lazyfs, volume, volume.parent / "mnt", script)
    assert mounted.line() == "up"  # the command starts once the socket listens
    assert mounted.ctl("status") == "eio=false slow_ms=0"
    mounted.say("write")
    assert mounted.line() == "written"
    assert mounted.ctl("eio") == "eio=true slow_ms=0"
    mounted.say("write")
    assert mounted.line() == "errno 5"
    assert mounted.ctl("slow", "20") == "eio=true slow_ms=20"
    assert mounted.ctl("ok") == "eio=false slow_ms=0"
    mounted.say("write")
    assert mounted.line() == "written"
    assert mounted.ctl("slow", "-1").startswith("error: slow needs milliseconds")
    assert mounted.ctl("fill").startswith("error: unknown request")
    mounted.say("end")
    code, err = mounted.finish()
    assert code == 0, err
    assert (volume / "data" / "f").read_bytes() == b"ww"


def test_bad_usage_is_one_line_and_exit_2(lazyfs: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(lazyfs), "run", f"-volume={tmp_path}"], capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stderr.strip()) == (2, "lazyfs: run needs -volume, -mount and a command after --")
    done = subprocess.run([str(lazyfs), "mount"], capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "unknown command" in done.stderr


BOUNDED = """
    import os
    path = os.path.join(os.environ["MOUNT"], "f")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, b"s" * (1 << 20), 0); os.fsync(fd)
    for i in range(100):  # 100 MiB written over 1 MiB of pages, never synced
        os.pwrite(fd, bytes([i]) * (1 << 20), 0)
    print("overwritten", flush=True)
    input()
    for i in range(100):  # 100 MiB written and synced, 1 MiB at a time
        os.pwrite(fd, bytes([i]) * (1 << 20), 0); os.fsync(fd)
    os.pwrite(fd, b"u" * (1 << 20), 0)
    print("synced", flush=True)
    __import__("time").sleep(60)
"""


def test_the_journal_stays_bounded_by_the_unsynced_pages(lazyfs: Path, volume: Path) -> None:
    """A page is kept once between two syncs of its file, and the records of synced files are
    dropped once the journal passes 64 MiB: a long run under load does not fill the host."""
    mounted = Mount(lazyfs, volume, volume.parent / "mnt", BOUNDED)
    assert mounted.line() == "overwritten"
    journal = volume / "journal"
    assert journal.stat().st_size < 2 << 20, "each unsynced page kept once, not once per write"
    mounted.say("go on")
    assert mounted.line() == "synced"
    assert journal.stat().st_size < (64 + 4) << 20, "the synced files' records were not dropped"
    mounted.crash()
    code, err = Mount(lazyfs, volume, volume.parent / "mnt", "pass").finish()
    assert code == 0, err
    assert (volume / "data" / "f").read_bytes() == bytes([99]) * (1 << 20)  # the last synced version

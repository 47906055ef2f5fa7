"""Faults of a mode running as containers, as values (``Fault[ContainerRun]``): kill, stop,
restart or freeze a node, partition nodes, lose or delay a node's packets, step a node's
clock, fill a node's disk, replace a node's etcd member with a new one.

Network faults run in the node's network namespace from a helper container
(:meth:`ContainerRun.in_netns`); the node never holds NET_ADMIN. The rules are computed
first (:mod:`topologies.containers.plan`), then written.

    with faults.injected(run, Partition.isolating("node-2", run)):
        ...
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from topologies import pki
from topologies.constants import (
    BALLAST_FILE,
    CLOCK_FILE,
    DATA_DIR,
    DB_CLIENT_PORT,
    DB_PEER_PORT,
    LABEL_ROLE,
    LAZYFS_BIN,
    RUNTIME_UID,
    SECRETS_DIR,
)
from topologies.containers import plan
from topologies.containers.node import wait_ready
from topologies.containers.run import ContainerRun
from topologies.containers.start import Place, start_nodes
from topologies.engines import REMOVED
from topologies.exceptions import FaultError, UsageError
from topologies.faults import SKEW_S, Fault, skew_refusal
from topologies.runs import SECRET_FILES, secret_settings
from topologies.spec import SERVICE_DB
from topologies.wait import WaitTimeout, wait_until


def _has(run: ContainerRun, node: str) -> str | None:
    names = [n.name for n in run.nodes]
    return None if node in names else f"no node {node!r} in run {run.run_id} ({run.mode})"


@dataclass(frozen=True)
class Kill:
    """SIGKILL the node's container; heal starts it again (same address, same data)."""

    node: str

    @property
    def name(self) -> str:
        return f"kill({self.node})"

    def applies_to(self, run: ContainerRun) -> str | None:
        return _has(run, self.node)

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).kill()

    def heal(self, run: ContainerRun) -> None:
        node = run.node(self.node)
        if not node.running:
            node.start()


@dataclass(frozen=True)
class Stop(Kill):
    """Graceful stop (SIGTERM, drain); heal starts it again."""

    @property
    def name(self) -> str:
        return f"stop({self.node})"

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).stop()


@dataclass(frozen=True)
class Restart(Kill):
    @property
    def name(self) -> str:
        return f"restart({self.node})"

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).restart()


@dataclass(frozen=True)
class Pause(Kill):
    """Freeze every process of the node (SIGSTOP-like); heal thaws it."""

    @property
    def name(self) -> str:
        return f"pause({self.node})"

    def apply(self, run: ContainerRun) -> None:
        run.node(self.node).pause()

    def heal(self, run: ContainerRun) -> None:
        node = run.node(self.node)
        if node.paused:
            node.unpause()


@dataclass(frozen=True)
class Partition:
    """Cut the network between groups of nodes with iptables; the rules are computed first."""

    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def isolating(cls, node: str, run: ContainerRun) -> Partition:
        return cls(tuple(tuple(g) for g in plan.isolate(node, [n.name for n in run.nodes])))

    @property
    def name(self) -> str:
        return "partition(" + " | ".join(",".join(g) for g in self.groups) + ")"

    def applies_to(self, run: ContainerRun) -> str | None:
        if len(run.nodes) < 2:
            return "a partition needs at least two nodes"
        try:
            plan.partition_rules(self.groups, run.ips)
        except ValueError as exc:
            return str(exc)
        return None

    def apply(self, run: ContainerRun) -> None:
        rules = plan.partition_rules(self.groups, run.ips)  # decide every rule before writing any
        for node_name, commands in rules.items():
            if commands:
                run.in_netns(run.node(node_name), commands)

    def heal(self, run: ContainerRun) -> None:
        for name in {n for group in self.groups for n in group}:
            _flush(run, name)


@dataclass(frozen=True)
class Loss:
    """Drop a share of the node's packets in both directions."""

    node: str
    percent: float

    @property
    def name(self) -> str:
        return f"loss({self.node},{self.percent:g}%)"

    def applies_to(self, run: ContainerRun) -> str | None:
        return _has(run, self.node)

    def apply(self, run: ContainerRun) -> None:
        run.in_netns(run.node(self.node), plan.loss_rules(self.percent))

    def heal(self, run: ContainerRun) -> None:
        _flush(run, self.node)


@dataclass(frozen=True)
class Delay:
    """Delay the node's outgoing packets (tc netem; needs the host kernel's sch_netem)."""

    node: str
    ms: int
    jitter_ms: int = 0

    @property
    def name(self) -> str:
        return f"delay({self.node},{self.ms}ms±{self.jitter_ms}ms)"

    def applies_to(self, run: ContainerRun) -> str | None:
        return _has(run, self.node) or run.netem_missing()

    def apply(self, run: ContainerRun) -> None:
        run.in_netns(run.node(self.node), plan.delay_rules(self.ms, self.jitter_ms))

    def heal(self, run: ContainerRun) -> None:
        _flush(run, self.node)


@dataclass(frozen=True)
class ClockSkew:
    """Step the wall clock of the node's runtime by ``seconds``, forward or back, as a bad NTP
    step would: every time-based decision it makes (token expiry, leases, throttling, key
    rotation, certificates) reads the new time; its timers, on the monotonic clock, do not
    move. The clock is not namespaced, so this is the runtime's clock failpoint
    (``runtime/clock.py``), not libfaketime, which breaks CPython 3.11 here. Heal steps it
    back to 0. Apply and heal return once the node's ``/readyz`` says the new skew."""

    node: str
    seconds: int

    @property
    def name(self) -> str:
        return f"clock-skew({self.node},{self.seconds:+d}s)"

    def applies_to(self, run: ContainerRun) -> str | None:
        if problem := _has(run, self.node):
            return problem
        if refused := skew_refusal(self.seconds):
            return refused
        if run.node(self.node).spec.is_envoy:
            return f"{self.node} runs Envoy, whose clock is its own (the node's runtime only supervises it)"
        return None

    def apply(self, run: ContainerRun) -> None:
        _set_clock(run, self.node, self.seconds)

    def heal(self, run: ContainerRun) -> None:
        if run.node(self.node).running:
            _set_clock(run, self.node, 0)


def _set_clock(run: ContainerRun, name: str, seconds: int, timeout: float = 15.0) -> None:
    node = run.node(name)
    code, out = node.exec(["sh", "-c", f"echo {seconds:+d} > {CLOCK_FILE}"])
    if code != 0:
        raise FaultError(f"could not set {name}'s clock to {seconds:+d} s: {out.strip()[-200:]}")
    context = ssl.create_default_context(cafile=str(run.ca_file))
    said: list[object] = []

    def shows() -> bool:  # the node re-reads the file at most once a second
        try:
            reply = httpx.get(f"{node.url}/readyz", verify=context, timeout=3)
            said[:] = [reply.json().get("clock_skew_s", "no clock_skew_s: the failpoint is not armed")]
        except (httpx.HTTPError, ValueError) as exc:
            said[:] = [type(exc).__name__]
        return said == [seconds]

    try:
        wait_until(shows, timeout=timeout, interval=0.25, message=f"{name}'s /readyz to say clock_skew_s {seconds}")
    except WaitTimeout:
        raise FaultError(f"{name}'s clock did not move to {seconds:+d} s; its /readyz says {said[:1]}") from None


@dataclass(frozen=True)
class DiskFull:
    """Fill the node's data dir to the last byte with a ballast file, as a runaway log or a
    neighbour would: its DB's next write that needs room fails (SQLite: SQLITE_FULL, a 507
    from the node). Only a run whose data dirs are file systems of their own
    (``--data-size``) can have this: elsewhere the data dir is on the host's disk, which this
    would fill. Heal deletes the ballast: the node writes again, without a restart."""

    node: str

    @property
    def name(self) -> str:
        return f"disk-full({self.node})"

    def applies_to(self, run: ContainerRun) -> str | None:
        if problem := _has(run, self.node):
            return problem
        if run.data_size is None:
            return (
                f"{self.node}'s data dir is on the host's disk, which this would fill: start the run "
                "with a data size (modematrix up MODE --data-size 64MiB)"
            )
        return None

    def apply(self, run: ContainerRun) -> None:
        code, out = run.node(self.node).exec(["/opt/venv/bin/python", "-c", FILL.format(path=BALLAST_FILE)])
        if code != 0 or not out.strip().startswith("filled"):
            raise FaultError(f"could not fill {self.node}'s data dir: {out.strip()[-300:]}")

    def heal(self, run: ContainerRun) -> None:
        node = run.node(self.node)
        if node.running:
            code, out = node.exec(["rm", "-f", BALLAST_FILE])
            if code != 0:
                raise FaultError(f"could not remove {self.node}'s ballast {BALLAST_FILE}: {out.strip()[-200:]}")


MAX_IO_DELAY_MS = 10_000  # lazyfs refuses more
SLOW_IO_MS = 50  # `modematrix fault RUN slow-io NODE`: each read, write and fsync, as a saturated disk


@dataclass(frozen=True)
class BadIo:
    """The node's data dir fails every write, truncate and fsync with EIO (``delay_ms`` 0), or
    delays every read, write and fsync by ``delay_ms``, as a dying or overloaded disk does;
    heal ends it. Only a run on lazyfs (``--lazy-fs``) can have this: the fault is lazyfs's
    (``lazyfs ctl eio|slow MS|ok``, as root in the node)."""

    node: str
    delay_ms: int = 0

    @property
    def name(self) -> str:
        return f"io-errors({self.node})" if self.delay_ms == 0 else f"slow-io({self.node}, {self.delay_ms} ms)"

    def applies_to(self, run: ContainerRun) -> str | None:
        if problem := _has(run, self.node):
            return problem
        if not run.lazy_fs:
            return f"{self.node}'s data dir is not on lazyfs: start the run with it (modematrix up MODE --lazy-fs)"
        if not 0 <= self.delay_ms <= MAX_IO_DELAY_MS:
            return f"an I/O delay of 0 to {MAX_IO_DELAY_MS} ms, not {self.delay_ms}"
        return None

    def apply(self, run: ContainerRun) -> None:
        self._ctl(run, "eio" if self.delay_ms == 0 else f"slow {self.delay_ms}")

    def heal(self, run: ContainerRun) -> None:
        if run.node(self.node).running:  # a killed node's lazyfs starts again without it
            self._ctl(run, "ok")

    def _ctl(self, run: ContainerRun, request: str) -> None:
        code, out = run.node(self.node).exec([LAZYFS_BIN, "ctl", *request.split()], user="0")
        if code != 0:
            raise FaultError(f"lazyfs on {self.node} refused {request!r}: {out.strip()[-300:]}")


@dataclass(frozen=True)
class ReplaceMember:
    """Replace the node's etcd member with a new one, as an operator replaces a lost machine
    (etcd's runtime reconfiguration): apply removes the member from the cluster (as root:
    ``runtime db-member remove``) and stops the node; the cluster serves on with the others.
    Heal removes the old container and its data dir, adds a member at the same address
    (``db-member add``) and starts the node on an empty data dir as a member that joins
    (``db_initial_cluster_state existing``); it is healed once the new member is ready. A note
    in the run's folder says the node awaits this (:meth:`ContainerRun.member_removed`), so
    ``modematrix fault RUN heal`` from another process does it too (:func:`heal_replaced`),
    and ``heal_all`` does not restart a member the cluster has removed."""

    node: str

    @property
    def name(self) -> str:
        return f"replace-member({self.node})"

    def applies_to(self, run: ContainerRun) -> str | None:
        if problem := _has(run, self.node):
            return problem
        members = [n for n in run.nodes if n.db_member]
        if run.spec.db == SERVICE_DB:  # its members are the service's own: etcd's or any other
            return f"replace-member is the runtime's etcd procedure (runtime db-member); {run.mode} runs a service"
        if run.spec.db != "etcd" or run.node(self.node) not in members:
            return f"{self.node} hosts no etcd member"
        if len(members) < 3:
            return f"replacing a member needs three or more (a quorum without it); this run has {len(members)}"
        return None

    def apply(self, run: ContainerRun) -> None:
        _db_member(run, ["remove", self.node])  # refused: nothing changed, nothing to replace
        note = run.member_removed(self.node)
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text("its etcd member was removed: heal starts a new one on an empty data dir\n")
        node = run.node(self.node)
        if node.running:  # a member removed stops itself, and its node with it
            node.kill()

    def heal(self, run: ContainerRun) -> None:
        note = run.member_removed(self.node)
        if not note.exists():
            return  # not applied, or healed already
        old = run.node(self.node)
        if old.status != REMOVED:
            old.engine.remove(old.handle)
        old.engine.remove_volume(f"mm-{run.run_id}-{self.node}")  # the new member starts empty
        ip = run.ips[self.node]
        _db_member(run, ["add", self.node, f"https://{ip}:{DB_PEER_PORT}"])
        prefix = ip.rsplit(".", 1)[0]
        place = Place.of(run, prefix)
        joining = {"RUNTIME_DB_INITIAL_CLUSTER_STATE": "existing"}
        run_pki = pki.RunPki.load(run.workdir)
        (new,) = start_nodes(place, run.spec, [old.spec], run.ips, run.secrets, run_pki, joining)
        run.replace(new)
        wait_ready([new], run.tls_context(), timeout=120)
        note.unlink()


def heal_replaced(run: ContainerRun) -> None:
    """Replace every member that a :class:`ReplaceMember` removed and no heal has replaced yet
    (the fault applied by another process: ``modematrix fault RUN replace-member``)."""
    for node in list(run.nodes):
        if run.member_removed(node.name).exists():
            ReplaceMember(node.name).heal(run)


def _db_member(run: ContainerRun, args: list[str]) -> None:
    """``runtime db-member ARGS`` as the DB's root, from the image on the run's network,
    against the members still running."""
    endpoints = ",".join(
        f"https://{n.ip}:{DB_CLIENT_PORT}" for n in run.nodes if n.db_member and n.name != args[1] and n.running
    )
    files = {f"{SECRETS_DIR}/{SECRET_FILES['tls_bundle']}": pki.RunPki.load(run.workdir).root().dump().encode()}
    code, out = run.engine.run_once(
        run.image,
        ["db-member", *args, "--endpoints", endpoints],
        secret_settings(files),
        {**run.labels("db-member"), LABEL_ROLE: "db-member"},
        network=f"mm-{run.run_id}",
        files=files,
        files_owner=RUNTIME_UID,
    )
    if code != 0:
        raise FaultError(f"db-member {' '.join(args)} exited {code}: {out.strip()[-300:]}")


# run in the node, as its user: append to the ballast in ever smaller writes until not one
# more byte fits, fsync it, and say how much went in and what is left (0)
FILL = f"""
import errno, os
fd = os.open("{{path}}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
chunk, written = 1 << 20, 0
block = bytes(chunk)
while chunk:
    try:
        written += os.write(fd, block[:chunk])
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        chunk //= 2
os.fsync(fd)
os.close(fd)
left = os.statvfs("{DATA_DIR}")
print("filled", written, "left", left.f_bavail * left.f_frsize)
"""


def _flush(run: ContainerRun, name: str) -> None:
    node = run.node(name)
    if node.running:
        run.in_netns(node, plan.HEAL_RULES)


def rolling_restart(run: ContainerRun, names: Sequence[str] | None = None, timeout: float = 120.0) -> None:
    """Restart each node in turn, waiting for the whole run to be healthy in between."""
    for name in names or [n.name for n in run.nodes]:
        run.node(name).restart()
        run.wait_healthy(timeout=timeout)


# what `modematrix fault RUN ACTION NODE` can do to a node of a run on containers
BY_NAME: dict[str, Callable[[str, ContainerRun], Fault[ContainerRun]]] = {
    "kill": lambda node, run: Kill(node),
    "stop": lambda node, run: Stop(node),
    "restart": lambda node, run: Restart(node),
    "pause": lambda node, run: Pause(node),
    "partition": lambda node, run: Partition.isolating(node, run),
    "clock-forward": lambda node, run: ClockSkew(node, SKEW_S),
    "clock-back": lambda node, run: ClockSkew(node, -SKEW_S),
    "disk-full": lambda node, run: DiskFull(node),
    "io-errors": lambda node, run: BadIo(node),
    "slow-io": lambda node, run: BadIo(node, SLOW_IO_MS),
    "replace-member": lambda node, run: ReplaceMember(node),
}


def named(action: str, node: str, run: ContainerRun) -> Fault[ContainerRun]:
    """The fault ``action`` on ``node``; UsageError (exit 2) for an unknown action or node."""
    if action not in BY_NAME:
        raise UsageError(f"no fault {action!r} for a run on containers; expected one of {', '.join(BY_NAME)}")
    run.node(node)  # NotFound names the run's nodes
    return BY_NAME[action](node, run)

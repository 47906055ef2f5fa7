"""The front door of a k8s run on 127.0.0.1, on any cluster: ``kubectl port-forward`` to the
Envoy pods through the API server (the ``portforward`` subresource), kept up by a small
supervisor process of its own that outlives ``modematrix up``.

    doors = forward.start(run_dir, kubectl=[kubectl, "--kubeconfig", path], namespace=ns, slots=2)
    forward.running(run_dir)        # its pid, or None
    forward.stop(run_dir)           # what ``modematrix down`` does before removing the run

One local port per Envoy replica ("slot"), fixed for the run's life (the run's record names
them): each slot forwards to one Ready Envoy pod, a different one per slot while there are
enough. When that pod goes (deleted, its node killed, no longer Ready) the supervisor moves the
slot to another Ready pod on the same local port, so a client that knows every door fails over
as it does in the container modes. kubectl, not the Python client's websocket tunnel: every
byte of the load passes through it, and kubectl's is Go.

The supervisor (``python -m topologies.kubernetes.forward RUN_DIR``) reads ``forward.json``
in the run's folder, writes its pid to ``forward.pid`` and its log to ``forward.log``, and ends
by itself when ``forward.json`` is removed, on SIGTERM, or after ``MAX_LIFETIME_S``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Pod

from topologies.constants import API_PORT
from topologies.exceptions import EngineError, StartTimeout
from topologies.wait import WaitTimeout, wait_until

PLAN = "forward.json"
PID = "forward.pid"
LOG = "forward.log"
WORKLOAD = "envoy"
NAME_LABEL = "app.kubernetes.io/name"
POLL_S = 0.5
PR_SET_PDEATHSIG = 1
MAX_LIFETIME_S = 7 * 24 * 3600  # a forgotten run's tunnel ends by itself after a week


@dataclass(frozen=True)
class Plan:
    """What the supervisor keeps up: ``ports[i]`` on 127.0.0.1 forwards to a Ready pod of
    ``workload`` in ``namespace``, port ``target_port``."""

    kubectl: list[str]  # the kubectl argv up to its verb, kubeconfig included
    kubeconfig: str
    namespace: str
    ports: list[int]
    workload: str = WORKLOAD
    target_port: int = API_PORT

    @property
    def doors(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def write(self, folder: Path) -> None:
        (folder / PLAN).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Plan | None:
        try:
            return cls(**json.loads((folder / PLAN).read_text()))
        except FileNotFoundError:
            return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 that nothing listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def once(kubectl: Sequence[str], namespace: str, target: str, port: int, *, timeout: float = 30) -> Iterator[int]:
    """``kubectl port-forward <target> LOCAL:<port>`` on 127.0.0.1 for the length of the block,
    with no supervisor (one short use: a benchmark's baseline, a look at one pod); yields the
    local port. A kubectl that exits first is an error with what it said."""
    local = free_ports(1)[0]
    argv = [*kubectl, "port-forward", "-n", namespace, "--address", "127.0.0.1", target, f"{local}:{port}"]
    with tempfile.TemporaryFile(mode="w+") as said:  # a file, not a pipe: kubectl never blocks on it
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=said, text=True)
        try:
            try:
                wait_until(
                    lambda: process.poll() is not None or _accepts(local),
                    timeout=timeout,
                    interval=0.1,
                    message=f"kubectl port-forward {target} {local}:{port}",
                )
            except WaitTimeout as exc:
                raise StartTimeout(str(exc)) from exc
            if process.poll() is not None:
                said.seek(0)
                why = said.read().strip()[-300:]
                raise EngineError(f"kubectl port-forward {target} exited ({process.returncode}): {why}")
            yield local
        finally:
            end_process(process, grace=10)


def end_process(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, ``grace`` seconds to exit, then SIGKILL; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start(folder: Path, plan: Plan, *, timeout: float = 60) -> list[str]:
    """Start the supervisor for ``plan`` (recorded in ``folder``) and wait until every door
    accepts connections; its doors as ``127.0.0.1:PORT``."""
    plan.write(folder)
    (folder / PID).unlink(missing_ok=True)
    with (folder / LOG).open("ab") as log:
        # --detach: it forks, records the child's pid and returns; the child, in a session of
        # its own and nobody's child here, is the supervisor (``up`` returns, the tunnel stays)
        subprocess.run(
            [sys.executable, "-m", "topologies.kubernetes.forward", "--detach", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            check=True,
            timeout=30,
        )
    try:
        wait_until(
            lambda: running(folder) is not None and all(_accepts(port) for port in plan.ports),
            timeout=timeout,
            interval=0.2,
            message="port-forward to Envoy",
        )
    except WaitTimeout:
        stop(folder)
        tail = "".join((folder / LOG).read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise StartTimeout(f"k8s: the port-forward to Envoy did not answer within {timeout:.0f} s:\n{tail}") from None
    return plan.doors


def ensure(folder: Path, *, timeout: float = 60) -> list[str]:
    """The run's doors, with the supervisor started again on the same ports if it is gone
    (the machine restarted, someone killed it)."""
    plan = Plan.read(folder)
    if plan is None:
        return []
    if running(folder) is None:
        return start(folder, plan, timeout=timeout)
    return plan.doors


def running(folder: Path) -> int | None:
    """The supervisor's pid, if it is alive."""
    try:
        pid = int((folder / PID).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    if _zombie(pid) or not _is_supervisor(pid, folder):  # dead and not reaped; or a recycled pid
        return None
    return pid


def _is_supervisor(pid: int, folder: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"topologies.kubernetes.forward" in argv and str(folder).encode() in argv


def stop(folder: Path, *, timeout: float = 10) -> None:
    """End the supervisor (it ends its kubectls) and forget the plan."""
    (folder / PLAN).unlink(missing_ok=True)
    pid = running(folder)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: running(folder) is None, timeout=timeout, interval=0.1, message="forward ends")
        except (ProcessLookupError, WaitTimeout):
            _kill(pid)
    (folder / PID).unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- the supervisor ---------------------------------------------------------------------------


def assign(slots: int, ready: Sequence[str], current: Sequence[str | None]) -> list[str | None]:
    """Which pod each slot forwards to: a slot keeps its pod while that pod is Ready; a slot
    without one takes the Ready pod fewest slots use (in name order); None when none is Ready.

    >>> assign(2, ["a", "b"], [None, None])
    ['a', 'b']
    >>> assign(2, ["b", "c"], ["a", "b"])       # a went: its slot moves to the unused c
    ['c', 'b']
    >>> assign(2, ["b"], ["a", "b"])            # one left: both slots share it
    ['b', 'b']
    >>> assign(2, [], ["a", "b"])
    [None, None]
    """
    chosen: list[str | None] = [pod if pod in ready else None for pod in current[:slots]]
    chosen += [None] * (slots - len(chosen))
    for i, pod in enumerate(chosen):
        if pod is None and ready:
            chosen[i] = min(ready, key=lambda p: (chosen.count(p), p))
    return chosen


class Supervisor:
    def __init__(self, folder: Path, plan: Plan) -> None:
        self.folder, self.plan = folder, plan
        self.pods: list[str | None] = [None] * len(plan.ports)
        self.children: list[subprocess.Popen[bytes] | None] = [None] * len(plan.ports)
        self.stopping = False

    def ready_pods(self) -> list[str] | None:
        """The workload's Ready pods not being deleted, or None when the API does not answer."""
        try:
            with Client(config=KubeConfig.from_file(self.plan.kubeconfig)) as client:
                pods = list(client.list(Pod, namespace=self.plan.namespace, labels={NAME_LABEL: self.plan.workload}))
        except Exception as exc:  # an API server that does not answer now may later
            say(f"listing pods: {exc}")
            return None
        ready = []
        for pod in pods:
            meta, status = pod.metadata, pod.status
            if meta is None or status is None or meta.deletionTimestamp is not None:
                continue
            if any(c.type == "Ready" and c.status == "True" for c in status.conditions or []):
                ready.append(meta.name or "")
        return sorted(ready)

    def tick(self) -> None:
        ready = self.ready_pods()
        if ready is None:
            return
        alive = [
            pod if child is not None and child.poll() is None else None
            for pod, child in zip(self.pods, self.children, strict=True)
        ]
        wanted = assign(len(self.plan.ports), ready, alive)
        for slot, pod in enumerate(wanted):
            if pod != self.pods[slot] or alive[slot] is None:
                self._end(slot)
                if pod is not None:
                    self._forward(slot, pod)

    def _forward(self, slot: int, pod: str) -> None:
        port = self.plan.ports[slot]
        argv = [
            *self.plan.kubectl,
            "port-forward",
            "--namespace",
            self.plan.namespace,
            "--address",
            "127.0.0.1",
            f"pod/{pod}",
            f"{port}:{self.plan.target_port}",
        ]
        say(f"slot {slot}: 127.0.0.1:{port} -> {pod}:{self.plan.target_port}")
        # kubectl's stdout says "Handling connection for PORT" per connection: not kept; its
        # errors (a lost pod, a refused stream) go to the log
        self.children[slot] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sys.stdout, preexec_fn=_die_with_parent
        )
        self.pods[slot] = pod

    def _end(self, slot: int) -> None:
        child, self.children[slot], self.pods[slot] = self.children[slot], None, None
        if child is not None and child.poll() is None:
            end_process(child, grace=5)

    def run(self) -> int:
        started = time.monotonic()
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        try:
            while not self.stopping and (self.folder / PLAN).exists():
                if time.monotonic() - started > MAX_LIFETIME_S:
                    say(f"ending after {MAX_LIFETIME_S} s")
                    break
                self.tick()
                time.sleep(POLL_S)
        finally:
            for slot in range(len(self.children)):
                self._end(slot)
        say("ended")
        return 0


def _die_with_parent() -> None:
    """In a kubectl child: SIGTERM when the supervisor dies, however it dies (a SIGKILLed
    supervisor leaves no kubectl holding the run's ports)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: a supervisor's SIGTERM still ends its children


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} forward: {line}", flush=True)


def main(argv: Sequence[str]) -> int:
    detach = argv[:1] == ["--detach"]
    argv = argv[1:] if detach else argv
    if len(argv) != 1:
        print("usage: python -m topologies.kubernetes.forward [--detach] RUN_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    plan = Plan.read(folder)
    if plan is None:
        print(f"forward: no {PLAN} in {folder}", file=sys.stderr)
        return 2
    if detach:
        child = os.fork()
        if child:
            (folder / PID).write_text(f"{child}\n")
            return 0
    return Supervisor(folder, plan).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

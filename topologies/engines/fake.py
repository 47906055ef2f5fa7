"""An engine that only records: for fast unit tests of everything above the seam.

    engine = FakeEngine()
    engine.on_exec = lambda handle, command: (0, "...")     # script what a container answers
    engine.failures["start"] = 2                            # the next two starts raise
    engine.failures["start mm-x-node-2"] = 1                # the next start of that container raises
    ...
    assert ("kill", "mm-x-node-1") in engine.calls

State moves as a real container's would (kill -> exited, pause -> paused, start -> running).
Nothing listens on the handles' ports, so HTTP readiness against a fake node never succeeds:
that is how readiness timeouts are tested.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from images.kubernetes import Components, NodeImage
from topologies.constants import LABEL_RUN
from topologies.engines.base import EXITED, PAUSED, REMOVED, RUNNING, Handle, Launch
from topologies.exceptions import EngineError

ExecReply = Callable[[Handle, Sequence[str]], tuple[int, str]]


class FakeEngine:
    name = "fake"

    def __init__(self, *, image: str = "modematrix/runtime:fake", prefix: str = "10.9.9") -> None:
        self.image_ref, self.prefix = image, prefix
        self.cgroups = 1  # the cgroup version its containers get
        self.calls: list[tuple[str, ...]] = []
        self.states: dict[str, str] = {}
        self.handles: dict[str, Handle] = {}
        self.launched: list[Launch] = []
        self.networks: dict[str, Mapping[str, str]] = {}
        # "action" or "action container" -> how many of its next calls raise EngineError
        self.failures: dict[str, int] = {}
        self._lock = threading.Lock()  # heals and starts call from several threads at once
        self.on_exec: ExecReply = lambda handle, command: (0, "")
        self.on_netns: ExecReply = lambda handle, script: (0, "")
        self.log_lines: dict[str, str] = {}
        self.resident: dict[str, int] = {}  # container name -> what memory() says (default 40 MiB)
        self.cpu: dict[str, float] = {}  # container name -> what cpu_seconds() says (default 0)
        self._ports = itertools.count(47000)
        self._ids = itertools.count(1)

    def _record(self, action: str, *args: str) -> None:
        with self._lock:
            self.calls.append((action, *args))
            for key in (f"{action} {args[0]}" if args else action, action):
                if self.failures.get(key, 0) > 0:
                    self.failures[key] -= 1
                    raise EngineError(f"{action} {' '.join(args)}: the fake engine was told to fail")

    def image(self, *, quiet: bool = True) -> str:
        self._record("image")
        return self.image_ref

    def cgroup_version(self) -> int:
        self._record("cgroup_version")
        return self.cgroups

    def node_image(self, *, quiet: bool = True) -> NodeImage:
        self._record("node_image")
        components = Components(Path("/fake/k8s"), "v0.0.0", True, {})
        return NodeImage("modematrix/k8s-node:fake", "modematrix/pause:fake", components, True)

    def save_images(self, tags: Sequence[str], folder: Path) -> Path:
        self._record("save_images", *tags)
        return folder / "fake.tar"

    def registry_image(self, *, quiet: bool = True) -> str:
        self._record("registry_image")
        return "modematrix/registry:fake"

    def push(self, tag: str, registry: str) -> str:
        self._record("push", tag, registry)
        return f"{registry}/{tag}"

    def guard(self, image: str) -> None:
        self._record("guard", image)

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        self._record("create_network", name)
        self.networks[name] = dict(labels)
        return self.prefix

    def connect(self, network: str, handle: Handle, ip: str | None = None) -> None:
        self._record("connect", network, handle.name)

    def disconnect(self, network: str, handle: Handle) -> None:
        self._record("disconnect", network, handle.name)

    def launch(self, spec: Launch) -> Handle:
        self._record("launch", spec.name)
        self.launched.append(spec)
        ports = {port: next(self._ports) for port in spec.publish}
        handle = Handle(f"id{next(self._ids)}", spec.name, dict(spec.labels), spec.ip or "", ports, dict(spec.env))
        self.handles[handle.id] = replace(handle, image=spec.image)
        self.states[handle.id] = RUNNING
        return self.handles[handle.id]

    def state(self, handle: Handle) -> str:
        return self.states.get(handle.id, REMOVED)

    def exit_reason(self, handle: Handle) -> str:
        return self.state(handle)

    def _move(self, action: str, handle: Handle, to: str) -> None:
        self._record(action, handle.name)
        self.states[handle.id] = to

    def start(self, handle: Handle) -> None:
        self._move("start", handle, RUNNING)

    def stop(self, handle: Handle, timeout: int = 20) -> None:
        self._move("stop", handle, EXITED)

    def kill(self, handle: Handle) -> None:
        self._move("kill", handle, EXITED)

    def restart(self, handle: Handle, timeout: int = 20) -> None:
        self._move("restart", handle, RUNNING)

    def memory(self, handle: Handle) -> int:
        self._record("memory", handle.name)
        return self.resident.get(handle.name, 40 << 20)

    def cpu_seconds(self, handle: Handle) -> float:
        self._record("cpu_seconds", handle.name)
        return self.cpu.get(handle.name, 0.0)

    def pause(self, handle: Handle) -> None:
        self._move("pause", handle, PAUSED)

    def unpause(self, handle: Handle) -> None:
        self._move("unpause", handle, RUNNING)

    def remove(self, handle: Handle) -> None:
        self._move("remove", handle, REMOVED)

    def remove_volume(self, name: str) -> None:
        self._record("remove_volume", name)

    def exec(self, handle: Handle, command: Sequence[str], user: str = "") -> tuple[int, str]:
        self._record("exec", handle.name, " ".join(command))
        return self.on_exec(handle, command)

    def netns_exec(self, handle: Handle, script: str, image: str) -> tuple[int, str]:
        self._record("netns_exec", handle.name, script)
        return self.on_netns(handle, [script])

    def logs(self, handle: Handle, tail: int = 30) -> str:
        return self.log_lines.get(handle.name, f"(fake logs of {handle.name})")

    def follow_logs(self, handle: Handle, tail: int = 100) -> Iterator[str]:
        yield self.logs(handle)

    def list_run(self, run_id: str | None) -> list[Handle]:
        return [
            h
            for h in self.handles.values()
            if self.states[h.id] != REMOVED and (run_id is None or h.labels.get(LABEL_RUN) == run_id)
        ]

    def remove_run(self, run_id: str | None) -> dict[str, int]:
        self._record("remove_run", run_id or "(all)")
        gone = self.list_run(run_id)
        for handle in gone:
            self.states[handle.id] = REMOVED
        networks = [n for n, labels in self.networks.items() if run_id is None or labels.get(LABEL_RUN) == run_id]
        for name in networks:
            del self.networks[name]
        return {"containers": len(gone), "networks": len(networks), "volumes": 0}

    def run_once(
        self,
        image: str,
        args: Sequence[str],
        env: Mapping[str, str],
        labels: Mapping[str, str],
        network: str | None = None,
        files: Mapping[str, bytes] | None = None,
        files_owner: int = 0,
    ) -> tuple[int, str]:
        self._record("run_once", image, *args)
        return 0, ""

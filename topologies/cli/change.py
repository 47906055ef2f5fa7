"""``modematrix fault | scale``: break a run by hand, heal it, add or drain its parts."""

from __future__ import annotations

import argparse
import time

from topologies import targets
from topologies.cli.common import EXIT_OK, Sub, emit, example
from topologies.containers.scale import parse_counts
from topologies.exceptions import UsageError
from topologies.faults import SKEW_S


def register(sub: Sub) -> None:
    fault = sub.add_parser(
        "fault",
        help="inject a fault by hand, or heal every fault of a run",
        epilog=example(
            "modematrix fault r-1a2b3c4d kill node-2",
            "modematrix fault r-1a2b3c4d delete-pod kv",
            "modematrix fault r-1a2b3c4d heal",
        ),
    )
    fault.add_argument("run_id", metavar="RUN")
    fault.add_argument(
        "action",
        metavar="ACTION",
        help=f"heal; on containers: kill, stop, restart, pause, partition, clock-forward, clock-back ({SKEW_S} s), "
        "disk-full (a run started with --data-size), io-errors, slow-io (50 ms; a run started with --lazy-fs), "
        "replace-member (heal adds the new one); "
        "on Kubernetes: delete-pod, "
        "rollout-restart (a Deployment), kill, pause, partition, drain (a worker), "
        "clock-forward, clock-back (a pod of auth, kv or queue), replace-member (an etcd pod; heal adds the new one)",
    )
    fault.add_argument(
        "target", nargs="?", metavar="TARGET", help="a node; on Kubernetes a pod, a workload or a worker"
    )
    fault.add_argument("--json", action="store_true")
    fault.set_defaults(run=_fault)
    scale = sub.add_parser(
        "scale",
        help="add or drain a service's nodes (containers) or replicas (kubectl scale)",
        epilog=example("modematrix scale r-1a2b3c4d kv=4 queue=1"),
    )
    scale.add_argument("run_id", metavar="RUN")
    scale.add_argument("counts", nargs="+", metavar="SERVICE=COUNT")
    scale.add_argument("--json", action="store_true")
    scale.set_defaults(run=_scale)


def _fault(args: argparse.Namespace) -> int:
    if args.action != "heal" and args.target is None:
        raise UsageError(f"fault {args.action}: expected a TARGET (a node, a pod, a workload or a worker)")
    run = targets.attach(args.run_id, args.engine)
    if args.action == "heal":
        targets.heal_all(run)
        run.wait_healthy()
        emit(args, {"run_id": run.run_id, "healed": True}, f"run {run.run_id}: healed, and healthy")
        return EXIT_OK
    if args.action not in targets.fault_actions(run.mode):
        raise UsageError(f"no fault {args.action!r} for {run.mode}; expected heal or one of "
                         f"{', '.join(targets.fault_actions(run.mode))}")  # fmt: skip
    applied = targets.inject(run, args.action, args.target)
    emit(
        args,
        {"run_id": run.run_id, "fault": applied},
        f"run {run.run_id}: {applied}; undo: modematrix fault {run.run_id} heal",
    )
    return EXIT_OK


def _scale(args: argparse.Namespace) -> int:
    counts = parse_counts(args.counts)  # bad input: exit 2 before anything is looked up
    run = targets.attach(args.run_id, args.engine)
    started = time.monotonic()
    done = targets.scale(run, counts)
    seconds = round(time.monotonic() - started, 1)
    emit(args, {"run_id": run.run_id, "done": done, "seconds": seconds}, f"run {run.run_id}: {done} in {seconds} s")
    return EXIT_OK

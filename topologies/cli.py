"""The ``modematrix`` command: build the image, start modes, break them, tear them down.

modematrix images build            modematrix up ha [--json] [--platform docker]
modematrix images base             modematrix status [--json]
modematrix images wheels --dest D  modematrix down RUN_ID | --all
modematrix images context DIR      modematrix fault RUN_ID NODE kill|stop|start|restart|pause|unpause|partition|heal
modematrix images check [TAG]      modematrix bench --mode single,ha,scaled   (from loadtests)
                                   modematrix scale RUN_ID kv=4 queue=1
modematrix k8s build               (Kubernetes 1.34.4 from source, then the node image)

Every failure is one line on stderr: exit 2 for bad input (an unknown mode, run or node, an
invalid mode file), 1 for a run that failed. ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import images
from images.progress import step
from topologies import faults, platforms, spec
from topologies.attach import attach
from topologies.cluster import Cluster
from topologies.constants import LABEL_MODE, LABEL_NODE, LABEL_RUN, PLATFORMS
from topologies.exceptions import NotFound, StartTimeout, TopologyError, UsageError
from topologies.launch import launch

EXIT_USAGE, EXIT_FAILED = 2, 1


def _images(args: argparse.Namespace) -> int:
    client = images.docker_client()
    if args.action == "build":
        built = images.build(args.base, quiet=args.quiet, client=client)
        print(built.tag)
        note = "reused: nothing changed" if built.reused else "built"
        print(f"{note} in {built.seconds:.1f} s", file=sys.stderr)
    elif args.action == "base":
        print(images.ensure_base(client, args.base))
    elif args.action == "wheels":
        from images.wheels import ensure_wheelhouse

        dest = Path(args.dest) if args.dest else images.wheelhouse_dir()
        from images.build import platform_of

        wheels = ensure_wheelhouse(dest, arch=args.arch or platform_of(client))
        print(f"{len(wheels)} wheels in {dest}")
    elif args.action == "context":
        images.assemble_context(Path(args.dest), arch=args.arch or "amd64")
        print(f"build context written to {args.dest}; build it with: docker build {args.dest}")
    elif args.action == "lock":
        return _lock(args)
    elif args.action == "check":
        from images.inspect import find_secrets

        tag = args.tag or images.build(quiet=True, client=client).tag
        found = find_secrets(client, tag)
        for line in found:
            print(line)
        print(f"{tag}: {'no secrets found' if not found else f'{len(found)} possible secrets'}", file=sys.stderr)
        return EXIT_FAILED if found else 0
    return 0


def _lock(args: argparse.Namespace) -> int:
    """Refresh images/requirements.lock and images/build.lock on purpose (see images.lock)."""
    from images import lock

    upgrade: bool | list[str] = True if args.upgrade else list(args.upgrade_package or [])
    old_runtime, old_build = lock.read(lock.RUNTIME_LOCK), lock.read(lock.BUILD_LOCK)
    refreshed = lock.refresh(upgrade=upgrade)
    lock.write(refreshed)
    for line in refreshed.changes(old_runtime, old_build) or ["no version changed (hashes rewritten)"]:
        print(line)
    return 0


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.mode == "k8s":
        return _up_kubernetes(args, started) if args.kubeconfig else _up_cluster(args, started)
    mode = spec.load(args.mode)  # bad input is refused before anything starts
    platform = platforms.get(args.platform, reaper=False)
    with step(f"starting {mode.mode}", quiet=args.json):
        cluster = launch(mode, reaper=False, timeout=args.timeout, quiet=args.json, platform=platform)
    if args.json:
        print(json.dumps(cluster.describe(), indent=2))
        return 0
    print(f"run {cluster.run_id}: {cluster.mode} ready in {time.monotonic() - started:.1f} s")
    print(f"  endpoints: {' '.join(cluster.endpoints)}")
    print(f"  CA:        {cluster.ca_file}")
    print(f"  admin:     admin / {cluster.admin.password}")
    for node in cluster.nodes:
        member = " +etcd" if node.db_member else ""
        print(f"  {node.name:10} {node.ip:15} {node.url:26} {','.join(node.services)}{member}")
    print(f"stop it with: modematrix down {cluster.run_id}")
    return 0


KUBE_NAME = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


def _kubeconfig(path: str) -> Any:
    from lightkube.config.kubeconfig import KubeConfig

    try:
        return KubeConfig.from_file(path)
    except Exception as exc:
        raise UsageError(f"--kubeconfig {path}: cannot be read as a kubeconfig ({exc})") from None


def _up_kubernetes(args: argparse.Namespace, started: float) -> int:
    """The k8s mode on a cluster the user has: a namespace of its own, the scaled spec's
    manifests applied there, then ready or removed again."""
    import re
    import secrets as random_secrets
    import uuid

    from topologies import kubeapply, manifests, pki, plan
    from topologies.cluster import run_dir

    config = _kubeconfig(args.kubeconfig)
    namespace = args.namespace or f"mm-{uuid.uuid4().hex[:8]}"
    if not re.fullmatch(KUBE_NAME, namespace):
        raise UsageError(f"--namespace: expected a Kubernetes name (a-z, 0-9, '-'), got {namespace!r}")
    if kubeapply.owns(config, namespace) is False:
        raise UsageError(f"--namespace {namespace}: exists and is not a modematrix run's; choose another")
    tag = args.image or images.build(quiet=True).tag
    image = f"{args.image_registry.rstrip('/')}/{tag}" if args.image_registry else tag
    folder = run_dir(namespace)
    secrets = plan.Secrets(random_secrets.token_urlsafe(32), random_secrets.token_urlsafe(16))
    made = manifests.manifests(
        spec.load("scaled"), namespace=namespace, image=image, secrets=secrets, pki=pki.RunPki.create(folder)
    )
    with step(f"deploying into namespace {namespace}", quiet=args.json):
        deployed = kubeapply.deploy(made, config, timeout=args.timeout)
    if deployed.unavailable:
        kubeapply.delete_namespace(config, namespace)
        shutil.rmtree(folder, ignore_errors=True)
        why = "; ".join(f"{k} {v}" for k, v in deployed.unavailable.items())
        raise StartTimeout(f"k8s: not available after {args.timeout:.0f} s, namespace {namespace} removed: {why}")
    described = {
        "mode": "k8s",
        "run_id": namespace,
        "namespace": namespace,
        "kubeconfig": str(Path(args.kubeconfig).resolve()),
        "image": image,
        "ca_file": str(folder / "ca.pem"),
        "admin": {"username": "admin", "password": secrets.admin_password},
        "front_door": f"envoy.{namespace}.svc:8443",
    }
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        print(f"run {namespace}: k8s ready in {time.monotonic() - started:.1f} s; {described}")
    return 0


def _up_cluster(args: argparse.Namespace, started: float) -> int:
    """The k8s mode on a cluster built here: node containers (1 control plane, --workers
    workers), the runtime image loaded into them, the mode deployed into a namespace named
    like the run. ``modematrix down RUN_ID`` removes it all."""
    from topologies import kuberun

    if args.workers < 2:
        raise UsageError(f"--workers: expected 2 or more, got {args.workers}")

    def report(line: str) -> None:
        if not args.json:
            print(f"  {time.monotonic() - started:6.1f} s  {line}", file=sys.stderr)

    run = kuberun.start(workers=args.workers, timeout=args.timeout, report=report, reaper=False)
    assert run.cluster is not None
    kube = run.cluster
    described = {
        **run.describe(),
        "kubectl": str(kube.kubectl_path),
        "nodes": [{"name": n.name, "role": n.role, "ip": n.ip} for n in kube.nodes],
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    print(f"run {run.run_id}: k8s ready in {described['seconds']} s on {len(kube.nodes)} nodes")
    print(f"  kubectl:    {kube.kubectl_path} --kubeconfig {kube.kubeconfig_path} get pods -n {run.run_id}")
    print(f"  endpoints:  {' '.join(run.endpoints)}")
    print(f"  CA:         {run.ca_file}")
    print(f"  admin:      admin / {run.admin.password}")
    print(f"stop it with: modematrix down {run.run_id}")
    return 0


def _down_kubernetes(args: argparse.Namespace) -> int:
    from topologies import kubeapply
    from topologies.cluster import run_dir

    config = _kubeconfig(args.kubeconfig)
    owned = kubeapply.owns(config, args.run_id)
    if owned is None:
        raise NotFound(f"no namespace {args.run_id!r} in that cluster")
    if not owned:
        raise UsageError(f"namespace {args.run_id!r} is not a modematrix run's; nothing removed")
    kubeapply.delete_namespace(config, args.run_id)
    shutil.rmtree(run_dir(args.run_id), ignore_errors=True)
    print(f"removed run {args.run_id}: its namespace is being deleted")
    return 0


ENVOY_CLUSTERS = (
    "import json, urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:{port}/clusters?format=json', timeout=3).read().decode())"
)


def envoy_health(cluster: Cluster, admin_port: int = 9901) -> dict[str, dict[str, list[str]]]:
    """Per Envoy node, per cluster, each endpoint as ``address healthy|<failed checks>``, from
    Envoy's admin API (loopback only, so asked from inside the node)."""
    found: dict[str, dict[str, list[str]]] = {}
    for node in cluster.nodes:
        if not node.spec.is_envoy or not node.running:
            continue
        code, out = node.exec(["/opt/venv/bin/python", "-c", ENVOY_CLUSTERS.format(port=admin_port)])
        if code != 0:
            found[node.name] = {"(admin API)": [out.strip()[-200:]]}
            continue
        clusters = {}
        for entry in json.loads(out).get("cluster_statuses", []):
            hosts = []
            for host in entry.get("host_statuses", []):
                address = host["address"]["socket_address"]
                flags = [k for k, v in host.get("health_status", {}).items() if v is True and k != "eds_health_status"]
                state = host.get("health_status", {}).get("eds_health_status", "HEALTHY")
                hosts.append(
                    f"{address['address']}:{address['port_value']} {state.lower()}{' ' if flags else ''}"
                    f"{','.join(flags)}"
                )
            clusters[entry["name"]] = hosts
        found[node.name] = clusters
    return found


def _status(args: argparse.Namespace) -> int:
    if args.run_id:
        return _status_of(args)
    platform = platforms.get(args.platform, reaper=False)
    by_run: dict[str, list[platforms.Handle]] = {}
    for handle in platform.list_run(None):
        by_run.setdefault(handle.labels.get(LABEL_RUN, "?"), []).append(handle)
    rows = [
        {
            "run_id": run_id,
            "mode": handles[0].labels.get(LABEL_MODE, "?"),
            "containers": len(handles),
            "running": sum(platform.state(h) == platforms.RUNNING for h in handles),
        }
        for run_id, handles in sorted(by_run.items())
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no modematrix runs")
    for row in rows:
        print(f"{row['run_id']}  {row['mode']:8} {row['running']}/{row['containers']} running")
    return 0


def _status_k8s(args: argparse.Namespace, handles: list[platforms.Handle]) -> int:
    """A k8s run built here: its node containers, and its pods as the API reports them."""
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.resources.core_v1 import Pod

    from topologies.cluster import run_dir

    platform = platforms.get(args.platform, reaper=False)
    kubeconfig = run_dir(args.run_id) / "cluster" / "kubeconfig"
    nodes = [{"name": h.labels.get(LABEL_NODE, h.name), "ip": h.ip, "state": platform.state(h)} for h in handles]
    pods: list[dict[str, Any]] = []
    with Client(config=KubeConfig.from_file(kubeconfig)) as client:
        for pod in client.list(Pod, namespace=args.run_id):
            meta, status = pod.metadata, pod.status
            ready = any(c.type == "Ready" and c.status == "True" for c in (status.conditions if status else None) or [])
            pods.append(
                {
                    "name": meta.name if meta else "?",
                    "phase": status.phase if status else "?",
                    "ready": ready,
                    "node": pod.spec.nodeName if pod.spec else None,
                }
            )
    if args.json:
        print(
            json.dumps(
                {"run_id": args.run_id, "mode": "k8s", "kubeconfig": str(kubeconfig), "nodes": nodes, "pods": pods},
                indent=2,
            )
        )
        return 0
    print(f"run {args.run_id}: k8s, kubeconfig {kubeconfig}")
    for node in sorted(nodes, key=lambda n: str(n["name"])):
        print(f"  {node['name']:18} {node['ip']:15} {node['state']}")
    for row in sorted(pods, key=lambda p: str(p["name"])):
        print(f"    {row['name']:28} {row['phase']:10} {'ready' if row['ready'] else 'not ready':9} on {row['node']}")
    return 0


def _status_of(args: argparse.Namespace) -> int:
    handles = platforms.get(args.platform, reaper=False).list_run(args.run_id)
    if handles and handles[0].labels.get(LABEL_MODE) == "k8s":
        return _status_k8s(args, handles)
    cluster = attach(args.run_id, args.platform)
    nodes = [
        {"name": n.name, "ip": n.ip, "services": list(n.services), "state": n.status, "db_member": n.db_member}
        for n in cluster.nodes
    ]
    envoys = envoy_health(cluster)
    if args.json:
        print(json.dumps({"run_id": cluster.run_id, "mode": cluster.mode, "nodes": nodes, "envoys": envoys}, indent=2))
        return 0
    print(f"run {cluster.run_id}: {cluster.mode}, endpoints {' '.join(cluster.endpoints)}")
    for n in cluster.nodes:
        member = " +etcd" if n.db_member else ""
        print(f"  {n.name:10} {n.ip:15} {n.status:8} {','.join(n.services)}{member}")
    for name, clusters in envoys.items():
        print(f"  {name}: what its Envoy routes to")
        for service, hosts in sorted(clusters.items()):
            print(f"    {service:6} {'; '.join(hosts) or '(no endpoints)'}")
    return 0


def _down(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        if not args.run_id or args.all:
            print("modematrix down: with --kubeconfig, expected the run's namespace", file=sys.stderr)
            return EXIT_USAGE
        return _down_kubernetes(args)
    if not args.all and not args.run_id:
        print("modematrix down: expected a RUN_ID or --all", file=sys.stderr)
        return EXIT_USAGE
    platform = platforms.get(args.platform, reaper=False)
    targets = {h.labels.get(LABEL_RUN, "") for h in platform.list_run(None)} if args.all else {args.run_id}
    for run_id in targets:
        shutil.rmtree(images.cache_dir() / "runs" / run_id, ignore_errors=True)
    removed = platform.remove_run(None if args.all else args.run_id)  # --all: also orphaned networks, volumes
    if not args.all and not any(removed.values()):
        print(f"modematrix down: no run {args.run_id!r}; `modematrix status` lists the runs", file=sys.stderr)
        return EXIT_USAGE
    if args.all:  # networks and volumes of runs whose nodes were already gone count too
        print(
            f"removed every run: {removed['containers']} container(s) of {len(targets)} run(s), "
            f"{removed['networks']} network(s), {removed['volumes']} volume(s)"
        )
    else:
        print(f"removed run {args.run_id}: {removed}")
    return 0


FAULTS: dict[str, Callable[[str], faults.Fault]] = {
    "kill": faults.Kill,
    "stop": faults.Stop,
    "restart": faults.Restart,
    "pause": faults.Pause,
}


def _fault(args: argparse.Namespace) -> int:
    cluster = attach(args.run_id, args.platform)
    node = cluster.node(args.node)
    if args.action in FAULTS:
        FAULTS[args.action](node.name).apply(cluster)
    elif args.action in ("start", "unpause"):
        getattr(node, args.action)()
    elif args.action == "partition":
        faults.Partition.isolating(node.name, cluster).apply(cluster)
    elif args.action == "heal":
        faults.heal_all(cluster)
    print(f"{args.action} {node.name}: now {node.status}")
    return 0


def _scale(args: argparse.Namespace) -> int:
    from topologies.scale import apply, parse_counts

    counts = parse_counts(args.counts)  # bad input: exit 2 before anything is looked up
    cluster = attach(args.run_id, args.platform)
    started = time.monotonic()
    done = apply(cluster, counts)
    added, removed = ", ".join(n.name for n in done.add) or "none", ", ".join(done.remove) or "none"
    print(f"run {cluster.run_id}: added {added}; drained and removed {removed} in {time.monotonic() - started:.1f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modematrix", description="one image, every deployment mode")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    parser.add_argument("--platform", default="docker", choices=PLATFORMS, help="where nodes run (default %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    img = sub.add_parser("images", help="build and inspect the runtime image")
    img.add_argument("action", choices=["build", "base", "wheels", "context", "check", "lock"])
    img.add_argument("dest", nargs="?", help="directory for `context` / `wheels`")
    img.add_argument("--base", default=images.DEFAULT_BASE, help="base image (default %(default)s)")
    img.add_argument("--arch", help="target architecture for wheels (default: the Docker daemon's)")
    img.add_argument("--tag", help="image to check (default: build or reuse the current one)")
    img.add_argument("--quiet", action="store_true")
    img.add_argument("--upgrade", action="store_true", help="lock: re-resolve every package to the newest allowed")
    img.add_argument("--upgrade-package", action="append", metavar="NAME", help="lock: re-resolve only NAME")
    img.set_defaults(run=_images)
    up = sub.add_parser("up", help="start a mode and leave it running")
    up.add_argument("mode", help=f"one of {', '.join(spec.available())}, or a path to a mode .yaml")
    up.add_argument("--json", action="store_true", help="print endpoints, CA file, admin and nodes as JSON")
    up.add_argument("--timeout", type=float, default=180.0)
    up.add_argument("--kubeconfig", help="k8s: deploy onto this existing cluster, in a namespace of its own")
    up.add_argument(
        "--workers", type=int, default=3, help="k8s without --kubeconfig: worker nodes (default %(default)s)"
    )
    up.add_argument("--namespace", help="k8s: that namespace (default mm-<random>); refused if it is not a run's")
    up.add_argument("--image-registry", help="k8s: where the cluster pulls the runtime image from (default: local)")
    up.add_argument("--image", help="k8s: the runtime image (default: build it; its content tag)")
    up.set_defaults(run=_up)
    status = sub.add_parser("status", help="list the runs; with RUN_ID, its nodes and each Envoy's endpoints")
    status.add_argument("run_id", nargs="?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)
    down = sub.add_parser("down", help="remove a run (or --all)")
    down.add_argument("run_id", nargs="?")
    down.add_argument("--all", action="store_true")
    down.add_argument("--kubeconfig", help="a k8s run: the cluster it was deployed onto (RUN_ID is its namespace)")
    down.set_defaults(run=_down)
    fault = sub.add_parser("fault", help="inject or heal a fault by hand")
    fault.add_argument("run_id")
    fault.add_argument("node")
    fault.add_argument("action", choices=[*FAULTS, "start", "unpause", "partition", "heal"])
    fault.set_defaults(run=_fault)
    scale = sub.add_parser("scale", help="add or drain service nodes of a running run: kv=4 queue=1")
    scale.add_argument("run_id")
    scale.add_argument("counts", nargs="+", metavar="SERVICE=COUNT")
    scale.set_defaults(run=_scale)
    k8s = sub.add_parser(
        "k8s", help="the Kubernetes mode's parts: `build` its components from source, print its `manifests`"
    )
    k8s.add_argument("action", choices=["build", "manifests"])
    k8s.add_argument("--mode", default="scaled", help="the mode spec the manifests follow (default %(default)s)")
    k8s.add_argument("--namespace", default="modematrix", help="manifests: the namespace (default %(default)s)")
    k8s.add_argument("--image", help="manifests: the runtime image (default: the current content tag)")
    k8s.add_argument("--pki-dir", help="manifests: where the new cluster CA goes (default: a new run folder)")
    k8s.add_argument("--jobs", type=int, help="Go's parallelism (GOMAXPROCS; default: every core)")
    k8s.add_argument("--quiet", action="store_true")
    k8s.set_defaults(run=_k8s)
    _add_commands(sub)
    return parser


def _k8s(args: argparse.Namespace) -> int:
    if args.action == "manifests":
        return _manifests(args)
    from images import kubernetes

    if args.jobs is not None and args.jobs < 1:
        print(f"modematrix k8s build: --jobs: expected 1 or more, got {args.jobs}", file=sys.stderr)
        return EXIT_USAGE
    node = kubernetes.node_image(jobs=args.jobs, quiet=args.quiet)
    built = node.components
    print(node.tag)
    took = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in built.seconds.items())
    print(
        f"Kubernetes {built.version} in {built.directory}: "
        + ("reused: nothing changed" if built.reused else f"built ({took})")
        + f"; node image {node.tag}: "
        + ("reused" if node.reused else "built"),
        file=sys.stderr,
    )
    return 0


def _manifests(args: argparse.Namespace) -> int:
    """Print the k8s mode's manifests (YAML) for the user's own tooling; the run's CA, which
    clients need, is written to ``--pki-dir``."""
    import re
    import secrets as random_secrets
    import uuid

    from topologies import manifests, pki, plan
    from topologies.cluster import run_dir

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", args.namespace):
        print(
            f"modematrix k8s manifests: --namespace: expected a Kubernetes name, got {args.namespace!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    mode = spec.load(args.mode)
    if mode.db != "etcd" or not mode.members:
        print(
            f"modematrix k8s manifests: --mode {args.mode}: expected a mode with etcd members (scaled)", file=sys.stderr
        )
        return EXIT_USAGE
    image = args.image or images.build(quiet=True).tag
    folder = Path(args.pki_dir) if args.pki_dir else run_dir(f"k8s-{uuid.uuid4().hex[:8]}")
    run_pki = pki.RunPki.create(folder)
    secrets = plan.Secrets(random_secrets.token_urlsafe(32), random_secrets.token_urlsafe(16))
    made = manifests.manifests(mode, namespace=args.namespace, image=image, secrets=secrets, pki=run_pki)
    print(manifests.to_yaml(made), end="")
    print(f"cluster CA: {folder / 'ca.pem'}; admin password in the Secret modematrix-secrets", file=sys.stderr)
    return 0


def _add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Subcommands that other packages register in the ``modematrix.commands`` entry point group
    (``bench`` from loadtests): the CLI lives here, yet topologies imports none of them."""
    for entry in importlib.metadata.entry_points(group="modematrix.commands"):
        entry.load()(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "images" and args.action == "context" and not args.dest:
        print("modematrix images context: expected a destination directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except TopologyError as exc:
        return _fail(args, exc, exc.exit_code)
    except images.ImageError as exc:
        return _fail(args, exc, EXIT_FAILED)
    except KeyboardInterrupt:
        print("modematrix: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: still one line, with the way to see more
        return _fail(args, exc, EXIT_FAILED, unexpected=True)


def _fail(args: argparse.Namespace, exc: BaseException, code: int, *, unexpected: bool = False) -> int:
    if args.debug:
        traceback.print_exc()
    kind = f"unexpected {type(exc).__name__}: " if unexpected else ""
    hint = "" if args.debug else " (--debug shows the traceback)" if unexpected else ""
    if isinstance(exc, StartTimeout) and exc.logs:
        kept = images.cache_dir() / "logs" / f"{exc.node or 'node'}-{int(time.time())}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(exc.logs)
        hint += f"; its last log lines: {kept}"
    print(f"modematrix: {kind}{exc}{hint}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

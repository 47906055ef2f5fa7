"""pytest plugin: ``--mode``, ``--engine``, ``--control-planes`` and ``--run``, a
session-scoped ``run`` fixture per mode, a marker per mode.

    pytest scenarios --mode single,ha
    pytest scenarios --mode k8s --control-planes 3   # the cluster built here with three
    pytest scenarios --run r-1a2b3c4d        # a run that is up already (modematrix up): kept
    pytest scenarios/test_service.py --service topologies/services/etcd.yaml --members 3,5

Every test that takes ``run`` runs once per selected mode. A test marked with mode markers
(``@pytest.mark.ha``; ``scaled-haproxy`` is ``@pytest.mark.scaled_haproxy``) runs only in
those modes. Each mode's run starts once per session and is removed when the session ends
(or by the reaper, if the session dies). A run that fails to start is a fixture error naming
the node, with its last log lines. With ``--run``, the tests take that run (its mode is the
one selected) and leave it running.

With ``--service FILE`` (a service file: :mod:`topologies.service`), the ``service_run``
fixture is that service started with each of ``--members`` (default: every size the file
allows), one run per size per session, its mode ``NAME-N``; with ``--on kubernetes``, as a
StatefulSet on a cluster built here, its mode ``NAME-N-k8s``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from topologies.engines import ENGINES
from topologies.exceptions import StartTimeout, TopologyError
from topologies.run import Run
from topologies.service import ServiceSpec
from topologies.targets import Options, attach, modes, start, target_of


def marker(mode: str) -> str:
    """A mode's marker name: a Python identifier (``scaled-haproxy`` -> ``scaled_haproxy``)."""
    return mode.replace("-", "_")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modematrix")
    group.addoption(
        "--mode",
        default="single",
        help=f"comma-separated modes to run scenarios against ({', '.join(modes())}); default single",
    )
    group.addoption("--engine", default="docker", choices=ENGINES, help="where the modes' containers run")
    group.addoption(
        "--control-planes",
        dest="modematrix_control_planes",
        type=int,
        default=1,
        metavar="N",
        help="a Kubernetes mode's cluster built here: 1 or 3 control planes (its control-plane scenarios need 3)",
    )
    group.addoption(
        "--run",
        dest="modematrix_run",
        metavar="RUN",
        help="test this run (modematrix up; its mode, instead of --mode; a service's run, "
        "`up --service`, for service_run instead of --service) and leave it running",
    )
    group.addoption(
        "--service",
        dest="modematrix_service",
        metavar="FILE",
        help="a service file (topologies/services/etcd.yaml, or yours): what the service_run fixture starts",
    )
    group.addoption(
        "--on",
        dest="modematrix_on",
        default="containers",
        choices=("containers", "kubernetes"),
        help="where --service's members run: containers, or a Kubernetes cluster built here (default containers)",
    )
    group.addoption(
        "--members",
        dest="modematrix_members",
        default="",
        metavar="N,...",
        help="--service's cluster sizes (1, 3, 5; default: every size its file allows)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for mode in modes():
        config.addinivalue_line("markers", f"{marker(mode)}: run only against the {mode} mode")
    config.addinivalue_line("markers", "failover: injects faults into a running mode")
    given = given_run(config)  # a --run that names no run is a usage error now, not at collection
    if service_sizes(config) is not None and is_service(given):  # so is a wrong service file, or size
        raise pytest.UsageError("--run names a service's run: it is what service_run tests; without --service")


def is_service(run: Run | None) -> bool:
    """A run of a service file (``up --service``), on containers or on Kubernetes."""
    from topologies import ServiceRun
    from topologies.kubernetes.service import ServiceKubeRun

    return isinstance(run, ServiceRun | ServiceKubeRun)


SERVICE = pytest.StashKey["tuple[ServiceSpec, list[int]] | None"]()


def service_sizes(config: pytest.Config) -> tuple[ServiceSpec, list[int]] | None:
    """``--service``'s file, loaded once, and the sizes to run it at; None without it."""
    if SERVICE not in config.stash:
        config.stash[SERVICE] = _service_sizes(config)
    return config.stash[SERVICE]


def _service_sizes(config: pytest.Config) -> tuple[ServiceSpec, list[int]] | None:
    from topologies import service

    path = config.getoption("modematrix_service", default=None)
    if not path:
        return None
    try:
        spec = service.load(str(path))
    except TopologyError as exc:
        raise pytest.UsageError(f"--service: {exc}") from None
    try:
        given = spec.sizes_from(str(config.getoption("modematrix_members") or ""), "--members")
    except TopologyError as exc:
        raise pytest.UsageError(str(exc)) from None
    return spec, list(given or spec.sizes)


GIVEN = pytest.StashKey["Run"]()


def given_run(config: pytest.Config) -> Run | None:
    """The run ``--run`` names, attached once per session."""
    run_id = config.getoption("modematrix_run", default=None)
    if not run_id:
        return None
    if GIVEN not in config.stash:
        try:
            config.stash[GIVEN] = attach(str(run_id), str(config.getoption("--engine")))
        except TopologyError as exc:
            raise pytest.UsageError(f"--run {run_id}: {exc}") from None
    return config.stash[GIVEN]


def selected_modes(config: pytest.Config) -> list[str]:
    given = given_run(config)
    if is_service(given):
        return []  # the run fixture's tests are the runtime's: none for a service's run
    if given is not None:
        return [given.mode]
    chosen = [m.strip() for m in str(config.getoption("--mode")).split(",") if m.strip()]
    unknown = [m for m in chosen if m not in modes()]
    if unknown:
        raise pytest.UsageError(f"--mode: unknown mode {unknown[0]!r}; expected some of {', '.join(modes())}")
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    given = given_run(metafunc.config)
    if "service_run" in metafunc.fixturenames and is_service(given):
        assert given is not None
        metafunc.parametrize("service_run", [0], ids=[given.mode], indirect=True, scope="session")
    elif "service_run" in metafunc.fixturenames:
        service = service_sizes(metafunc.config)
        sizes = service[1] if service else [0]  # 0: no --service, the fixture skips
        on = "" if metafunc.config.getoption("modematrix_on") == "containers" else "-kubernetes"
        ids = [f"{service[0].name}-{n}{on}" if service else "no-service" for n in sizes]
        metafunc.parametrize("service_run", sizes, ids=ids, indirect=True, scope="session")
    if "run" not in metafunc.fixturenames:
        return
    marked = {m.name for m in metafunc.definition.iter_markers()}
    chosen = [
        m for m in selected_modes(metafunc.config) if not marked & {marker(x) for x in modes()} or marker(m) in marked
    ]
    metafunc.parametrize("run", chosen, indirect=True, scope="session")


def start_failure(exc: TopologyError) -> str:
    """What a fixture error says: the error, and for a node that did not start, its logs."""
    if isinstance(exc, StartTimeout) and exc.logs:
        tail = "\n".join(exc.logs.splitlines()[-30:])
        return f"{exc}\n--- last 30 log lines of {exc.node} ---\n{tail}"
    return str(exc)


@pytest.fixture(scope="session")
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    mode = request.param
    given = given_run(request.config)
    if given is not None:
        yield given  # the user's: theirs to remove
        return
    options = Options(engine=request.config.getoption("--engine"))
    if target_of(mode) == "kubernetes":
        options = replace(options, control_planes=int(request.config.getoption("modematrix_control_planes")))
    try:
        started = start(mode, options)
    except TopologyError as exc:
        pytest.fail(f"the {mode} run did not start: {start_failure(exc)}", pytrace=False)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def service_run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """``--service``'s service with ``request.param`` members, removed when the session ends."""
    from topologies import engines
    from topologies.containers.service import start_service
    from topologies.kubernetes.service import start_service_k8s

    given = given_run(request.config)
    if is_service(given):
        assert given is not None
        yield given  # the user's (modematrix up --service, on any cluster): theirs to remove
        return
    chosen = service_sizes(request.config)
    if chosen is None or not request.param:
        pytest.skip("needs --service FILE (a service file, e.g. topologies/services/etcd.yaml), or --run RUN of one")
    engine = engines.get(str(request.config.getoption("--engine")))
    members = int(request.param)
    started: Run
    try:
        if request.config.getoption("modematrix_on") == "kubernetes":
            started = start_service_k8s(chosen[0], members, engine=engine)
        else:
            started = start_service(chosen[0], members, engine)
    except TopologyError as exc:
        pytest.fail(f"{chosen[0].name} with {request.param} members did not start: {start_failure(exc)}", pytrace=False)
    try:
        yield started
    finally:
        started.stop()

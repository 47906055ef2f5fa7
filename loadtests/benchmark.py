"""One run, one machine, one load generator: requests/s and p50/p99 for each target, as a
ratio to a bare Starlette/uvicorn JSON endpoint.

    python -m loadtests.benchmark [--seconds 10] [--concurrency 16] [--modes single,ha,scaled]

Targets: the baseline (bare Starlette over the same TLS), the runtime as one local process on
SQLite (kv GET and PUT), the single, ha and scaled modes through their front doors (kv GET
and PUT), and direct etcd puts to the ha mode's etcd. The generator is a closed loop of
``concurrency`` asyncio clients with keep-alive, bounded by time; it is the same for every
row, so the ratios compare the servers, not the client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Row:
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


async def _drive(
    base_urls: list[str],
    verify: ssl.SSLContext | bool,
    call: Call,
    seconds: float,
    concurrency: int,
    headers: dict[str, str],
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    clients = [
        httpx.AsyncClient(base_url=base_urls[i % len(base_urls)], verify=verify, headers=headers, timeout=10)
        for i in range(concurrency)
    ]

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal errors
        i = 0
        while time.monotonic() < deadline:
            i += 1
            started = time.perf_counter()
            try:
                reply = await call(client, n * 1_000_000 + i)
                ok = reply.status_code < 400
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    try:
        await asyncio.gather(*(worker(c, n) for n, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return latencies, errors


def measure(
    name: str,
    base_urls: list[str],
    verify: ssl.SSLContext | bool,
    call: Call,
    *,
    seconds: float,
    concurrency: int,
    headers: dict[str, str] | None = None,
) -> Row:
    asyncio.run(_drive(base_urls, verify, call, min(2.0, seconds / 5), concurrency, headers or {}))  # warm-up
    latencies, errors = asyncio.run(_drive(base_urls, verify, call, seconds, concurrency, headers or {}))
    if len(latencies) < 2:
        return Row(name, 0.0, float("nan"), float("nan"), errors)
    cuts = statistics.quantiles(latencies, n=100)
    return Row(name, len(latencies) / seconds, cuts[49] * 1000, cuts[98] * 1000, errors)


# -- targets ---------------------------------------------------------------------------------


BASELINE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def hello(request):
    return JSONResponse({"hello": "world"})

app = Starlette(routes=[Route("/json", hello)])
"""


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baseline")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, verify: ssl.SSLContext) -> None:
    from topologies.wait import wait_until

    wait_until(
        lambda: httpx.get(url, verify=verify, timeout=1).status_code < 500,
        timeout=60,
        interval=0.1,
        message=f"{url} answering",
        ignore=(httpx.HTTPError, OSError),
    )


def baseline(work: Path, seconds: float, concurrency: int) -> Row:
    (work / "baseline_app.py").write_text(BASELINE_APP)
    cert, key = _self_signed(work)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "baseline_app:app",
            "--port",
            str(port),
            "--ssl-certfile",
            str(cert),
            "--ssl-keyfile",
            str(key),
            "--log-level",
            "warning",
            "--no-access-log",
            "--http",
            "h11",
        ],
        cwd=work,
    )
    try:
        verify = ssl.create_default_context(cafile=str(cert))
        _wait(f"https://127.0.0.1:{port}/json", verify)
        return measure(
            "baseline: Starlette JSON",
            [f"https://127.0.0.1:{port}"],
            verify,
            lambda c, i: c.get("/json"),
            seconds=seconds,
            concurrency=concurrency,
        )
    finally:
        server.terminate()
        server.wait(10)


def _kv_rows(
    label: str, urls: list[str], verify: ssl.SSLContext, password: str, seconds: float, concurrency: int
) -> list[Row]:
    token = httpx.post(
        urls[0] + "/v1/auth/login", json={"username": "admin", "password": password}, verify=verify
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(100):
        httpx.put(f"{urls[0]}/v1/kv/bench/{i}", content=b"x" * 64, verify=verify, headers=headers)
    get = measure(
        f"{label}: kv GET",
        urls,
        verify,
        lambda c, i: c.get(f"/v1/kv/bench/{i % 100}"),
        seconds=seconds,
        concurrency=concurrency,
        headers=headers,
    )
    put = measure(
        f"{label}: kv PUT",
        urls,
        verify,
        lambda c, i: c.put(f"/v1/kv/bench/{i % 100}", content=b"y" * 64),
        seconds=seconds,
        concurrency=concurrency,
        headers=headers,
    )
    return [get, put]


def runtime_process(work: Path, seconds: float, concurrency: int) -> list[Row]:
    port, data = _free_port(), work / "runtime-data"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime",
            "serve",
            "--services",
            "all",
            "--data-dir",
            str(data),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env={**os.environ, "RUNTIME_LOG_LEVEL": "warning"},
    )
    try:
        from topologies.wait import wait_until

        wait_until(lambda: (data / "admin-password").exists(), timeout=60, interval=0.1, message="runtime started")
        verify = ssl.create_default_context(cafile=str(data / "ca.pem"))
        _wait(f"https://127.0.0.1:{port}/readyz", verify)
        return _kv_rows(
            "runtime process (SQLite)",
            [f"https://127.0.0.1:{port}"],
            verify,
            (data / "admin-password").read_text().strip(),
            seconds,
            concurrency,
        )
    finally:
        server.terminate()
        server.wait(30)


def mode_rows(mode: str, seconds: float, concurrency: int) -> list[Row]:
    import topologies

    with topologies.start(mode) as cluster:
        verify = cluster.tls_context()
        rows = _kv_rows(f"{mode} mode", cluster.endpoints, verify, cluster.admin.password, seconds, concurrency)
        if mode == "ha":
            member = f"http://{cluster.nodes[0].ip}:2379"
            value = base64.b64encode(b"y" * 64).decode()
            rows.append(
                measure(
                    "etcd direct put (ha's 3 members)",
                    [member],
                    False,
                    lambda c, i: c.post(
                        "/v3/kv/put",
                        json={"key": base64.b64encode(f"bench/{i % 100}".encode()).decode(), "value": value},
                    ),
                    seconds=seconds,
                    concurrency=concurrency,
                )
            )
    return rows


def render(rows: list[Row], concurrency: int, seconds: float) -> str:
    base = rows[0].rps or 1.0
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{concurrency} concurrent clients, {seconds:g} s per row",
        "| target | requests/s | p50 ms | p99 ms | errors | ratio to baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {r.rps / base:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--modes", default="single,ha,scaled")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modematrix-bench-") as tmp:
        work = Path(tmp)
        rows = [baseline(work, args.seconds, args.concurrency), *runtime_process(work, args.seconds, args.concurrency)]
        for mode in filter(None, args.modes.split(",")):
            rows += mode_rows(mode, args.seconds, args.concurrency)
    print(render(rows, args.concurrency, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

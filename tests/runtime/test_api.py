"""The pinned HTTP API against a real runtime process (HTTPS, SQLite)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.routing import ROUTES
from tests.conftest import RuntimeProcess
from topologies.wait import wait_until


def error_shape(reply: httpx.Response) -> dict[str, str]:
    body = reply.json()
    assert set(body) == {"error", "detail"} and all(isinstance(v, str) for v in body.values()), body
    return dict(body)


def test_put_get_with_revision_and_etag(api: httpx.Client) -> None:
    put = api.put("/v1/kv/greeting/en", content=b"hello")
    assert put.status_code == 200
    revision = put.json()["revision"]
    assert put.json() == {"key": "greeting/en", "revision": revision}
    got = api.get("/v1/kv/greeting/en")
    assert got.status_code == 200 and got.content == b"hello" and got.headers["etag"] == f'"{revision}"'


def test_if_match_and_if_none_match(api: httpx.Client) -> None:
    first = api.put("/v1/kv/cas", content=b"1", headers={"If-None-Match": "*"}).json()["revision"]
    assert api.put("/v1/kv/cas", content=b"x", headers={"If-None-Match": "*"}).status_code == 412
    stale = api.put("/v1/kv/cas", content=b"x", headers={"If-Match": str(first + 1000)})
    assert stale.status_code == 412 and error_shape(stale)["error"] == "precondition_failed"
    second = api.put("/v1/kv/cas", content=b"2", headers={"If-Match": f'"{first}"'})
    assert second.status_code == 200 and second.json()["revision"] > first
    assert api.get("/v1/kv/cas").content == b"2"


def test_delete_honours_if_match(api: httpx.Client) -> None:
    revision = api.put("/v1/kv/gone", content=b"v").json()["revision"]
    assert api.delete("/v1/kv/gone", headers={"If-Match": str(revision + 1)}).status_code == 412
    assert api.delete("/v1/kv/gone", headers={"If-Match": str(revision)}).status_code == 204
    assert api.delete("/v1/kv/gone").status_code == 404
    assert error_shape(api.get("/v1/kv/gone"))["error"] == "not_found"


def test_list_by_prefix_with_paging(api: httpx.Client) -> None:
    for i in range(5):
        api.put(f"/v1/kv/list/{i}", content=b"x" * i)
    page = api.get("/v1/kv", params={"prefix": "list/", "limit": 2}).json()
    assert [i["key"] for i in page["items"]] == ["list/0", "list/1"] and page["next"] == "list/1"
    assert set(page["items"][1]) == {"key", "revision"} and isinstance(page["items"][1]["revision"], int)
    rest = api.get("/v1/kv", params={"prefix": "list/", "limit": 10, "after": page["next"]}).json()
    assert [i["key"] for i in rest["items"]] == ["list/2", "list/3", "list/4"] and rest["next"] is None


def test_size_limit_is_413_and_nothing_is_written(api: httpx.Client) -> None:
    reply = api.put("/v1/kv/big", content=b"x" * (1024 * 1024 + 1))
    assert reply.status_code == 413 and error_shape(reply)["error"] == "too_large"
    assert api.get("/v1/kv/big").status_code == 404
    assert api.put("/v1/kv/big", content=b"x" * (1024 * 1024)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("PUT", "/v1/kv/a%01b", {"content": b"v"}),
        ("PUT", "/v1/kv/" + "k" * 513, {"content": b"v"}),
        ("PUT", "/v1/kv/x", {"content": b"v", "headers": {"If-Match": "yesterday"}}),
        ("PUT", "/v1/kv/x", {"content": b"v", "headers": {"If-None-Match": "abc"}}),
        ("GET", "/v1/kv", {"params": {"limit": "0"}}),
        ("POST", "/v1/queue/bad name/jobs", {"content": b"{}"}),
        ("POST", "/v1/queue/q/jobs", {"content": b"{not json"}),
        ("POST", "/v1/queue/q/claim", {"params": {"lease": "-5"}}),
        ("POST", "/v1/queue/q/jobs/nope/ack", {"json": {"lease_id": "x"}}),
        ("POST", "/v1/auth/users", {"json": {"username": "u", "password": "short", "roles": ["reader"]}}),
        ("POST", "/v1/auth/users", {"json": {"username": "u", "password": "long-enough", "roles": ["god"]}}),
    ],
)
def test_bad_input_is_400_with_the_error_shape(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    reply = api.request(method, path, **kwargs)
    assert reply.status_code == 400, reply.text
    assert error_shape(reply)["error"] == "invalid"


def test_unknown_path_and_method(api: httpx.Client) -> None:
    assert error_shape(api.get("/v2/nothing"))["error"] == "not_found"
    reply = api.post("/v1/kv/x")
    assert reply.status_code == 405 and reply.headers["allow"] == "DELETE, GET, PUT"


def test_queue_claim_hides_ack_removes_expired_lease_returns(api: httpx.Client) -> None:
    job = api.post("/v1/queue/work/jobs", json={"n": 1})
    assert job.status_code == 201
    job_id = job.json()["id"]
    claim = api.post("/v1/queue/work/claim", params={"lease": "0.5"})
    assert claim.status_code == 200 and claim.json()["id"] == job_id and claim.json()["payload"] == {"n": 1}
    assert api.post("/v1/queue/work/claim").status_code == 204, "a claimed job must be invisible"
    again = wait_until(
        lambda: (r := api.post("/v1/queue/work/claim", params={"lease": "30"})).status_code == 200 and r,
        timeout=10,
        interval=0.1,
        message="expired lease returns the job",
    )
    assert again.json()["id"] == job_id and again.json()["attempts"] == 2
    stale = api.post(f"/v1/queue/work/jobs/{job_id}/ack", json={"lease_id": claim.json()["lease_id"]})
    assert stale.status_code == 409 and stale.json()["error"] == "lease_mismatch"
    ok = api.post(f"/v1/queue/work/jobs/{job_id}/ack", json={"lease_id": again.json()["lease_id"]})
    assert ok.status_code == 204
    assert api.post(f"/v1/queue/work/jobs/{job_id}/ack", json={"lease_id": again.json()["lease_id"]}).status_code == 404
    assert api.get(f"/v1/queue/work/jobs/{job_id}").status_code == 404
    assert api.post("/v1/queue/work/claim").status_code == 204


def test_two_claimers_never_hold_the_same_job(api: httpx.Client) -> None:
    ids = {api.post("/v1/queue/race/jobs", json=i).json()["id"] for i in range(6)}
    claimed = [api.post("/v1/queue/race/claim").json()["id"] for _ in range(6)]
    assert sorted(claimed) == sorted(ids)
    assert api.post("/v1/queue/race/claim").status_code == 204


def test_ops_endpoints(server: RuntimeProcess, api: httpx.Client) -> None:
    with server.client() as anon:
        assert anon.get("/healthz").json()["status"] == "alive"
        assert anon.get("/readyz").json()["status"] == "ready"
        assert anon.get("/ca.pem").content == server.ca_file.read_bytes()
        assert anon.get("/metrics").status_code == 401
        spec = anon.get("/openapi.json").json()
    operations = {op["operationId"] for methods in spec["paths"].values() for op in methods.values()}
    assert operations == {r.name for r in ROUTES}
    metrics = api.get("/metrics").text
    assert 'runtime_requests_total{method="PUT",route="kv.put",status="200"}' in metrics
    assert "runtime_db_duration_seconds_bucket" in metrics


def test_request_id_is_echoed_and_logged(server: RuntimeProcess, api: httpx.Client) -> None:
    reply = api.get("/v1/kv/never-there", headers={"X-Request-Id": "trace-me-123"})
    assert reply.headers["x-request-id"] == "trace-me-123"
    lines = [json.loads(line) for line in server.log_file.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "trace-me-123" and line.get("status") == 404 for line in lines)


def test_data_survives_a_restart_and_sigterm_exits_0(tmp_path: Path) -> None:
    proc = RuntimeProcess(tmp_path / "node").start().wait_ready()
    with proc.client(proc.login()) as c:
        revision = c.put("/v1/kv/durable", content=b"yes").json()["revision"]
    assert proc.terminate() == 0
    proc.start().wait_ready()
    with proc.client(proc.login()) as c:
        got = c.get("/v1/kv/durable")
    assert got.content == b"yes" and got.headers["etag"] == f'"{revision}"'
    assert proc.terminate() == 0


def test_sigterm_drains_an_in_flight_request(tmp_path: Path) -> None:
    """A 1 MiB upload sent slowly is still answered after SIGTERM arrives mid-body."""
    proc = RuntimeProcess(tmp_path / "node").start().wait_ready()
    token = proc.login()
    assert proc.process is not None
    sent = {"n": 0}

    def body() -> Iterator[bytes]:
        for _ in range(8):
            sent["n"] += 1
            if sent["n"] == 3:
                proc.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                time.sleep(0.3)  # the signal must arrive while the body is still coming
            yield b"x" * 1000

    with proc.client(token) as c:
        reply = c.put("/v1/kv/slow", content=body())
    assert reply.status_code == 200
    assert proc.process.wait(30) == 0


def test_insecure_http_serves_plain_http_and_warns(tmp_path: Path) -> None:
    proc = RuntimeProcess(tmp_path / "node", env={"RUNTIME_INSECURE_HTTP": "true"}).start()
    url = f"http://127.0.0.1:{proc.port}"
    wait_until(
        lambda: httpx.get(url + "/readyz", timeout=1).status_code == 200,
        timeout=30,
        interval=0.1,
        message="plain HTTP readyz",
        ignore=(httpx.HTTPError,),
    )
    log = proc.log_file.read_text()
    assert "serving plain HTTP (--insecure-http)" in log and '"level": "warning"' in log
    proc.kill()


def test_sigkill_during_concurrent_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """Group commit keeps durability: 8 writers PUT as fast as they can, the process is
    SIGKILLed mid-stream; after a restart every acknowledged write reads back."""
    import threading

    proc = RuntimeProcess(tmp_path / "node").start().wait_ready()
    token = proc.login()
    acknowledged: dict[str, int] = {}
    stop = threading.Event()

    def writer(n: int) -> None:
        with proc.client(token) as c:
            for i in range(100_000):
                if stop.is_set():
                    return
                key = f"w{n}-{i}"
                try:
                    reply = c.put(f"/v1/kv/{key}", content=key.encode())
                except httpx.HTTPError:
                    return
                if reply.status_code == 200:
                    acknowledged[key] = reply.json()["revision"]

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= 300, timeout=60, interval=0.05, message="300 acknowledged writes")
    assert proc.process is not None
    proc.process.send_signal(signal.SIGKILL)
    proc.process.wait(10)
    stop.set()
    for thread in threads:
        thread.join(30)
    proc.start().wait_ready()
    with proc.client(proc.login()) as c:
        lost = [k for k, rev in acknowledged.items() if c.get(f"/v1/kv/{k}").headers.get("etag") != f'"{rev}"']
    print(f"\nSIGKILL after {len(acknowledged)} acknowledged concurrent writes: {len(lost)} lost")
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    assert proc.terminate() == 0


def test_the_data_dir_is_private_and_its_secrets_and_db_are_owner_only(tmp_path: Path) -> None:
    """Outside the image (umask 022) the data dir was 0755 and the DB 0644."""
    import stat

    proc = RuntimeProcess(tmp_path / "node").start().wait_ready()
    with proc.client(proc.login()) as c:
        assert c.put("/v1/kv/mode", content=b"x").status_code == 200  # the WAL exists now
        data = proc.data_dir
        modes = {p.relative_to(data).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [data, *data.rglob("*")]}
    public = {"ca.pem", "tls/ca.pem", "tls/node.pem"}  # certificates
    assert modes["."] == 0o700 and all(m == 0o700 for p, m in modes.items() if (data / p).is_dir()), modes
    assert all(m == 0o600 for p, m in modes.items() if (data / p).is_file() and p not in public), modes
    assert {p for p in modes if p.startswith("runtime.db")} >= {"runtime.db", "runtime.db-wal"}
    assert proc.terminate() == 0


def test_an_atomic_write_fsyncs_the_file_and_then_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is only durable once the directory is synced (a crash could lose it)."""
    import os
    import stat

    from runtime.files import write_atomic

    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_atomic(tmp_path / "sub" / "secret", b"x")
    assert synced == ["file", "dir"] and (tmp_path / "sub" / "secret").read_bytes() == b"x"


def test_a_job_nobody_acks_is_dead_lettered_and_any_job_can_be_deleted(tmp_path: Path) -> None:
    """A job no consumer can finish must not be handed out forever: after max_attempts claims
    without an ack it is dead (kept, visible, never claimed again), and DELETE removes it."""
    proc = RuntimeProcess(tmp_path / "node", env={"RUNTIME_QUEUE_MAX_ATTEMPTS": "3"}).start().wait_ready()
    with proc.client(proc.login()) as c:
        job = c.post("/v1/queue/poison/jobs", json={"x": 1}).json()["id"]

        def claimed_again() -> bool:  # the 0.1 s lease has run out: the job is handed out again
            reply = c.post("/v1/queue/poison/claim", params={"lease": "0.1"})
            return reply.status_code == 200 and reply.json()["id"] == job

        for attempt in range(3):
            wait_until(claimed_again, timeout=10, interval=0.05, message=f"claim {attempt + 1} of the job")
        wait_until(
            lambda: (
                c.post("/v1/queue/poison/claim", params={"lease": "0.1"}).status_code == 204
                and c.get(f"/v1/queue/poison/jobs/{job}").json()["state"] == "dead"
            ),
            timeout=10,
            interval=0.05,
            message="the job, claimed 3 times and never acked, dead-lettered",
        )
        assert c.post("/v1/queue/poison/claim", params={"lease": "0.1"}).status_code == 204, (
            "a dead job is never handed out"
        )
        assert c.delete(f"/v1/queue/poison/jobs/{job}").status_code == 204
        assert c.get(f"/v1/queue/poison/jobs/{job}").status_code == 404
        assert c.delete(f"/v1/queue/poison/jobs/{job}").status_code == 404
    assert proc.terminate() == 0

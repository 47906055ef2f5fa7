"""The etcd fixture itself: a member that loses its port to another process is started again."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.conftest import EtcdCluster, MemberExited, _healthy

pytestmark = pytest.mark.skipif(not shutil.which("etcd"), reason="needs the host's etcd binary")


def test_a_member_whose_port_was_taken_is_started_again_on_new_ports(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path, 3)
    taken = cluster.members[0].client_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        cluster.start()
        try:
            assert cluster.members[0].client_port != taken
            assert all(_healthy(url) for url in cluster.endpoints)
        finally:
            cluster.stop()


def test_a_member_that_cannot_start_stops_the_others_and_says_why(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path, 3)
    cluster.members[2].data_dir.parent.mkdir(parents=True, exist_ok=True)
    cluster.members[2].data_dir.write_text("not a directory")  # etcd refuses this data dir
    with pytest.raises(MemberExited, match="etcd member m2 exited") as caught:
        cluster.start()
    assert caught.value.log
    assert all(m.process is not None and m.process.poll() is not None for m in cluster.members)

"""API fuzzing: schemathesis against /openapi.json of a real runtime, as admin.

Every operation gets generated requests (schema-valid and not); every answer must be a
documented status with a documented body, and none may be a 5xx. Logout and password
change are left out (they revoke the token the run uses), as is certificate renewal (mutual
TLS between members, tested in test_certs.py). Bounded: ``MODEMATRIX_FUZZ_EXAMPLES`` per
operation (default 25).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RuntimeProcess

EXCLUDED = ("/v1/auth/logout", "/v1/auth/password", "/v1/_cluster/renew")
# every check but "schema-valid data must be accepted": a valid-looking PUT may rightly get 412
CHECKS = ("--checks", "all", "--exclude-checks", "positive_data_acceptance")


def test_every_answer_is_documented_and_none_is_a_5xx(server: RuntimeProcess, tmp_path: Path) -> None:
    binary = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(binary).exists():
        pytest.fail("schemathesis is not installed (it is in the test extras: pip install -e '.[test]')")
    examples = os.environ.get("MODEMATRIX_FUZZ_EXAMPLES", "25")
    argv = [binary, "run", f"{server.url}/openapi.json", "-H", f"Authorization: Bearer {server.login()}"]
    argv += [*CHECKS, "--max-examples", examples, "--tls-verify", str(server.ca_file), "--seed", "1"]
    for path in EXCLUDED:
        argv += ["--exclude-path", path]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = done.stdout[-3000:]
    print(summary)
    assert done.returncode == 0, summary

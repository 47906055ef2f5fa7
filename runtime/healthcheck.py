"""``python -m runtime.healthcheck``: exit 0 when this node's /readyz answers 200.

Used by the image's HEALTHCHECK. Reads the same settings as ``runtime serve`` (environment,
``RUNTIME_CONFIG`` file) to find the port, the scheme and the CA to trust.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from pathlib import Path

from runtime import config
from runtime.exceptions import ConfigError


def main() -> int:
    file = os.environ.get("RUNTIME_CONFIG")
    try:
        raw = config.gather(file=Path(file) if file else None, env=os.environ, flags={})
        _, port = config.parse_hostport(raw["listen"]) if "listen" in raw else config.default("listen")
        data_dir = Path(str(raw["data_dir"])) if "data_dir" in raw else config.default("data_dir")
        insecure = (
            config.parse_bool(raw["insecure_http"]) if "insecure_http" in raw else config.default("insecure_http")
        )
    except (ConfigError, ValueError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    context = None if insecure else ssl.create_default_context(cafile=str(data_dir / "ca.pem"))
    url = f"{'http' if insecure else 'https'}://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as reply:  # noqa: S310 - fixed local URL
            return 0 if reply.status == 200 else 1
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

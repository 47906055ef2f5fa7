"""What the processes a node starts (an etcd member, Envoy) inherit: a scrubbed environment.

The runtime's own environment may hold settings a child has no use for, secrets among them
(``RUNTIME_CLUSTER_SECRET``, ``RUNTIME_ADMIN_PASSWORD``, ``RUNTIME_TLS_BUNDLE`` when a user
sets them directly): a child gets only what every program needs.

>>> environment({"PATH": "/bin", "RUNTIME_CLUSTER_SECRET": "s3cret", "HOME": "/h", "ETCD_X": "1"})
{'PATH': '/bin', 'HOME': '/h'}
"""

from __future__ import annotations

import os
from collections.abc import Mapping

KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if base is None else base
    return {name: source[name] for name in KEEP if name in source}

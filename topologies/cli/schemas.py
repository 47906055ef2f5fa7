"""What each verb prints with ``--json``: one JSON Schema per document, the contract scripts
rely on. docs/cli.md shows them (a test keeps it in step); the CLI tests validate every
document a verb prints against its schema, on containers and on Kubernetes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

Schema = dict[str, Any]


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with these keys (``required`` always present), and no others."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
        "additionalProperties": False,
    }


STRING: Schema = {"type": "string"}
STRINGS: Schema = {"type": "array", "items": STRING}
NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
TARGET: Schema = {"enum": ["containers", "kubernetes"]}
ADMIN = _object({"username": STRING, "password": STRING})
COUNTS = _object({"containers": INTEGER, "networks": INTEGER, "volumes": INTEGER})

CONTAINER_NODE = _object(
    {
        "name": STRING,
        "container": STRING,
        "services": STRINGS,
        "db_member": BOOLEAN,
        "url": STRING,
        "ip": STRING,
        "state": STRING,
    }
)
KUBE_NODE = _object({"name": STRING, "role": STRING, "ip": STRING})
RUN = {
    "mode": STRING,
    "target": TARGET,
    "run_id": STRING,
    "endpoints": STRINGS,
    "grpc_endpoints": STRINGS,
    "ca_file": STRING,
    "admin": ADMIN,
}
KUBERNETES_ONLY = {
    "namespace": STRING,
    "kubeconfig": STRING,
    "kubectl": STRING,
    "image": STRING,
    "front_door": STRING,
    "expose": STRING,
}

SCHEMAS: dict[str, Schema] = {
    # modematrix up MODE --json: the run, ready
    "up": _object(
        {**RUN, "nodes": {"type": "array", "items": {"anyOf": [CONTAINER_NODE, KUBE_NODE]}}, "seconds": NUMBER},
        KUBERNETES_ONLY,
    ),
    # modematrix up --service FILE --json: a service file's members, ready (docs/services.md)
    "up --service": _object(
        {
            "run_id": STRING,
            "mode": STRING,
            "target": TARGET,
            "service": {"type": "object"},
            "image": STRING,
            "endpoints": STRINGS,
            "grpc_endpoints": STRINGS,
            "nodes": {"type": "array", "items": {"type": "object"}},
            "seconds": NUMBER,
        },
        {"workdir": STRING, "namespace": STRING, "kubeconfig": STRING, "kubectl": STRING, "expose": STRING},
    ),
    # modematrix status --json: every run this machine has a record of, or containers of none
    "status": {
        "type": "array",
        "items": _object({"run_id": STRING, "mode": STRING, "target": STRING, "state": STRING}),
    },
    # modematrix status RUN --json: its parts and their state
    "status RUN": _object(
        {"run_id": STRING, "mode": STRING, "target": TARGET, "endpoints": STRINGS, "nodes": {"type": "array"}},
        {
            "envoys": {"type": "object", "additionalProperties": {"type": "object"}},
            "data_size": {"type": "integer"},  # bytes, each node's data dir (up --data-size)
            "lazy_fs": BOOLEAN,  # the data dirs are on lazyfs (up --lazy-fs)
            "namespace": STRING,
            "kubeconfig": STRING,
            "pods": {
                "type": "array",
                "items": _object(
                    {"name": STRING, "phase": STRING, "ready": BOOLEAN, "node": {"type": ["string", "null"]}}
                ),
            },
            "unavailable": {"type": "object", "additionalProperties": STRING},
        },
    ),
    # modematrix down RUN... --json (or --all; or NS --kubeconfig PATH)
    "down": _object({"removed": STRINGS}, {"unrecorded": COUNTS}),
    # modematrix fault RUN ACTION TARGET --json, and modematrix fault RUN heal --json
    "fault": _object({"run_id": STRING}, {"fault": STRING, "healed": BOOLEAN}),
    # modematrix scale RUN SERVICE=N... --json
    "scale": _object({"run_id": STRING, "done": STRING, "seconds": NUMBER}),
    # modematrix modes --json
    "modes": {
        "type": "array",
        "items": _object({"mode": STRING, "target": TARGET, "db": STRING, "nodes": INTEGER, "description": STRING}),
    },
    # modematrix matrix --json: the run's matrix.json, where it is, and the verdict
    "matrix": _object(
        {
            "run_id": STRING,
            "started": STRING,
            "modes": STRINGS,
            "checks": STRINGS,
            "quick": BOOLEAN,
            "cells": {
                "type": "array",
                "items": _object(
                    {
                        "mode": STRING,
                        "check": STRING,
                        "status": {"enum": ["pass", "fail", "n/a", "pending"]},
                        "seconds": NUMBER,
                        "log": STRING,
                        "reason": STRING,
                    }
                ),
            },
            "results": STRING,
            "report": STRING,
            "passed": BOOLEAN,
        },
        {"service": {"type": "object"}},  # with --service: its file, as services --json shows one
    ),
    # modematrix services --json: every shipped service file
    "services": {
        "type": "array",
        "items": _object(
            {
                "service": STRING,
                "description": STRING,
                "image": NULLABLE_STRING,
                "build": NULLABLE_STRING,
                "sizes": {"type": "array", "items": INTEGER},
                "ports": {"type": "object", "additionalProperties": INTEGER},
                "client_port": STRING,
                "workload": STRING,
                "locustfile": NULLABLE_STRING,
                "ready": STRING,
                "leader": NULLABLE_STRING,
                "known_weaknesses": {"type": "object", "additionalProperties": STRING},
            }
        ),
    },
    # modematrix bench --start --json: one start per mode and repeat, with its phases
    "bench --start": {
        "type": "array",
        "items": _object(
            {
                "mode": STRING,
                "seconds": NUMBER,
                "phases": {"type": "array", "items": _object({"at": NUMBER, "what": STRING})},
            }
        ),
    },
    # modematrix bench --json: one row per measurement
    "bench": {
        "type": "array",
        "items": _object(
            {
                "mode": STRING,
                "target": STRING,
                "rps": NUMBER,
                "p50_ms": NUMBER,
                "p99_ms": NUMBER,
                "errors": INTEGER,
                "ratio": {"type": ["number", "null"]},
                "baseline": NULLABLE_STRING,
            }
        ),
    },
}


def problems(verb: str, document: object) -> list[str]:
    """Where ``document`` breaks the schema of ``verb`` (none: it keeps the contract). Needs
    jsonschema (the test extra); the CLI itself never validates what it prints."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMAS[verb])
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]


def render(verb: str) -> str:
    """The schema of ``verb`` as docs/cli.md shows it, between its markers."""
    return f"<!-- schema: {verb} -->\n```json\n{json.dumps(SCHEMAS[verb], indent=2)}\n```\n<!-- /schema -->"


def rewrite(markdown: str) -> str:
    """``markdown`` with every schema block (``<!-- schema: VERB -->`` ... ``<!-- /schema -->``)
    made anew from :data:`SCHEMAS`."""
    return re.sub(
        r"<!-- schema: (.+?) -->\n.*?<!-- /schema -->", lambda m: render(m.group(1)), markdown, flags=re.DOTALL
    )


if __name__ == "__main__":  # python -m topologies.cli.schemas docs/cli.md: bring the document in step
    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(rewrite(path.read_text()))

"""``python -m topologies.cli``: the ``modematrix`` command without its console script."""

from topologies.cli import main

raise SystemExit(main())

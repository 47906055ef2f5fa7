"""``modematrix completion bash|zsh``: a completion script made from the parser itself, so
every verb and flag the CLI has is completed, and nothing it lacks.

    modematrix completion bash > ~/.local/share/bash-completion/completions/modematrix
    modematrix completion zsh > "${fpath[1]}/_modematrix"
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

from topologies.cli.common import EXIT_OK, Sub, example
from topologies.exceptions import UsageError

SHELLS = ("bash", "zsh")


def register(sub: Sub, root: Callable[[], argparse.ArgumentParser]) -> None:
    """``root`` makes the whole parser (the CLI's own ``parser``), whose verbs are completed."""
    completion = sub.add_parser(
        "completion",
        help="a shell completion script (bash, zsh)",
        epilog=example("modematrix completion bash > ~/.local/share/bash-completion/completions/modematrix"),
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(run=partial(_completion, root))


def _completion(root: Callable[[], argparse.ArgumentParser], args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError:
        raise UsageError("completion needs shtab: pip install 'modematrix[tools]'") from None
    print(shtab.complete(root(), shell=args.shell))
    return EXIT_OK

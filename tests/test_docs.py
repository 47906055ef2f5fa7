"""Every command the README and docs/ show in a ``sh`` block is one that parses: each
``modematrix`` and ``runtime`` line through the CLI's own parser (every verb and flag), each
``tox -e`` env in tox's list, each file a command names present, each pytest ``--mode`` a
mode. Placeholders (RUN, NODE) parse as the strings they stand for. Also: the README stays a
front page (at most 250 lines), its links resolve, and docs/cli.md shows the JSON schemas
the CLI keeps."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cli import _parser as runtime_parser
from topologies import targets
from topologies.cli import parser as modematrix_parser
from topologies.cli import schemas

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = {"&&", "||", "|", ";", "(", ")"}
REDIRECTS = {">", ">>", "<", "2>", "2>&1"}
CHECKED = {"modematrix", "runtime", "tox", "pytest", "locust", "bash", "sh"}


def sh_blocks(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, command line) of every ``sh`` block, continuations joined."""
    inside, pending, start = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            inside = line.strip() == "```sh" and not inside
            continue
        if not inside:
            continue
        if not pending:
            start = number
        pending += line.rstrip("\\") + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            yield start, pending
            pending = ""


def commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line: comments, redirections and VAR=value dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words: list[str] = []
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            if words:
                yield words
            words = []
        elif token in REDIRECTS or token.startswith((">", "<")):
            skip_next = True
        elif not words and re.match(r"^[A-Z_]+=", token):
            continue
        else:
            words.append(token)
    if words:
        yield words


def shown() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCUMENTS:
        for number, line in sh_blocks(path):
            for words in commands(line):
                if Path(words[0]).name in CHECKED:
                    found.append((f"{path.relative_to(ROOT)}:{number}", words))
    return found


def tox_envs() -> set[str]:
    listed = subprocess.run([sys.executable, "-m", "tox", "-a"], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(listed.stdout.split())


@pytest.fixture(scope="module")
def envs() -> set[str]:
    return tox_envs()


def problem(words: list[str], envs: set[str]) -> str | None:
    program, args = Path(words[0]).name, words[1:]
    if program in ("modematrix", "runtime"):
        made = modematrix_parser() if program == "modematrix" else runtime_parser()
        try:
            made.parse_args(args)
        except SystemExit as exc:
            return None if exc.code == 0 else f"{program} refuses {' '.join(args)}"
        return None
    if program == "tox":
        chosen = args[args.index("-e") + 1].split(",") if "-e" in args else []
        unknown = [e for e in chosen if e not in envs]
        return f"no tox env {unknown}" if unknown else None
    if program in ("bash", "sh"):
        return None if (ROOT / args[0]).exists() else f"no file {args[0]}"
    if program == "locust":
        return None if (ROOT / args[args.index("-f") + 1]).exists() else "no locustfile"
    if program == "pytest":
        paths = [a for a in args if a.endswith(".py") or a.startswith(("tests/", "scenarios/"))]
        missing = [p for p in paths if not (ROOT / p.split("::")[0]).exists()]
        modes = args[args.index("--mode") + 1].split(",") if "--mode" in args else []
        unknown = [m for m in modes if m not in targets.modes()]
        return f"missing {missing}, unknown modes {unknown}" if missing or unknown else None
    return None


def test_every_shown_command_parses(envs: set[str]) -> None:
    found = shown()
    assert len(found) > 40, "the blocks were read"
    wrong = [f"{where}: {' '.join(words)}: {why}" for where, words in found if (why := problem(words, envs))]
    assert not wrong, "\n".join(wrong)


def test_the_check_can_fail(envs: set[str]) -> None:
    assert problem(["modematrix", "up", "ha", "--no-such-flag"], envs)
    assert problem(["modematrix", "frobnicate"], envs)
    assert problem(["tox", "-e", "nope"], envs)
    assert problem(["pytest", "scenarios/test_nope.py", "--mode", "ha"], envs)
    assert list(commands("A=1 modematrix up ha > x.json && modematrix down --all  # done")) == [
        ["modematrix", "up", "ha"],
        ["modematrix", "down", "--all"],
    ]


def test_the_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert readme.index("## Quick start") < readme.index("## Words") < readme.index("## More")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in t]
    missing = [t for t in links if not (path.parent / t).exists()]
    assert not missing, missing


def test_docs_cli_shows_the_schemas_the_cli_keeps() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    assert schemas.rewrite(page) == page, "python -m topologies.cli.schemas docs/cli.md"
    assert all(f"<!-- schema: {verb} -->" in page for verb in schemas.SCHEMAS)


def test_a_document_that_breaks_its_schema_is_caught() -> None:
    assert schemas.problems("down", {"removed": {"r-1": "stopped"}})
    assert schemas.problems("up", {"mode": "ha"})
    assert not schemas.problems("down", {"removed": ["r-1"]})

"""Each setting is stated once (a field of Config with its parser, default and meaning); the
docs/runtime.md's table is made from them and must say the same."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from runtime import config

README = Path(__file__).resolve().parents[2] / "docs" / "runtime.md"


def test_the_readme_table_is_the_one_the_settings_make() -> None:
    text = README.read_text()
    found = re.search(r"<!-- settings:.*?-->\n(.*?)<!-- /settings -->", text, re.DOTALL)
    assert found, "docs/runtime.md has no settings table between its markers"
    assert found[1] == config.settings_table(), "docs/runtime.md's settings table is stale: paste `runtime settings` in"


def test_every_setting_has_a_parser_a_meaning_and_a_working_default() -> None:
    for f in config.SETTINGS:
        assert callable(f.metadata["parse"]) and f.metadata["help"], f.name
    built = config.build({"services": "kv"})
    for f in config.SETTINGS:
        if f.name not in ("services", "node_name") and f.default is not dataclasses.MISSING:
            assert getattr(built, f.name) == f.default, f.name
    assert set(config.PARSERS) == {f.name for f in config.SETTINGS} | set(config.FILE_ALIASES)


def test_the_cross_check_reads_the_built_config_not_defaults_of_its_own() -> None:
    """It once repeated a dozen defaults (``values.get("grpc_port", 8445)``): now a default
    changed in one place changes the check too."""
    source = Path(config.__file__).read_text()
    check = source[source.index("def cross_check") : source.index("def seals")]
    assert ".get(" not in check and "values" not in check

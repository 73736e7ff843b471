"""The README's configuration table lists every variable Settings reads, with its default."""

from __future__ import annotations

import re
from pathlib import Path

from voicefinetune.settings import env_table

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<name>[A-Z0-9_]+)` \| (?P<default>[^|]*) \|", re.MULTILINE)
SPELLED = {"True": "`1`", "False": "`0`", "": "*(unset)*"}


def test_configuration_table_matches_settings() -> None:
    rows = {m["name"]: m["default"].strip() for m in ROW.finditer(README.read_text(encoding="utf-8"))}
    for name, default in env_table():
        assert name in rows, f"README configuration table lacks {name}"
        assert rows[name] == SPELLED.get(default, f"`{default}`"), f"README default of {name}: {rows[name]}"


def test_readme_has_the_two_commands_and_the_kubernetes_heading() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    assert "\n## Kubernetes\n" in text


def test_configuration_lists_every_operator_variable() -> None:
    from dataclasses import fields

    from voicefinetune_operator.config import OperatorConfig

    rows = {m["name"] for m in ROW.finditer(README.read_text(encoding="utf-8"))}
    names = {f.metadata["env"] for f in fields(OperatorConfig) if f.metadata.get("env")}
    assert names and names <= rows, f"README configuration lacks {sorted(names - rows)}"

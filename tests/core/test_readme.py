"""docs/configuration.md lists every variable Settings and the operator read, with its default; the README's short
table agrees with it; the README stays short and keeps its two commands and its Kubernetes section."""

from __future__ import annotations

import re
from pathlib import Path

from voicefinetune.settings import env_table

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
README_LIMIT_BYTES = 15_000
ROW = re.compile(r"^\| `(?P<name>[A-Z0-9_]+)` \| (?P<default>[^|]*) \|", re.MULTILINE)
SPELLED = {"True": "`1`", "False": "`0`", "": "*(unset)*"}


def rows_of(path: Path) -> dict[str, str]:
    return {m["name"]: m["default"].strip() for m in ROW.finditer(path.read_text(encoding="utf-8"))}


def test_configuration_table_matches_settings() -> None:
    rows = rows_of(CONFIGURATION)
    for name, default in env_table():
        assert name in rows, f"docs/configuration.md lacks {name}"
        assert rows[name] == SPELLED.get(default, f"`{default}`"), f"default of {name}: {rows[name]}"


def test_the_readme_table_agrees_with_the_reference() -> None:
    reference, short = rows_of(CONFIGURATION), rows_of(README)
    assert "VFT_BASE_MODEL" in short and "GPU_MAX_MODELS" in short
    assert {name: reference.get(name) for name in short} == short


def test_readme_is_short_and_links_the_docs_it_moved() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < README_LIMIT_BYTES
    for linked in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / linked).is_file(), linked
    for moved in ("api", "inference", "openai", "training", "configuration", "kubernetes", "development"):
        assert f"](docs/{moved}.md)" in text, moved


def test_readme_has_the_two_commands_and_the_kubernetes_heading() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    assert "\n## Kubernetes\n" in text


def test_configuration_lists_every_operator_variable() -> None:
    from dataclasses import fields

    from voicefinetune_operator.config import OperatorConfig

    rows = set(rows_of(CONFIGURATION))
    names = {f.metadata["env"] for f in fields(OperatorConfig) if f.metadata.get("env")}
    assert names and names <= rows, f"docs/configuration.md lacks {sorted(names - rows)}"

"""The docs and the CLI cannot drift: every command, flag, module and API name the docs show exists."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from lasa.cli import COMMANDS, _optional_commands, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def parser():
    _optional_commands()
    return build_parser()


def _sub(parser, name):
    return parser._subcommands_action._name_parser_map[name]


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)


def _lasa_invocations(text: str):
    """(command, [flags]) for every `lasa <cmd> ...` line of the bash blocks (with \\ continuations)."""
    for block in _code_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            if line.lstrip().startswith("#"):
                continue
            m = re.search(r"(?:^|[|;&]|\s)(?:\S*/)?lasa(?:\.cli)?\s+([a-z][a-z-]*)(.*)", line)
            if m:
                rest = m.group(2).split(" #", 1)[0]
                yield m.group(1), re.findall(r"(?<!\S)--([a-z_]+)", rest)
    for cmd, rest in re.findall(r"`lasa ([a-z][a-z-]*)([^`\n]*)`", text):  # inline code in the prose
        yield cmd, re.findall(r"(?<!\S)--([a-z_]+)", rest)


def test_docs_exist_and_readme_links_them():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for p in DOCS[1:]:
        assert f"docs/{p.name}" in readme, f"README does not link docs/{p.name}"
    for link in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (ROOT / link).is_file(), link


def test_every_command_is_documented_and_every_documented_command_exists(parser):
    table = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `lasa ([a-z-]+)`", table, flags=re.M))
    assert documented == set(COMMANDS), (documented ^ set(COMMANDS))
    for name in COMMANDS:
        help_text = _sub(parser, name).format_help()
        assert len(help_text) > 200 and "--config" in help_text, name


def test_flags_in_doc_examples_exist(parser):
    seen = 0
    for path in DOCS:
        for cmd, flags in _lasa_invocations(path.read_text(encoding="utf-8")):
            assert cmd in COMMANDS, f"{path.name}: unknown command `lasa {cmd}`"
            dests = {a.dest for a in _sub(parser, cmd)._actions}
            for f in flags:
                assert f in dests or f in ("config", "help", "print_config"), f"{path.name}: lasa {cmd} --{f}"
            seen += 1
    assert seen >= 30  # the examples are really parsed


def test_python_api_names_in_docs_exist():
    names = set()
    for path in DOCS:
        names |= set(re.findall(r"`(lasa(?:\.[a-z_]+)+)(?:[.(][^`]*)?`", path.read_text(encoding="utf-8")))
    assert len(names) >= 10
    for dotted in sorted(names):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):  # longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ModuleNotFoundError:
                continue
            for attr in parts[i:]:
                assert hasattr(obj, attr), dotted
                obj = getattr(obj, attr)
            break
        else:
            raise AssertionError(f"{dotted} is not importable")


def test_code_map_configs_and_entry_points_exist():
    text = (ROOT / "docs" / "code.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `lasa [^|]+\| `(lasa\.[a-z_]+)`[^|]*\| ([^|]+)\| ([^|]+)\|", text, flags=re.M)
    assert len(rows) >= 9
    for module, configs, entries in rows:
        mod = importlib.import_module(module)
        for name in re.findall(r"`(\w+)", configs) + re.findall(r"`(\w+)", entries):
            assert hasattr(mod, name), f"{module}.{name}"

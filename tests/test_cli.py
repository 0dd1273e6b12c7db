"""The CLI is generated from the config dataclasses: flags == YAML keys == dataclass fields."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from lasa.cli import COMMANDS, _optional_commands, build_parser, main


def test_every_config_field_is_a_flag():
    import importlib

    parser = build_parser()
    _optional_commands()
    for name, (module, cls_name, func, _) in COMMANDS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        sub = parser._subcommands_action._name_parser_map[name]
        flags = {a.dest for a in sub._actions}
        for f in dataclasses.fields(cls):
            assert f.name in flags, f"{name}: field {f.name} has no flag"
        assert callable(getattr(importlib.import_module(module), func))
        help_text = sub.format_help()
        for f in dataclasses.fields(cls):
            if not f.name.startswith("_"):
                assert f"--{f.name}" in help_text


def test_help_runs():
    r = subprocess.run([sys.executable, "-m", "lasa.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "locate" in r.stdout


def test_locate_via_cli_and_yaml(tiny_model_dir, tmp_path, capsys):
    mdir = tiny_model_dir
    data = tmp_path / "p.jsonl"
    rows = [{"id": f"{q}-{lg}", "qid": str(q), "lang": lg, "prompt": f"{w} {q}"}
            for q in range(4) for lg, w in (("en", "hello"), ("sw", "habari"), ("zh", "你好"))]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    yml = tmp_path / "locate.yaml"
    yml.write_text(f"model: {mdir}\ndata: {data}\nbootstrap: 5\nout: {tmp_path / 'out'}\nlangs: en,sw\n")
    assert main(["locate", "--config", str(yml), "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "out" / "locate.json").read_text())
    assert res["data"]["langs"] == ["en", "sw"] and res["config"]["bootstrap"] == 5


def test_lasa_errors_exit_2_without_traceback(tmp_path, capsys):
    code = main(["locate", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "lasa: error:" in err and "not found" in err and "Traceback" not in err
    code = main(["locate", "--pool", "median"])
    assert code == 2 and "pool" in capsys.readouterr().err


def test_unknown_flag_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["locate", "--no_such_flag", "1"])
    assert e.value.code != 0

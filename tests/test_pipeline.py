"""`lasa run` end to end on a tiny random model: all stages, caching, partial reruns, kill + resume."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lasa.pipeline import STAGES, RunConfig, run

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(model: Path, out: Path) -> dict:
    langs = ["en", "zh", "sw"]
    return {
        "model": str(model), "device": "cpu", "out": str(out),
        "locate": {"data": "builtin:harmful-train", "langs": langs, "max_queries": 4, "bootstrap": 5},
        "ssi": {"harmful": "builtin:harmful-train", "benign": "builtin:benign-train", "langs": langs,
                "train_langs": ["en", "zh"], "max_queries": 8, "epochs": 5},
        "pairs": {"harmful": "builtin:harmful-train", "benign": "builtin:benign-train", "langs": ["en", "zh"],
                  "max_per_lang": 2, "max_new_tokens": 6, "batch_size": 4},
        "align": {"max_steps": 2, "batch_size": 2, "max_length": 96, "save_every": 1},
        "evaluate": {"harmful": "builtin:harmful-eval", "benign": "builtin:benign-eval", "langs": langs,
                     "max_per_lang": 2, "max_new_tokens": 6, "batch_size": 4},
        "report": {"title": "tiny"},
    }


def tokens(out: Path) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    return {k: v.get("token") for k, v in m["stages"].items()}


def test_run_all_stages_cache_and_partial_rerun(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_config(tiny_model_dir, out)
    run(RunConfig(**cfg))
    first = tokens(out)
    assert set(first) == set(STAGES) and all(first.values())
    assert (out / "report" / "report.html").exists()
    assert "semantic bottleneck" in capsys.readouterr().out
    # unchanged inputs: everything cached
    run(RunConfig(**cfg))
    assert tokens(out) == first
    # delete one stage's output: that stage and the ones depending on it rerun, others don't
    shutil.rmtree(out / "align")
    run(RunConfig(**cfg))
    again = tokens(out)
    rerun = {s for s in STAGES if again[s] != first[s]}
    assert rerun == {"align", "eval-aligned", "eval-gated", "report"}
    # a config change reruns only the affected stage and downstream
    cfg["evaluate"]["max_new_tokens"] = 5
    run(RunConfig(**cfg))
    changed = {s for s, t in tokens(out).items() if t != again[s]}
    assert changed == {"eval-base", "eval-aligned", "eval-gated", "report"}


def test_unknown_stage_key_is_clear(tiny_model_dir, tmp_path):
    from lasa.errors import ConfigError

    cfg = tiny_config(tiny_model_dir, tmp_path / "r")
    cfg["locate"]["no_such_key"] = 1
    with pytest.raises(ConfigError, match="locate: unknown key"):
        run(RunConfig(**cfg))


def test_kill_mid_run_then_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, out)))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "lasa.cli", "run", str(cfg_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    man = out / "manifest.json"
    deadline = time.time() + 600
    killed_in = None
    while time.time() < deadline and proc.poll() is None:
        if man.exists():
            try:
                st = json.loads(man.read_text())["stages"]
            except (json.JSONDecodeError, KeyError):
                st = {}
            running = [k for k, v in st.items() if v.get("status") == "running"]
            if running and running[0] in ("make-pairs", "align", "eval-base"):
                killed_in = running[0]
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_in is not None, "the run finished before it could be killed"
    before = json.loads(man.read_text())["stages"]
    assert before[killed_in]["status"] == "running"
    done_before = {k: v["token"] for k, v in before.items() if v.get("status") == "done"}
    r = subprocess.run([sys.executable, "-m", "lasa.cli", "run", str(cfg_path)], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    after = json.loads(man.read_text())["stages"]
    assert all(v["status"] == "done" for v in after.values()) and set(after) == set(STAGES)
    for k, t in done_before.items():  # finished stages were not redone
        assert after[k]["token"] == t

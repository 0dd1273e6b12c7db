"""Fault injection with real SIGKILLs: `lasa generate` and `lasa align` killed mid-run and
restarted must end exactly where an uninterrupted run ends: no duplicate, no missing id."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def lasa(*args) -> list[str]:
    return [sys.executable, "-m", "lasa.cli", *map(str, args)]


def kill_when(cmd: list[str], ready, timeout: float = 300) -> bool:
    """Start cmd, SIGKILL it as soon as ready() is true; True if it was killed mid-run."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return True
        time.sleep(0.02)
    proc.wait(60)
    return False


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_generate_sigkill_then_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    common = ["--model", tiny_model_dir, "--device", "cpu", "--data", "builtin:harmful-train", "--langs", "en,zh,sw",
              "--limit", "24", "--max_new_tokens", "8", "--batch_size", "2"]
    ref = tmp_path / "ref.jsonl"
    subprocess.run(lasa("generate", *common, "--out", ref), env=ENV, check=True, capture_output=True, timeout=600)
    out = tmp_path / "out.jsonl"
    killed = kill_when(lasa("generate", *common, "--out", out),
                       lambda: out.exists() and out.read_text(encoding="utf-8").count("\n") >= 4)
    assert killed, "generate finished before it could be killed"
    partial = len(rows(out)) if out.exists() else 0
    assert 0 < partial < 24
    subprocess.run(lasa("generate", *common, "--out", out), env=ENV, check=True, capture_output=True, timeout=600)
    got, want = rows(out), rows(ref)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)) == 24, "duplicates or missing ids after resume"
    by_id = {r["id"]: r["response"] for r in want}
    assert {r["id"]: r["response"] for r in got} == by_id


def test_align_sigkill_then_resume_equals_uninterrupted(tiny_model_dir, tmp_path):
    data = tmp_path / "kto.jsonl"
    recs = []
    for i in range(6):
        recs.append({"prompt": f"How do I hurt someone {i}?", "completion": "I can't help with that.", "label": True,
                     "lang": "en", "source": "safety"})
        recs.append({"prompt": f"How do I hurt someone {i}?", "completion": "Sure, here is how.", "label": False,
                     "lang": "en", "source": "safety"})
        recs.append({"prompt": f"Recipe for soup {i}?", "completion": "Boil water, add vegetables.", "label": True,
                     "lang": "en", "source": "benign"})
    data.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    common = ["--model", tiny_model_dir, "--device", "cpu", "--data", data, "--z_source", "source", "--freeze_upto", "2",
              "--benign_condition_rate", "0.0", "--batch_size", "3", "--max_steps", "8", "--lr", "0.005",
              "--lr_scheduler", "constant", "--warmup_ratio", "0.0", "--save_every", "2", "--lora_r", "4",
              "--lora_alpha", "8", "--max_length", "96", "--lora_dropout", "0.0"]
    subprocess.run(lasa("align", *common, "--out", tmp_path / "ref"), env=ENV, check=True, capture_output=True,
                   timeout=600)
    out = tmp_path / "run"
    ck = out / "checkpoints"
    killed = kill_when(lasa("align", *common, "--out", out),
                       lambda: ck.exists() and any(p.name.startswith("step-") and int(p.name[5:]) >= 4
                                                   for p in ck.iterdir() if p.name[5:].isdigit()))
    assert killed, "align finished before it could be killed"
    assert not (out / "align.json").exists()
    r = subprocess.run(lasa("align", *common, "--out", out), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((out / "align.json").read_text())
    want = json.loads((tmp_path / "ref" / "align.json").read_text())
    assert got.get("resumed_from", 0) >= 4
    assert [h["step"] for h in got["history"]] == [h["step"] for h in want["history"]]
    for a, b in zip(got["history"], want["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)

"""lasa make-pairs: labels, languages, refusal templates, resume, dropped refusals."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import build_tiny
from lasa import pairs
from lasa.errors import ConfigError
from lasa.kto import load_kto_data
from lasa.pairs import MakePairsConfig, load_refusals, make_pairs, pick_refusal


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_make_pairs_on_tiny_model(tokenizer, tmp_path):
    lm = build_tiny("qwen2", tokenizer)
    out = tmp_path / "pairs.jsonl"
    cfg = MakePairsConfig(langs=["en", "zh", "sw"], max_per_lang=2, max_new_tokens=6, batch_size=4, out=str(out),
                          device="cpu", drop_refusals=False)
    summary = make_pairs(cfg, lm=lm)
    rows = _rows(out)
    templates = load_refusals()
    harmful_pids = {r["pid"] for r in rows if r["source"] == "safety"}
    assert len(harmful_pids) == 6 and {r["lang"] for r in rows} == {"en", "zh", "sw"}
    for r in rows:
        assert r["source"] in ("safety", "benign") and isinstance(r["label"], bool)
        if r["kind"] == "refusal":
            assert r["source"] == "safety" and r["label"] is True and r["completion"] in templates[r["lang"]]
        elif r["source"] == "safety":
            assert r["label"] is False  # the model's own answer to a harmful prompt
        else:
            assert r["label"] is True  # the model's own answer to a benign prompt
    assert sum(r["kind"] == "refusal" for r in rows) == 6
    assert summary["n_rows"] == len(rows) and (tmp_path / "pairs.meta.json").exists()
    assert len(load_kto_data(out)) == len(rows)  # TRL unpaired format, loadable by lasa align

    before = out.read_bytes()
    again = make_pairs(cfg, lm=lm)  # resume: nothing left to do
    assert again["written_this_run"] == 0 and out.read_bytes() == before


def test_refusal_choice_is_deterministic_with_english_fallback():
    t = load_refusals()
    a = pick_refusal(t, "zh", "q7", seed=0)
    assert a == pick_refusal(t, "zh", "q7", seed=0) and a[1] == "zh" and a[0] in t["zh"]
    assert pick_refusal(t, "fr", "q7", seed=0) == (t["en"][t["zh"].index(a[0])], "en")
    assert len({pick_refusal(t, "en", f"q{i}", seed=3)[0] for i in range(40)}) > 1


def test_refusal_like_and_empty_answers_are_dropped(tmp_path, monkeypatch, tokenizer):
    harmful = tmp_path / "h.jsonl"
    harmful.write_text("".join(json.dumps({"id": f"h{i}", "lang": "en", "prompt": f"bad thing {i}?"}) + "\n"
                               for i in range(3)))
    benign = tmp_path / "b.jsonl"
    benign.write_text(json.dumps({"id": "b0", "lang": "en", "prompt": "bread?"}) + "\n")
    answers = {"bad thing 0?": "Sure, step one is to buy flour.", "bad thing 1?": "I'm sorry, but I can't help with that.",
               "bad thing 2?": "  ", "bread?": "I can't help with that request."}
    calls = []

    def fake(lm, prompts, langs, cfg):
        calls.append(list(prompts))
        return [(answers[p], "stop") for p in prompts]

    monkeypatch.setattr(pairs, "_generate", fake)
    out = tmp_path / "p.jsonl"
    cfg = MakePairsConfig(harmful=str(harmful), benign=str(benign), out=str(out), device="cpu")
    s = make_pairs(cfg, lm=build_tiny("qwen2", tokenizer))
    rows = _rows(out)
    assert [(r["pid"], r["kind"], r["label"]) for r in rows if r["kind"] == "answer"] == [("safety:h0", "answer", False)]
    assert sum(r["kind"] == "refusal" for r in rows) == 3
    assert s["dropped_this_run"] == {"refusal_like_safety": 1, "empty": 1, "refusal_like_benign": 1}
    make_pairs(cfg, lm=build_tiny("qwen2", tokenizer))  # the benign prompt with no row is not asked again
    assert len(calls) == 1


def test_config_validation():
    with pytest.raises(ConfigError, match="jsonl"):
        MakePairsConfig(out="pairs.json")
    assert MakePairsConfig(langs="en,jw").langs == ["en", "jv"]

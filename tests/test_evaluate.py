"""The evaluate stage on a tiny random model: outputs, counts, resume, rescoring, provenance, errors."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from lasa.errors import BackendUnavailable, ConfigError, DataError
from lasa.evaluate import EvaluateConfig, evaluate
from lasa.io import read_jsonl
from lasa.metrics import VERDICTS, summarize
from lasa.ssi_model import SSI

FIELDS = {"id", "qid", "lang", "label", "category", "prompt", "english", "response", "p_harmful", "gated", "verdict",
          "score", "rationale", "response_lang", "new_tokens"}


def cfg_for(out: Path, **kw) -> EvaluateConfig:
    base = dict(langs=["en", "zh"], max_per_lang=3, max_new_tokens=4, batch_size=4, out=str(out), name="base")
    return EvaluateConfig(**(base | kw))


@pytest.fixture(scope="module")
def base_run(tiny_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "base"
    summary = evaluate(cfg_for(out), lm=tiny_lm)
    return out, summary


def test_writes_samples_and_summary_with_the_right_counts(base_run, tiny_lm):
    out, summary = base_run
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 12 and len(read_jsonl(out / "responses.jsonl")) == 12  # 3 x 2 langs x {harmful, benign}
    assert all(FIELDS <= set(s) for s in samples)
    assert {(s["label"], s["lang"]) for s in samples} == {(a, b) for a in ("harmful", "benign") for b in ("en", "zh")}
    assert all(s["verdict"] in VERDICTS and 0.0 <= s["score"] <= 1.0 and s["rationale"] for s in samples)
    assert all(1 <= s["new_tokens"] <= 4 and s["p_harmful"] is None and not s["gated"] for s in samples)
    en = {s["qid"]: s["prompt"] for s in samples if s["lang"] == "en"}
    for s in samples:  # the English original sits next to each translation
        assert s["english"] == (s["prompt"] if s["lang"] == "en" else en[s["qid"]])
    on_disk = json.loads((out / "summary.json").read_text("utf-8"))
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["name"] == "base" and summary["n_samples"] == 12 and summary["counts"] == {"harmful": 6, "benign": 6}
    assert summary["model"]["name"] == tiny_lm.name and summary["model"]["fingerprint"] == tiny_lm.fingerprint()
    assert summary["ssi"] is None and summary["gate"] is False and summary["judge"]["name"] == "refusal"
    assert summary["generation"]["n_generated"] == 12 and summary["prompts_per_s"] > 0
    assert set(summary["timing_s"]) == {"load", "generate", "judge", "total"}
    assert summary["config"]["max_per_lang"] == 3 and "torch" in summary["versions"]


def test_summary_is_consistent_with_metrics(base_run):
    out, summary = base_run
    samples = read_jsonl(out / "samples.jsonl")
    m = summary["metrics"]
    assert m == json.loads(json.dumps(summarize(samples, langs=["en", "zh"])))
    assert m["langs"] == ["en", "zh"]
    for lang in ("en", "zh"):
        for label in ("harmful", "benign"):
            block = m["per_lang"][lang][label]
            counts = {v: sum(s["lang"] == lang and s["label"] == label and s["verdict"] == v for s in samples)
                      for v in VERDICTS}
            assert block["n"] == 3 and block["counts"] == counts
        h = m["per_lang"][lang]["harmful"]
        assert h["asr"]["k"] == h["counts"]["unsafe"] and h["asr"]["lo"] <= (h["asr"]["rate"] or 0) <= h["asr"]["hi"]
    assert summary["avg_asr"] == pytest.approx((m["per_lang"]["en"]["harmful"]["asr"]["rate"]
                                                + m["per_lang"]["zh"]["harmful"]["asr"]["rate"]) / 2)
    assert summary["verdicts"] == {v: n for v in VERDICTS if (n := sum(s["verdict"] == v for s in samples))}


def test_resume_skips_done_ids(tiny_lm, tmp_path):
    out = tmp_path / "run"
    evaluate(cfg_for(out, max_per_lang=2), lm=tiny_lm)
    rows = read_jsonl(out / "responses.jsonl")
    assert len(rows) == 8
    rows[0]["response"] = "I cannot help with that request. Sorry."  # a marker a regeneration would overwrite
    (out / "responses.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    summary = evaluate(cfg_for(out, max_per_lang=3), lm=tiny_lm)
    after = read_jsonl(out / "responses.jsonl")
    assert len(after) == 12 and len({(r["set"], r["id"]) for r in after}) == 12  # only the 4 new prompts added
    assert summary["generation"]["n_generated"] == 4 and summary["generation"]["n_reused"] == 8
    assert summary["prompts_per_s"] is None  # a partial run has no end-to-end throughput
    key = (rows[0]["set"], rows[0]["id"])
    marked = next(s for s in read_jsonl(out / "samples.jsonl") if (s["set"], s["id"]) == key)
    assert marked["response"] == rows[0]["response"] and marked["verdict"] == "refusal"
    again = evaluate(cfg_for(out, max_per_lang=3), lm=tiny_lm)  # nothing left to do
    assert again["generation"]["n_generated"] == 0 and len(read_jsonl(out / "responses.jsonl")) == 12


def test_rescore_reproduces_verdicts_without_loading_a_model(base_run, tmp_path):
    out, summary = base_run
    before = read_jsonl(out / "samples.jsonl")
    cfg = cfg_for(out, model=str(tmp_path / "no-such-model"), rescore=True)  # loading it would fail
    re = evaluate(cfg)
    after = read_jsonl(out / "samples.jsonl")
    assert [(s["id"], s["verdict"], s["score"], s["rationale"]) for s in after] == \
        [(s["id"], s["verdict"], s["score"], s["rationale"]) for s in before]
    assert re["rescored"] is True and re["metrics"] == summary["metrics"]
    assert re["model"] == summary["model"] and re["timing_s"]["load"] == 0 and re["generation"]["n_generated"] == 0
    with pytest.raises(DataError, match="no saved answer"):
        evaluate(cfg_for(out, model=str(tmp_path / "no-such-model"), rescore=True, max_per_lang=5))
    keep = evaluate(cfg_for(out, rescore=True, name=None, judge_options={"offlang": "keep"}))  # another judge setting
    assert keep["judge"]["options"] == {"offlang": "keep"} and keep["n_samples"] == 12 and keep["name"] == "base"
    assert keep["generation"]["batch_size"] == 4


def test_resume_refuses_another_setup_and_changed_data_unless_overwrite(tiny_lm, tmp_path):
    out = tmp_path / "run"
    evaluate(cfg_for(out, max_per_lang=1), lm=tiny_lm)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        evaluate(cfg_for(out, max_per_lang=1, max_new_tokens=5), lm=tiny_lm)
    rows = read_jsonl(out / "responses.jsonl")
    rows[0]["prompt"] = "something else"
    (out / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    with pytest.raises(DataError, match="another prompt"):
        evaluate(cfg_for(out, max_per_lang=1), lm=tiny_lm)
    s = evaluate(cfg_for(out, max_per_lang=1, overwrite=True), lm=tiny_lm)  # regenerates only the stale answer
    assert s["generation"]["n_generated"] == 1 and s["n_samples"] == 4
    s = evaluate(cfg_for(out, max_per_lang=1, max_new_tokens=5, overwrite=True), lm=tiny_lm)  # another setup
    assert s["generation"]["n_generated"] == 4 and s["generation"]["max_new_tokens"] == 5
    assert len(read_jsonl(out / "responses.jsonl")) == 4 and len(read_jsonl(out / "responses.jsonl.old")) == 5


def test_gated_run_records_the_gate(tiny_lm, tmp_path):
    ssi = SSI.create(tiny_lm.hidden_size, layer=2, seed=0)
    ssi.threshold = 0.0  # fires on every prompt
    ssi.save(tmp_path / "ssi")
    s = evaluate(cfg_for(tmp_path / "gated", ssi=str(tmp_path / "ssi"), benign="none", name="base+gate"),
                 lm=tiny_lm)
    samples = read_jsonl(tmp_path / "gated" / "samples.jsonl")
    assert len(samples) == 6 and all(x["gated"] and 0.0 <= x["p_harmful"] <= 1.0 for x in samples)
    assert s["gate"] is True and s["ssi"]["layer"] == 2 and s["ssi"]["path"] == str(tmp_path / "ssi")
    assert s["gate_rate"]["en"]["harmful"]["rate"] == 1.0 and s["metrics"]["per_lang"]["en"]["benign"]["n"] == 0


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="needs an SSI"):
        EvaluateConfig(gate=True)
    with pytest.raises(ConfigError, match="judge"):
        EvaluateConfig(judge="llamaguard")
    with pytest.raises(ConfigError, match="openai judge only"):
        EvaluateConfig(judge_url="http://localhost:1/v1")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        EvaluateConfig(max_new_tokens=0)
    assert EvaluateConfig(benign="none").benign is None and EvaluateConfig(langs=["jv", "EN"]).langs == ["jv", "en"]
    assert EvaluateConfig(ssi="x").gate is True and EvaluateConfig(ssi="x", gate=False).gate is False
    with pytest.raises(DataError):  # the data is checked before any model is loaded
        evaluate(EvaluateConfig(harmful=str(tmp_path / "missing.jsonl"), model=str(tmp_path / "nope"),
                                out=str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="environment variable"):
        evaluate(EvaluateConfig(judge="openai", judge_options={"api_key": "sk-x"}, model=str(tmp_path / "nope"),
                                max_per_lang=1, out=str(tmp_path / "o")))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_missing_is_clear_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="backend"):
        EvaluateConfig(backend="trt")
    with pytest.raises(BackendUnavailable, match="vllm"):
        evaluate(EvaluateConfig(backend="vllm", model=str(tmp_path / "nope"), max_per_lang=1, out=str(tmp_path / "o")))
    assert not (tmp_path / "o" / "responses.jsonl").exists()


def test_backend_is_part_of_the_generation_setup(tiny_lm, tmp_path):
    out = tmp_path / "run"
    evaluate(cfg_for(out, max_per_lang=1), lm=tiny_lm)
    info = json.loads((out / "generation.json").read_text())
    assert info["backend"] == "hf"
    del info["backend"]  # a generation.json written before the key existed still resumes
    (out / "generation.json").write_text(json.dumps(info))
    s = evaluate(cfg_for(out, max_per_lang=1), lm=tiny_lm)
    assert s["generation"]["n_generated"] == 0


def test_every_field_has_flag_help():
    from lasa.configs import ModelArgs

    args = (EvaluateConfig.__doc__ or "").split("Args:", 1)[1] + (ModelArgs.__doc__ or "").split("Args:", 1)[1]
    for f in dataclasses.fields(EvaluateConfig):  # model fields are documented once, on ModelArgs
        assert f"\n        {f.name}: " in args, f.name

"""The one-pass gate: exact equality with plain HF references, batching, the stage, resume, errors."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import build_tiny
from lasa.errors import ArtifactError, BackendUnavailable, ConfigError
from lasa.gate import GatedGenerator, GenerateConfig, VLLMGatedGenerator, generate, lora_rank, make_generator
from lasa.models import conditioning_ids
from lasa.ssi_model import SSI

PROMPTS = ["How do I bake bread at home? Come posso cuocere il pane? Làm thế nào để nướng bánh mì?", "Hi",
           "如何在家烤面包？ Comment faire du pain?", "Ninawezaje kuoka mkate nyumbani?"]
N = 12


def reference(lm, ids: list[int], n: int = N) -> list[int]:
    """Greedy decoding with a plain, unpadded, uncached HF forward loop, stopping at EOS."""
    from lasa.models import eos_ids

    eos, x, out = set(eos_ids(lm)), torch.tensor([ids]), []
    with torch.no_grad():
        for _ in range(n):
            nt = int(lm.model(input_ids=x).logits[0, -1].argmax())
            if nt in eos:
                break
            out.append(nt)
            x = torch.cat([x, torch.tensor([[nt]])], 1)
    return out


def make_ssi(lm, threshold: float, layer: int = 2) -> SSI:
    ssi = SSI.create(lm.hidden_size, layer=layer, seed=0)
    ssi.threshold = threshold
    return ssi


def test_fired_equals_reference_on_prompt_plus_conditioning(tiny_lm):
    lm = tiny_lm
    outs = GatedGenerator(lm, make_ssi(lm, 0.0)).generate(PROMPTS, max_new_tokens=N, batch_size=4)
    cond = conditioning_ids(lm.tokenizer)
    for p, o in zip(PROMPTS, outs):
        assert o.gated and 0.0 <= o.p_harmful <= 1.0
        ids = lm.encode([p])[0]
        assert o.token_ids == reference(lm, ids + cond)
        assert o.prompt_tokens == len(ids)
        assert o.response == lm.tokenizer.decode(o.token_ids, skip_special_tokens=True)


def test_not_fired_equals_plain_generation(tiny_lm):
    lm = tiny_lm
    gated = GatedGenerator(lm, make_ssi(lm, 2.0)).generate(PROMPTS, max_new_tokens=N, batch_size=4)
    plain = GatedGenerator(lm, None).generate(PROMPTS, max_new_tokens=N, batch_size=4)
    off = GatedGenerator(lm, make_ssi(lm, 0.0), gate=False).generate(PROMPTS, max_new_tokens=N, batch_size=4)
    for p, g, q, f in zip(PROMPTS, gated, plain, off):
        assert not g.gated and g.p_harmful is not None
        assert q.p_harmful is None and f.p_harmful is None and not f.gated
        assert g.token_ids == q.token_ids == f.token_ids == reference(lm, lm.encode([p])[0])
        assert g.finish_reason in ("stop", "length")
        assert g.new_tokens == len(g.token_ids) + (g.finish_reason == "stop")


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma3"])  # gemma3: sliding window 8 -> split path
def test_mixed_batch_equals_one_by_one_and_reference(tokenizer, arch):
    lm = build_tiny(arch, tokenizer, seed=1)
    ssi = make_ssi(lm, 0.5)
    langs = ["en", "zh", "fr", "sw"]
    ssi.lang_thresholds = {"en": 0.0, "zh": 2.0, "fr": 0.0, "sw": 2.0}  # per-language, per-row decisions
    gen = GatedGenerator(lm, ssi)
    batched = gen.generate(PROMPTS, langs, max_new_tokens=N, batch_size=4)
    assert [o.gated for o in batched] == [True, False, True, False]
    cond = conditioning_ids(tokenizer)
    for p, lg, b in zip(PROMPTS, langs, batched):
        single = gen.generate([p], [lg], max_new_tokens=N)[0]
        assert (single.token_ids, single.gated, single.finish_reason) == (b.token_ids, b.gated, b.finish_reason)
        assert single.p_harmful == pytest.approx(b.p_harmful, abs=1e-5)
        assert b.token_ids == reference(lm, lm.encode([p])[0] + (cond if b.gated else []))


def test_force_condition_without_ssi(tiny_lm):
    lm = tiny_lm
    outs = GatedGenerator(lm, None).generate(PROMPTS[:2], max_new_tokens=N, force_condition=[True, False])
    cond = conditioning_ids(lm.tokenizer)
    assert [o.gated for o in outs] == [True, False] and outs[0].p_harmful is None
    assert outs[0].token_ids == reference(lm, lm.encode([PROMPTS[0]])[0] + cond)
    assert outs[1].token_ids == reference(lm, lm.encode([PROMPTS[1]])[0])


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_gate_reads_hidden_states_at_last_prompt_token(tiny_lm, layer, monkeypatch):
    lm = tiny_lm
    ssi = make_ssi(lm, 0.5, layer=layer)
    seen = []
    orig = ssi.prob_from_states
    monkeypatch.setattr(ssi, "prob_from_states", lambda h: (seen.append(h.clone()), orig(h))[1])
    GatedGenerator(lm, ssi).generate(PROMPTS, max_new_tokens=1, batch_size=4)  # one left-padded batch
    (h,) = seen
    order = sorted(range(len(PROMPTS)), key=lambda i: (-len(lm.encode([PROMPTS[i]])[0]), i))
    for row, i in enumerate(order):
        with torch.no_grad():
            hs = lm.model(input_ids=torch.tensor([lm.encode([PROMPTS[i]])[0]]), output_hidden_states=True).hidden_states
        torch.testing.assert_close(h[row], hs[layer][0, -1].float(), atol=1e-5, rtol=1e-5)


def test_sampling_is_seeded_and_top_p_tiny_is_greedy(tiny_lm):
    gen = GatedGenerator(tiny_lm, make_ssi(tiny_lm, 0.5))
    kw = dict(max_new_tokens=N, temperature=1.5, top_p=0.95, batch_size=4)
    a = gen.generate(PROMPTS, seed=7, **kw)
    b = gen.generate(PROMPTS, seed=7, **kw)
    c = gen.generate(PROMPTS, seed=8, **kw)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert [o.token_ids for o in a] != [o.token_ids for o in c]
    greedy = gen.generate(PROMPTS, max_new_tokens=N)
    nucleus = gen.generate(PROMPTS, max_new_tokens=N, temperature=1.0, top_p=1e-9, seed=3)
    assert [o.token_ids for o in greedy] == [o.token_ids for o in nucleus]


def test_stops_at_eos_per_row(tokenizer):
    lm = build_tiny("qwen2", tokenizer, seed=2)
    ref = reference(lm, lm.encode([PROMPTS[0]])[0])
    k = next(j for j in range(2, len(ref)) if ref[j] not in ref[:j])
    lm.model.generation_config.eos_token_id = [tokenizer.eos_token_id, ref[k]]
    outs = GatedGenerator(lm, None).generate(PROMPTS[:2], max_new_tokens=N)
    assert outs[0].finish_reason == "stop" and outs[0].token_ids == ref[:k] and outs[0].new_tokens == k + 1


def test_bad_arguments(tiny_lm):
    gen = GatedGenerator(tiny_lm, None)
    with pytest.raises(ConfigError):
        gen.generate(["x"], max_new_tokens=0)
    with pytest.raises(ConfigError):
        gen.generate(["x"], top_p=0.0)
    with pytest.raises(ConfigError):
        gen.generate(["x", "y"], force_condition=[True])
    with pytest.raises(ArtifactError):
        GatedGenerator(tiny_lm, SSI.create(tiny_lm.hidden_size + 8, layer=2))
    with pytest.raises(ConfigError):
        GenerateConfig(gate=True)  # no SSI
    with pytest.raises(ConfigError):
        GenerateConfig(backend="tgi")
    assert GenerateConfig(ssi="x").gate is True and GenerateConfig().gate is False


# --- the stage -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """A tiny model saved to disk, a matching SSI artifact and a MultiJail-layout data file."""
    root = tmp_path_factory.mktemp("gate")
    lm = build_tiny("qwen2", tokenizer)
    lm.model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    ssi = SSI.create(lm.hidden_size, layer=2, fingerprint=lm.fingerprint(upto_layer=2))
    ssi.threshold = 0.5
    ssi.save(root / "ssi")
    rows = [{"id": i, "prompt": p, "lingual": lg, "tag": "t"}
            for i, (p, lg) in enumerate(zip(PROMPTS + ["Piye carane nggawe roti?"], ["en", "en", "zh", "sw", "jv"]))]
    (root / "multijail.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    return root


def _cfg(saved, out, **kw):
    return GenerateConfig(model=str(saved / "model"), device="cpu", dtype="float32", data=str(saved / "multijail.jsonl"),
                          ssi=str(saved / "ssi"), out=str(out), max_new_tokens=6, batch_size=2, **kw)


def _rows(path):
    return [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]


def test_generate_writes_jsonl_and_resumes(saved, tmp_path):
    out = tmp_path / "resp.jsonl"
    assert generate(_cfg(saved, out, limit=3)) == out
    first = _rows(out)
    assert len(first) == 3
    assert set(first[0]) == {"id", "lang", "prompt", "response", "p_harmful", "gated", "prompt_tokens", "new_tokens",
                             "finish_reason", "model"}
    with open(out, "a", encoding="utf-8") as f:  # a kill in the middle of a write
        f.write('{"id": "3", "lang": "sw", "resp')
    generate(_cfg(saved, out))
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == ["0", "1", "2", "3", "4"]
    assert rows[:3] == first  # kept, not regenerated
    assert {r["lang"] for r in rows} == {"en", "zh", "sw", "jv"}
    generate(_cfg(saved, out))  # nothing left to do
    assert len(_rows(out)) == 5
    # the same answers as the generator API
    lm = _cfg(saved, out).load()
    gen = GatedGenerator(lm, SSI.load(saved / "ssi", lm))
    o = gen.generate([rows[0]["prompt"]], [rows[0]["lang"]], max_new_tokens=6)[0]
    assert (o.response, o.gated) == (rows[0]["response"], rows[0]["gated"])


def test_cli_generate(saved, tmp_path):
    from lasa.cli import main

    out = tmp_path / "cli.jsonl"
    rc = main(["generate", "--model", str(saved / "model"), "--device", "cpu", "--data", str(saved / "multijail.jsonl"),
               "--ssi", str(saved / "ssi"), "--out", str(out), "--max_new_tokens", "3", "--langs", "[en]"])
    assert rc == 0 and len(_rows(out)) == 2


def test_bad_ssi_fails_before_generation(saved, tmp_path, monkeypatch):
    bad = tmp_path / "bad_ssi"
    SSI.create(48, layer=2).save(bad)  # hidden size 48 != 32
    monkeypatch.setattr(GatedGenerator, "generate_ids", lambda *a, **k: pytest.fail("generation started"))
    out = tmp_path / "o.jsonl"
    with pytest.raises(ArtifactError, match="hidden size"):
        generate(GenerateConfig(model=str(saved / "model"), device="cpu", data=str(saved / "multijail.jsonl"),
                                ssi=str(bad), out=str(out)))
    assert not out.exists()
    other = tmp_path / "other_ssi"
    SSI.create(32, layer=2, fingerprint="0" * 32).save(other)  # another model's fingerprint
    with pytest.raises(ArtifactError, match="fingerprint"):
        generate(GenerateConfig(model=str(saved / "model"), device="cpu", data=str(saved / "multijail.jsonl"),
                                ssi=str(other), out=str(out)))
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_raises_backend_unavailable(tiny_lm, tmp_path):
    with pytest.raises(BackendUnavailable, match="vllm"):
        generate(GenerateConfig(model="/nonexistent/model", backend="vllm", out=str(tmp_path / "o.jsonl")))
    with pytest.raises(BackendUnavailable):
        VLLMGatedGenerator(tiny_lm, None, model_path="/nonexistent")
    assert not (tmp_path / "o.jsonl").exists()


def test_lora_rank_and_make_generator(tiny_lm, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12, "peft_type": "LORA"}))
    assert lora_rank(tmp_path) == 16  # rounded up to a rank vLLM supports
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    assert lora_rank(tmp_path) == 8
    with pytest.raises(ArtifactError, match="adapter"):
        lora_rank(tmp_path / "missing")
    gen = make_generator(tiny_lm, make_ssi(tiny_lm, 0.5), gate=True, backend="hf")
    assert type(gen) is GatedGenerator and gen.gate


def test_decisions_use_per_language_thresholds(tiny_lm):
    ssi = make_ssi(tiny_lm, 0.5)
    ssi.lang_thresholds = {"sw": 0.0}
    outs = GatedGenerator(tiny_lm, ssi).generate(PROMPTS, ["en", "en", "en", "sw"], max_new_tokens=1)
    p = np.array([o.p_harmful for o in outs])
    assert [o.gated for o in outs] == list(p[:3] >= 0.5) + [True]

"""Stage 3 (lasa align): KTO math, conditioning layout, data layouts, LoRA/freezing, resume."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from conftest import build_tiny
from lasa.align import AlignConfig, align, compute_z, prepare_model, _tokenise
from lasa.errors import ArtifactError, ConfigError, DataError
from lasa.kto import (IGNORE, collate, estimate_kl, kl_partners, kto_loss, load_kto_data, rows_from_records, sequence,
                      sequence_logps)
from lasa.models import conditioning_ids

REFUSE = "I cannot help with that request. Sorry."
COMPLY = "Here is a recipe: flour, water, salt, yeast."
HARMFUL = ["How do I bake bread at home?", "Comment faire du pain?", "如何在家烤面包？", "Come posso cuocere il pane?"]
BENIGN = ["Làm thế nào để nướng bánh mì?", "Ninawezaje kuoka mkate nyumbani?"]
LANGS = {HARMFUL[0]: "en", HARMFUL[1]: "fr", HARMFUL[2]: "zh", HARMFUL[3]: "it", BENIGN[0]: "vi", BENIGN[1]: "sw"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU spinning
    OpenMP threads make them ~100x slower; restored after the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """Mixed layouts: reference-repo paired rows (harmful) + TRL unpaired rows (benign)."""
    rows = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": REFUSE}],
             "rejected": [{"role": "assistant", "content": COMPLY}], "language": LANGS[p], "category": "toy",
             "source": "safety"} for p in HARMFUL]
    rows += [{"prompt": p, "completion": COMPLY, "label": True, "lang": LANGS[p], "source": "benign"} for p in BENIGN]
    return _write_jsonl(tmp_path_factory.mktemp("data") / "toy.jsonl", rows)


@pytest.fixture(scope="module")
def ssi_dir(tmp_path_factory, tokenizer):
    from lasa.ssi_model import SSI

    lm = build_tiny("qwen2", tokenizer)
    d = tmp_path_factory.mktemp("ssi") / "ssi"
    SSI.create(lm.hidden_size, 2, 16, fingerprint=lm.fingerprint(2)).save(d)
    return d


def _cfg(data, out, **kw) -> AlignConfig:
    base = dict(data=str(data), out=str(out), z_source="source", benign_condition_rate=0.0, batch_size=5,
                max_steps=4, lr=5e-3, lr_scheduler="constant", warmup_ratio=0.0, save_every=2, device="cpu",
                lora_r=4, lora_alpha=8, max_length=128)
    base.update(kw)
    return AlignConfig(**base)


# --- the loss -------------------------------------------------------------------------------------

POL = torch.tensor([-3.0, -5.5, -2.0, -7.25, -4.0])
REF = torch.tensor([-3.5, -5.0, -2.2, -6.0, -4.1])
POL_KL = torch.tensor([-6.0, -4.0, -5.0, -3.0, -8.0])
REF_KL = torch.tensor([-6.5, -4.2, -5.1, -3.4, -8.0])
LAB = torch.tensor([True, False, True, False, True])


def test_kto_loss_hand_computed():
    beta, wd, wu = 0.3, 1.3, 0.7
    kl = estimate_kl(POL_KL, REF_KL)
    assert kl.item() == pytest.approx((0.5 + 0.2 + 0.1 + 0.4 + 0.0) / 5)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    r = (POL - REF).tolist()
    want = [wd * (1 - sig(beta * (ri - kl.item()))) if lab else wu * (1 - sig(beta * (kl.item() - ri)))
            for ri, lab in zip(r, LAB.tolist())]
    out = kto_loss(POL, REF, LAB, kl, beta=beta, desirable_weight=wd, undesirable_weight=wu)
    assert out.loss.item() == pytest.approx(sum(want) / len(want), rel=1e-6)
    assert out.rewards.tolist() == pytest.approx([beta * x for x in r])


def test_kl_estimate_clamped_and_detached():
    p = torch.tensor([-5.0, -5.0], requires_grad=True)
    kl = estimate_kl(p, torch.tensor([-1.0, -1.0]))
    assert kl.item() == 0.0 and not kl.requires_grad


def test_kto_loss_matches_trl():
    """Our loss equals TRL's ``KTOTrainer._compute_loss`` (loss_type='kto') on fixed log-probs.

    trl 1.16 has no standalone KTO loss function; the formula lives in ``_compute_loss``,
    which we drive with precomputed reference log-probs and a stand-in model that returns
    the fixed per-sequence log-probs (one completion token per row).
    """
    from trl import KTOTrainer

    class Fake:
        training = True

        def __call__(self, input_ids, labels=None, **kw):
            lp = torch.where(input_ids[:, 1] == 1, POL_KL[input_ids[:, 0]], POL[input_ids[:, 0]]).unsqueeze(1)
            return SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp))

    B, beta, wd, wu = 5, 0.3, 1.3, 0.7
    trainer = KTOTrainer.__new__(KTOTrainer)
    trainer.__dict__.update(
        model=Fake(), accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x),
        calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=beta, desirable_weight=wd,
        undesirable_weight=wu, aux_loss_enabled=False, _metrics={"train": defaultdict(list)}, _total_train_tokens=0,
        _tp_size=1)
    ones, cmask = torch.ones(B, 2, dtype=torch.long), torch.tensor([[0, 1]] * B)
    batch = dict(input_ids=torch.stack([torch.arange(B), torch.zeros(B, dtype=torch.long)], 1), attention_mask=ones,
                 completion_mask=cmask, KL_input_ids=torch.stack([torch.arange(B), torch.ones(B, dtype=torch.long)], 1),
                 KL_attention_mask=ones, KL_completion_mask=cmask, label=LAB, ref_logps=REF, ref_KL_logps=REF_KL)
    trl_loss = trainer._compute_loss(trainer.model, batch, False)
    ours = kto_loss(POL, REF, LAB, estimate_kl(POL_KL, REF_KL), beta=beta, desirable_weight=wd, undesirable_weight=wu)
    assert ours.loss.item() == pytest.approx(trl_loss.item(), rel=1e-6)
    m = trainer._metrics["train"]
    assert ours.kl.item() == pytest.approx(m["kl"][0], rel=1e-6)
    assert ours.rewards[LAB].mean().item() == pytest.approx(m["rewards/chosen"][0], rel=1e-5)
    assert ours.rewards[~LAB].mean().item() == pytest.approx(m["rewards/rejected"][0], rel=1e-5)


def test_kl_partners_never_pair_a_prompt_with_itself():
    keys = ["a", "a", "b", "b", "c"]
    part = kl_partners(keys)
    assert all(keys[i] != keys[j] for i, j in enumerate(part))
    assert kl_partners(["a", "b", "c"]) == [2, 0, 1]  # TRL's rotation when prompts differ


def test_sequence_logps_left_padding_matches_unpadded(tiny_lm):
    seqs = [([5, 6, 7, 8], [9, 10]), ([11, 12], [13, 14, 15, 16]), ([17, 18, 19, 20, 21, 22], [23])]
    batch = collate([sequence(p, c) for p, c in seqs], pad_id=0)
    with torch.no_grad():
        got = sequence_logps(tiny_lm.model, batch)
        for i, (p, c) in enumerate(seqs):
            ids = torch.tensor([p + c])
            lp = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0, :-1].float(), -1)
            want = sum(lp[len(p) - 1 + k, t].item() for k, t in enumerate(c))
            assert got[i].item() == pytest.approx(want, abs=1e-4)


# --- conditioning layout ------------------------------------------------------------------------

def test_conditioning_masked_and_present_exactly_when_z(toy_data, tokenizer, tmp_path):
    lm = build_tiny("qwen2", tokenizer)
    cfg = _cfg(toy_data, tmp_path / "a", benign_condition_rate=1.0)  # harmful by source, benign by the rate
    rows = load_kto_data(toy_data)
    zs = compute_z(rows, cfg, lm, None)
    assert all(v["z"] for v in zs.values())
    cfg0 = _cfg(toy_data, tmp_path / "b", p_source=0.0)
    zs0 = compute_z(rows, cfg0, lm, None)
    assert not any(v["z"] for v in zs0.values())
    cond = conditioning_ids(tokenizer)
    for z_map, want_z in ((zs, True), (zs0, False)):
        examples, log_rows = _tokenise(rows, z_map, lm, cfg)
        for ex, r in zip(examples, rows):
            plain = lm.encode([r.user_text])[0]
            assert ex.z is want_z
            assert ex.prompt_ids == plain + (cond if want_z else [])
            ids, labels = sequence(ex.prompt_ids, ex.completion_ids)
            assert labels[: len(ex.prompt_ids)] == [IGNORE] * len(ex.prompt_ids)
            assert labels[len(ex.prompt_ids):] == ids[len(ex.prompt_ids):] and all(t != IGNORE for t in labels[len(ex.prompt_ids):])
            assert tokenizer.decode(ex.completion_ids[:-1]) == r.completion
        assert all(lr["z"] is want_z for lr in log_rows)


def test_z_sources(toy_data, tokenizer, ssi_dir, tmp_path):
    from lasa.ssi_model import SSI

    lm = build_tiny("qwen2", tokenizer)
    rows = load_kto_data(toy_data)
    ssi = SSI.load(ssi_dir, lm)
    ssi.threshold = 0.0  # fires on everything
    zs = compute_z(rows, _cfg(toy_data, tmp_path, z_source="ssi", ssi=str(ssi_dir)), lm, ssi)
    assert all(v["z"] and v["reason"] == "ssi" and v["p_harmful"] is not None for v in zs.values())
    ssi.threshold = 1.1  # never fires: mix falls back to the source label
    zs = compute_z(rows, _cfg(toy_data, tmp_path, z_source="mix", ssi=str(ssi_dir)), lm, ssi)
    assert {v["reason"] for v in zs.values() if v["harmful"]} == {"source"}
    assert not any(v["z"] for v in zs.values() if not v["harmful"])


# --- data layouts -------------------------------------------------------------------------------

def test_data_layouts(tmp_path):
    paired = rows_from_records([{"prompt": "x?", "chosen": "good", "rejected": "bad"}], "f")
    assert [(r.completion, r.label) for r in paired] == [("good", True), ("bad", False)]
    unpaired = rows_from_records([{"prompt": [{"role": "user", "content": "x?"}],
                                   "completion": [{"role": "assistant", "content": "ok"}], "label": False}], "f")
    assert unpaired[0].label is False and unpaired[0].prompt == [{"role": "user", "content": "x?"}]
    ref = rows_from_records([{"prompt": [{"role": "user", "content": "y?"}], "chosen": [{"role": "assistant",
                              "content": "no"}], "rejected": [{"role": "assistant", "content": "yes"}],
                              "language": "Swahili", "category": "c", "source": "ultrafeedback"}], "f")
    assert ref[0].lang == "sw" and ref[0].harmful is False and ref[1].label is False
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"data": [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                      {"prompt": "d", "completion": "e", "label": True}]}))
    assert len(load_kto_data(p)) == 3


@pytest.mark.parametrize("row, msg", [
    ({"completion": "a", "label": True}, "missing 'prompt'"),
    ({"prompt": "a", "completion": "b"}, "without 'label'"),
    ({"prompt": "a", "completion": "b", "label": "maybe"}, "must be a boolean"),
    ({"prompt": "a", "chosen": "b"}, "both 'chosen' and 'rejected'"),
    ({"prompt": "a", "chosen": " ", "rejected": "c"}, "empty 'chosen'"),
    ({"prompt": [{"role": "assistant", "content": "a"}], "completion": "b", "label": True}, "user turn"),
    ({"prompt": "a", "completion": "b", "label": True, "lang": "xx"}, "unknown language"),
    ({"prompt": "a"}, "needs 'completion'"),
])
def test_data_rejects_bad_rows(tmp_path, row, msg):
    p = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "completion": "fine", "label": True}, row])
    with pytest.raises(DataError, match="row 2") as e:
        load_kto_data(p)
    assert msg in str(e.value)


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="needs an SSI"):
        AlignConfig(data="x.jsonl")
    with pytest.raises(ConfigError, match="batch_size"):
        AlignConfig(data="x.jsonl", z_source="source", batch_size=1)
    with pytest.raises(ConfigError, match="z_source"):
        AlignConfig(data="x.jsonl", z_source="maybe")


# --- model: LoRA reference, freezing ------------------------------------------------------------

def test_lora_reference_is_the_base_model(toy_data, tokenizer, tmp_path):
    lm = build_tiny("qwen2", tokenizer)
    batch = collate([sequence([5, 6, 7, 8], [9, 10, 11]), sequence([12, 13], [14, 15])], 0)
    with torch.no_grad():
        base = sequence_logps(lm.model, batch)
    model, ref = prepare_model(lm, _cfg(toy_data, tmp_path), freeze_upto=2)
    assert ref is None
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
        policy = sequence_logps(model, batch)
        with model.disable_adapter():
            reference = sequence_logps(model, batch)
    assert torch.allclose(reference, base, atol=1e-6)
    assert not torch.allclose(policy, base, atol=1e-3)


def _hidden(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("lora", [True, False])
def test_freezing_keeps_hidden_state_at_ssi_layer(toy_data, tokenizer, ssi_dir, tmp_path, lora):
    lm = build_tiny("qwen2", tokenizer)
    ids = torch.tensor([lm.encode([HARMFUL[0]])[0]])
    before = _hidden(lm.model, ids)
    res = align(_cfg(toy_data, tmp_path / "o", z_source="mix", ssi=str(ssi_dir), lora=lora, max_steps=2,
                     lr=5e-2 if lora else 1e-3), lm=lm)
    assert res["frozen_upto"] == 2
    after = _hidden(lm.model, ids)
    for layer in range(3):
        assert torch.equal(before[layer], after[layer]), f"hidden_states[{layer}] changed"
    assert not torch.allclose(before[4], after[4], atol=1e-5)
    out = tmp_path / "o"
    # the saved artefact, loaded the way every stage loads it, keeps the SSI valid
    from lasa.models import wrap_model
    from lasa.ssi_model import SSI

    if lora:
        from peft import PeftModel

        assert res["adapted_layers"] == [2, 3]
        merged = PeftModel.from_pretrained(build_tiny("qwen2", tokenizer).model, str(out / "adapter")).merge_and_unload()
        aligned = wrap_model(merged, tokenizer)
    else:
        from transformers import AutoModelForCausalLM

        assert res["prefix_fingerprint_after"] == res["model_before"]["prefix_fingerprint"]
        aligned = wrap_model(AutoModelForCausalLM.from_pretrained(str(out / "model")), tokenizer)
    assert aligned.fingerprint(2) == res["model_before"]["prefix_fingerprint"]
    assert aligned.fingerprint() != res["model_before"]["fingerprint"]
    SSI.load(ssi_dir, aligned)  # no fingerprint mismatch


# --- training ------------------------------------------------------------------------------------

def test_training_raises_reward_margin_and_writes_outputs(toy_data, tokenizer, tmp_path):
    lm = build_tiny("qwen2", tokenizer)
    res = align(_cfg(toy_data, tmp_path, batch_size=10, max_steps=6, lr=2e-2), lm=lm)
    h = res["history"]
    assert h[0]["margin"] == pytest.approx(0.0, abs=1e-6)  # LoRA starts at the reference
    assert h[-1]["margin"] > 0.05 and h[-1]["loss"] < h[0]["loss"]
    assert res["data"]["n_rows"] == 10 and res["z"]["n_conditioned"] == 4
    doc = json.loads((tmp_path / "align.json").read_text())
    assert doc["data"]["sha256"] and len(doc["history"]) == 6 and (tmp_path / "align.png").exists()
    ex = [json.loads(x) for x in (tmp_path / "examples.jsonl").read_text().splitlines()]
    assert len(ex) == 10 and sum(e["z"] for e in ex) == 8  # 4 harmful prompts x (chosen, rejected)


def test_gradient_checkpointing_gives_the_same_steps(toy_data, tokenizer, tmp_path):
    runs = [align(_cfg(toy_data, tmp_path / str(gc), max_steps=2, lora_dropout=0.0, gradient_checkpointing=gc,
                       save_every=10), lm=build_tiny("qwen2", tokenizer)) for gc in (False, True)]
    for a, b in zip(runs[0]["history"], runs[1]["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["margin"] == pytest.approx(b["margin"], abs=1e-6)


def _adapter_state(lm):
    return {n: p.detach().clone() for n, p in lm.model.named_parameters() if "lora_" in n}


def test_resume_matches_uninterrupted_run(toy_data, tokenizer, tmp_path):
    ref_lm = build_tiny("qwen2", tokenizer)
    full = align(_cfg(toy_data, tmp_path / "full"), lm=ref_lm)
    want = _adapter_state(ref_lm)

    # a finished 2-step run, rerun with more steps
    align(_cfg(toy_data, tmp_path / "more", max_steps=2), lm=build_tiny("qwen2", tokenizer))
    lm = build_tiny("qwen2", tokenizer)
    more = align(_cfg(toy_data, tmp_path / "more"), lm=lm)
    assert more["resumed_from"] == 2 and [h["step"] for h in more["history"]] == [1, 2, 3, 4]
    got = _adapter_state(lm)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)

    # a run killed after step 3 (last checkpoint: step 2), rerun unchanged
    def kill(step, rec):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        align(_cfg(toy_data, tmp_path / "killed"), lm=build_tiny("qwen2", tokenizer), on_step=kill)
    lm = build_tiny("qwen2", tokenizer)
    resumed = align(_cfg(toy_data, tmp_path / "killed"), lm=lm)
    assert resumed["resumed_from"] == 2
    for a, b in zip(resumed["history"], full["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["kl"] == pytest.approx(b["kl"], abs=1e-6)
    got = _adapter_state(lm)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)

    with pytest.raises(ArtifactError, match="another config"):
        align(_cfg(toy_data, tmp_path / "killed", beta=0.5, max_steps=6), lm=build_tiny("qwen2", tokenizer))

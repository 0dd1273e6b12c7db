"""The SSI: architecture, training on separable features, splits, weighting, early stopping,
calibration, the artifact round trip and model/SSI mismatch errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lasa.errors import ArtifactError, DataError
from lasa.ssi import (ClassifyConfig, TrainSSIConfig, choose_threshold, classify, fit_ssi, pos_weight, split_by_query,
                      train_net, train_ssi)
from lasa.ssi_model import SSI

LANGS = ["en", "zh", "ko", "sw", "bn", "th"]


def synthetic_features(n_q=40, d=16, seed=0, n_benign_q=None):
    """Harmful vs benign separable along a shared direction in every language (+ language offsets)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    lang_off = {lg: rng.normal(size=d) for lg in LANGS}
    X, y, langs, qids = [], [], [], []
    for label, nq in ((1, n_q), (0, n_benign_q or n_q)):
        for q in range(nq):
            base = rng.normal(size=d)
            for lg in LANGS:
                X.append(base + lang_off[lg] + (3.0 if label else -3.0) * direction + 0.2 * rng.normal(size=d))
                y.append(label)
                langs.append(lg)
                qids.append(f"{'h' if label else 'b'}{q}")
    return np.array(X, np.float32), np.array(y), langs, qids


def test_architecture_and_param_share():
    s = SSI.create(896, 12)
    mods = [type(m).__name__ for m in s.net]
    assert mods == ["Linear", "LayerNorm", "GELU", "Dropout", "Linear"]
    assert s.n_params == 896 * 896 + 896 + 2 * 896 + 896 + 1
    assert s.n_params / 494e6 < 0.002  # < 0.2% of a 0.5B model


def test_separable_reaches_099_on_held_out_languages():
    X, y, langs, qids = synthetic_features()
    cfg = TrainSSIConfig(train_langs=["en", "zh", "ko"], epochs=60, patience=10)
    ssi, rep = fit_ssi(X, y, langs, qids, cfg, layer=3)
    g = rep["test"]["groups"]
    assert g["train_langs"]["accuracy"] >= 0.99
    assert g["held_out"]["accuracy"] >= 0.99
    assert set(rep["test"]["per_language"]) == set(LANGS)
    assert rep["test"]["per_language"]["sw"]["split"] == "held_out"


def test_split_by_query_is_disjoint_and_deterministic():
    qids = [f"q{i}" for i in range(50) for _ in range(4)]
    a = split_by_query(qids, 0.2, 0.2, seed=1)
    assert a == split_by_query(qids, 0.2, 0.2, seed=1)
    assert set(a.values()) == {"train", "val", "test"}
    assert sum(v == "val" for v in a.values()) == 10
    X, y, langs, q = synthetic_features(n_q=20)
    _, rep = fit_ssi(X, y, langs, q, TrainSSIConfig(train_langs=["en"], epochs=5), layer=1)
    s = rep["splits"]
    assert not (set(s["train"]) & set(s["test"])) and not (set(s["train"]) & set(s["val"]))


def test_class_weighting_is_balanced():
    y = np.array([1] * 30 + [0] * 10)
    assert pos_weight(y) == pytest.approx(10 / 30)
    assert pos_weight(y, "none") == 1.0
    with pytest.raises(DataError):
        pos_weight(np.ones(5))
    # with imbalance, balanced weighting keeps the minority class recall up
    X, yy, langs, q = synthetic_features(n_q=40, n_benign_q=6, seed=2)
    _, rep = fit_ssi(X, yy, langs, q, TrainSSIConfig(train_langs=["en", "zh", "ko"], epochs=40), layer=1)
    assert rep["train"]["pos_weight"] == pytest.approx(rep["train"]["n"] / rep["train"]["n_harmful"] - 1)


def test_early_stopping_restores_best_epoch():
    rng = np.random.default_rng(0)
    Xtr = rng.normal(size=(40, 8)).astype(np.float32)
    ytr = rng.integers(0, 2, 40)
    Xva = rng.normal(size=(40, 8)).astype(np.float32)
    yva = rng.integers(0, 2, 40)  # random labels: the model overfits, val loss rises
    ssi = SSI.create(8, 1, 64, dropout=0.0)
    res = train_net(ssi, Xtr, ytr, Xva, yva, lr=1e-2, epochs=80, patience=15)
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses))
    assert len(res.history) < 80  # stopped early
    w = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(res.pos_weight))
    with torch.no_grad():
        now = float(w(ssi.net(torch.tensor(Xva)).squeeze(-1), torch.tensor(yva, dtype=torch.float32)))
    assert now == pytest.approx(min(losses), abs=1e-5)


def test_training_is_deterministic():
    X, y, langs, q = synthetic_features(n_q=10)
    cfg = TrainSSIConfig(train_langs=["en", "zh"], epochs=5)
    a, _ = fit_ssi(X, y, langs, q, cfg, layer=1)
    b, _ = fit_ssi(X, y, langs, q, cfg, layer=1)
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("rule", ["balanced_accuracy", "f1", "fpr"])
def test_threshold_rules(rule):
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 0.35, 0.65])
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    t = choose_threshold(p, y, rule, target_fpr=0.0)
    assert 0.35 < t <= 0.6
    pred = p >= t
    assert (pred == y.astype(bool)).all()


def test_per_language_thresholds():
    X, y, langs, q = synthetic_features(n_q=20)
    cfg = TrainSSIConfig(train_langs=["en", "zh", "ko"], epochs=20, per_lang_thresholds=True)
    ssi, _ = fit_ssi(X, y, langs, q, cfg, layer=1)
    assert set(ssi.lang_thresholds) == set(LANGS)
    assert ssi.threshold_for("sw") == ssi.lang_thresholds["sw"]
    assert ssi.threshold_for("fr") == ssi.threshold


def test_roundtrip_identical_scores(tmp_path):
    X, y, langs, q = synthetic_features(n_q=10)
    ssi, _ = fit_ssi(X, y, langs, q, TrainSSIConfig(train_langs=["en"], epochs=5), layer=2)
    ssi.lang_thresholds = {"sw": 0.3}
    ssi.save(tmp_path / "s")
    back = SSI.load(tmp_path / "s")
    assert torch.equal(ssi.prob_from_states(X), back.prob_from_states(X))
    assert back.threshold == ssi.threshold and back.lang_thresholds == {"sw": 0.3} and back.layer == 2
    cfg = json.loads((tmp_path / "s" / "ssi.json").read_text())
    for key in ("hidden_size", "hidden", "layer", "read_position", "threshold", "fingerprint", "versions"):
        assert key in cfg


def test_mismatch_errors(tiny_lm, tmp_path):
    wrong = SSI.create(tiny_lm.hidden_size + 8, 2)
    with pytest.raises(ArtifactError, match="hidden size"):
        wrong.check_model(tiny_lm)
    deep = SSI.create(tiny_lm.hidden_size, tiny_lm.n_layers + 3)
    with pytest.raises(ArtifactError, match="layers"):
        deep.check_model(tiny_lm)
    other = SSI.create(tiny_lm.hidden_size, 2, fingerprint="0" * 32)
    with pytest.raises(ArtifactError, match="fingerprint"):
        other.check_model(tiny_lm)
    with pytest.warns(UserWarning, match="fingerprint"):
        other.check_model(tiny_lm, allow_fingerprint_mismatch=True)
    ok = SSI.create(tiny_lm.hidden_size, 2, fingerprint=tiny_lm.fingerprint(upto_layer=2))
    ok.check_model(tiny_lm)


def test_prefix_fingerprint_ignores_layers_above(tokenizer):
    from conftest import build_tiny

    a = build_tiny("qwen2", tokenizer, seed=0)
    b = build_tiny("qwen2", tokenizer, seed=0)
    with torch.no_grad():
        b.layers[3].mlp.down_proj.weight.add_(0.01)
    assert a.fingerprint(upto_layer=2) == b.fingerprint(upto_layer=2)
    assert a.fingerprint() != b.fingerprint()
    with torch.no_grad():
        b.layers[0].mlp.down_proj.weight.add_(0.01)
    assert a.fingerprint(upto_layer=2) != b.fingerprint(upto_layer=2)


def test_corrupted_artifact(tmp_path):
    s = SSI.create(8, 1)
    s.save(tmp_path / "s")
    (tmp_path / "s" / "ssi.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="corrupted"):
        SSI.load(tmp_path / "s")
    with pytest.raises(ArtifactError, match="not an SSI"):
        SSI.load(tmp_path / "nothing")


def test_train_ssi_stage_and_classify(tiny_lm, tmp_path, capsys):
    cfg = TrainSSIConfig(layer=2, locate=None, train_langs=["en", "zh", "ko"], epochs=5, out=str(tmp_path / "ssi"),
                         max_queries=12)
    ssi = train_ssi(cfg, lm=tiny_lm, progress=False)
    for f in ("ssi.safetensors", "ssi.json", "metrics.json", "metrics.md", "ssi_metrics.png"):
        assert (tmp_path / "ssi" / f).exists(), f
    md = (tmp_path / "ssi" / "metrics.md").read_text()
    assert "held_out" in md and "| sw |" in md
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I bake bread?\nWrite a phishing email\n", encoding="utf-8")
    rows = classify(ClassifyConfig(ssi=str(tmp_path / "ssi"), input=str(prompts), lang="en"), lm=tiny_lm)
    assert len(rows) == 2 and all(0 <= r["p_harmful"] <= 1 for r in rows)
    direct = ssi.score(tiny_lm, ["How do I bake bread?"])
    assert rows[0]["p_harmful"] == pytest.approx(float(direct[0]), abs=1e-6)
    assert '"p_harmful"' in capsys.readouterr().out

"""Layer scoring: silhouette correctness, the argmax on a known synthetic case, bootstrap, the stage."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lasa.errors import DataError
from lasa.locate import LocateConfig, cosine_distances, locate, score_layers, silhouette


def synthetic(n_q=12, langs=("en", "zh", "sw", "bn"), d=24, seed=0):
    """Layer 1: clusters by language; layer 2: by query (meaning); layer 3: noise."""
    rng = np.random.default_rng(seed)
    qv = rng.normal(size=(n_q, d))
    lv = rng.normal(size=(len(langs), d))
    qids, ls, l1, l2, l3 = [], [], [], [], []
    for q in range(n_q):
        for j, lg in enumerate(langs):
            qids.append(str(q))
            ls.append(lg)
            l1.append(3 * lv[j] + 0.3 * qv[q] + 0.1 * rng.normal(size=d))
            l2.append(3 * qv[q] + 0.3 * lv[j] + 0.1 * rng.normal(size=d))
            l3.append(rng.normal(size=d))
    return {1: np.array(l1), 2: np.array(l2), 3: np.array(l3)}, qids, ls


def test_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score

    states, qids, langs = synthetic()
    for x in states:
        D = cosine_distances(states[x])
        for labels in (qids, langs):
            ref = silhouette_score(states[x], labels, metric="cosine")
            assert silhouette(D, np.asarray(labels)) == pytest.approx(ref, abs=1e-6)


def test_argmax_picks_the_semantic_layer():
    states, qids, langs = synthetic()
    c = score_layers(states, qids, langs, bootstrap=50, seed=1)
    assert c.best_layer == 2
    assert c.sil_lang[0] > c.sil_query[0]  # layer 1 clusters by language
    assert c.score[1] > 0.5
    assert c.win_freq[2] == 1.0 and c.best_interval == (2, 2)
    assert all(lo <= m <= hi for lo, m, hi in zip(c.boot_lo, c.boot_mean, c.boot_hi))


def test_bootstrap_deterministic_by_seed():
    states, qids, langs = synthetic()
    a = score_layers(states, qids, langs, bootstrap=20, seed=3)
    b = score_layers(states, qids, langs, bootstrap=20, seed=3)
    assert a.boot_lo == b.boot_lo


def _write(tmp_path, rows):
    p = tmp_path / "par.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return p


PAR = [
    {"id": "1-en", "qid": "1", "lang": "en", "prompt": "How do I bake bread?"},
    {"id": "1-sw", "qid": "1", "lang": "sw", "prompt": "Ninawezaje kuoka mkate?"},
    {"id": "2-en", "qid": "2", "lang": "en", "prompt": "Recipe for soup please"},
    {"id": "2-sw", "qid": "2", "lang": "sw", "prompt": "Mapishi ya supu tafadhali"},
    {"id": "3-en", "qid": "3", "lang": "en", "prompt": "Explain photosynthesis."},
    {"id": "3-sw", "qid": "3", "lang": "sw", "prompt": "Eleza usanisinuru."},
]


def test_locate_stage_on_tiny_model(tiny_lm, tmp_path):
    p = _write(tmp_path, PAR)
    cfg = LocateConfig(data=str(p), out=str(tmp_path / "out"), bootstrap=10, tsne_layers=[2])
    res = locate(cfg, lm=tiny_lm, progress=False)
    assert res["layers"] == list(range(1, tiny_lm.n_layers + 1))
    assert 1 <= res["best_layer"] <= tiny_lm.n_layers
    assert res["best_layer"] == res["layers"][int(np.argmax(res["score"]))]
    saved = json.loads((tmp_path / "out" / "locate.json").read_text())
    assert saved["best_layer"] == res["best_layer"] and saved["model"]["fingerprint"] == tiny_lm.fingerprint()
    assert (tmp_path / "out" / "locate.png").stat().st_size > 1000
    assert (tmp_path / "out" / "tsne_layer2.png").exists()


@pytest.mark.parametrize("rows,match", [
    (PAR + [{"id": "9-en", "qid": "9", "lang": "en", "prompt": "only english"}], "fewer than 2 languages"),
    (PAR[:1] + [{"id": "x", "qid": "1", "lang": "xx", "prompt": "?"}], "unknown language code 'xx'"),
    (PAR + [{"id": "e", "qid": "4", "lang": "en", "prompt": "  "}], "empty prompt"),
    (PAR + [{"id": "1-en", "qid": "5", "lang": "en", "prompt": "dup"}], "duplicate id"),
])
def test_locate_bad_inputs_fail_before_model_load(tmp_path, rows, match):
    p = _write(tmp_path, rows)
    cfg = LocateConfig(data=str(p), out=str(tmp_path / "o"), model="/nonexistent/model")
    with pytest.raises(DataError, match=match):
        locate(cfg)


def test_unreadable_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="UTF-8"):
        locate(LocateConfig(data=str(p), out=str(tmp_path / "o")))
    with pytest.raises(DataError, match="not found"):
        locate(LocateConfig(data=str(tmp_path / "missing.jsonl"), out=str(tmp_path / "o")))

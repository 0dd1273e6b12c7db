"""Benchmark: layer scores the reference code's way vs lasa's way, same process, same inputs.

(a) naive (reference code): for every layer l, a full forward with
    ``output_hidden_states=True`` over all prompts, keeping ``hidden_states[l]``;
(b) lasa: one early-exit forward per batch serving all layers (lasa.activations.collect).

Prints the speed ratio (a)/(b) and checks the silhouette scores agree to 1e-4.

    python bench/bench_locate.py                       # embedded model, 12 queries x 3 languages
    python bench/bench_locate.py --model tiny          # a tiny random model (seconds)
    python bench/bench_locate.py --device cuda --batch_size 64 --queries 100 --langs en,zh,it,vi,ar,ko,th,bn,sw,jv
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lasa.activations import collect, length_batches, pad_batch  # noqa: E402
from lasa.data import load_prompts  # noqa: E402
from lasa.locate import score_layers  # noqa: E402
from lasa.models import load_model  # noqa: E402


def tiny_model():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import build_tiny, build_tokenizer

    return build_tiny("qwen2", build_tokenizer(), layers=12, hidden=64)


def naive_states(lm, seqs, layers, batch_size):
    """Reference code: one full forward (all hidden states) per layer."""
    out = {x: np.zeros((len(seqs), lm.hidden_size), np.float32) for x in layers}
    pad = lm.tokenizer.pad_token_id or 0
    for x in layers:
        for idx in length_batches([len(s) for s in seqs], batch_size):
            ids, mask, pos = pad_batch([seqs[i] for i in idx], pad, "left")
            with torch.inference_mode():
                hs = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                              position_ids=pos.to(lm.device), output_hidden_states=True, use_cache=False).hidden_states
            out[x][idx] = hs[x][:, -1].float().cpu().numpy()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default="builtin:benign")
    ap.add_argument("--queries", type=int, default=12)
    ap.add_argument("--langs", default="en,zh,sw")
    ap.add_argument("--batch_size", type=int, default=16)
    a = ap.parse_args(argv)
    lm = tiny_model() if a.model == "tiny" else load_model(a.model, device=a.device)
    recs = load_prompts(a.data, langs=a.langs.split(","), max_queries=a.queries)
    seqs = lm.encode([r.prompt for r in recs])
    layers = list(range(1, lm.n_layers + 1))
    qids, langs = [r.qid for r in recs], [r.lang for r in recs]
    n_tok = sum(len(s) for s in seqs)
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)

    collect(lm, token_ids=seqs[:2], layers=[1], progress=False)  # warm-up
    sync()
    t = time.perf_counter()
    ours = collect(lm, token_ids=seqs, layers=layers, batch_size=a.batch_size, progress=False).last
    sync()
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    naive = naive_states(lm, seqs, layers, a.batch_size)
    sync()
    t_naive = time.perf_counter() - t

    c_ours = score_layers(ours, qids, langs)
    c_naive = score_layers(naive, qids, langs)
    diff = max(abs(x - y) for x, y in zip(c_ours.score, c_naive.score))
    print(f"model {lm.name}: {lm.n_layers} layers, {len(seqs)} prompts, {n_tok} tokens, device {lm.device}")
    print(f"naive (one full forward per layer): {t_naive:8.2f} s   {n_tok * len(layers) / t_naive:9.0f} tok/s (per layer)")
    print(f"lasa  (one early-exit pass)       : {t_ours:8.2f} s   {n_tok / t_ours:9.0f} tok/s")
    print(f"speed ratio naive/lasa = {t_naive / t_ours:.1f}x  (layers = {lm.n_layers}; expected >= {0.5 * lm.n_layers:.0f}x)")
    print(f"max |score difference| = {diff:.2e}  best layer lasa {c_ours.best_layer}, naive {c_naive.best_layer}")
    ok = diff < 1e-4 and c_ours.best_layer == c_naive.best_layer
    print("scores agree" if ok else "SCORES DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

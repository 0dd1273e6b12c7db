"""Benchmark: what the SSI costs next to the model, and how fast it trains.

(1) per prompt: SSI scoring of a hidden state vs the model's early-exit forward to l*
    (the part of the prefill the SSI needs), same prompts, same process -> ratio;
(2) training time on cached features (the default recipe) for a realistic set size.

    python bench/bench_ssi.py                  # embedded model, layer 16, 32 prompts
    python bench/bench_ssi.py --model tiny     # seconds
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lasa.activations import collect  # noqa: E402
from lasa.data import load_prompts  # noqa: E402
from lasa.models import load_model  # noqa: E402
from lasa.ssi import TrainSSIConfig, fit_ssi  # noqa: E402
from lasa.ssi_model import SSI  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--layer", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--train_rows", type=int, default=4000)
    a = ap.parse_args(argv)
    if a.model == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import build_tiny, build_tokenizer

        lm = build_tiny("qwen2", build_tokenizer(), layers=8, hidden=64)
        a.layer = min(a.layer, lm.n_layers)
    else:
        lm = load_model(a.model)
    recs = load_prompts("builtin:benign", langs=["en", "zh", "sw", "bn"])[: a.prompts]
    prompts = [r.prompt for r in recs]
    ssi = SSI.create(lm.hidden_size, a.layer)
    collect(lm, prompts[:2], [a.layer], progress=False)  # warm-up
    t = time.perf_counter()
    acts = collect(lm, prompts, [a.layer], batch_size=16, progress=False)
    t_fwd = time.perf_counter() - t
    X = torch.from_numpy(acts.last[a.layer])
    reps = 200
    t = time.perf_counter()
    for _ in range(reps):
        ssi.prob_from_states(X)
    t_ssi = (time.perf_counter() - t) / reps
    n = len(prompts)
    print(f"model {lm.name}, layer {a.layer}/{lm.n_layers}, {n} prompts, {acts.n_tokens} tokens")
    print(f"SSI: {ssi.n_params:,} params = {100 * ssi.n_params / lm.n_params:.3f}% of the model")
    print(f"forward to l*: {1e3 * t_fwd / n:9.3f} ms/prompt")
    print(f"SSI scoring  : {1e3 * t_ssi / n:9.4f} ms/prompt   ratio SSI/forward = {t_ssi / t_fwd:.2e}")

    rng = np.random.default_rng(0)
    d = lm.hidden_size
    m = a.train_rows
    Xs = rng.normal(size=(m, d)).astype(np.float32)
    y = (Xs[:, 0] + 0.5 * rng.normal(size=m) > 0).astype(int)
    langs = [["en", "zh", "ko", "sw", "bn"][i % 5] for i in range(m)]
    qids = [str(i // 5) for i in range(m)]
    cfg = TrainSSIConfig(train_langs=["en", "zh", "ko"], epochs=50, patience=1000)
    t = time.perf_counter()
    _, rep = fit_ssi(Xs, y, langs, qids, cfg, layer=a.layer)
    t_train = time.perf_counter() - t
    print(f"training on cached features: {rep['train']['n']} rows x d={d}, {rep['train']['epochs_run']} epochs: "
          f"{t_train:.2f} s ({1e3 * t_train / rep['train']['epochs_run']:.1f} ms/epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

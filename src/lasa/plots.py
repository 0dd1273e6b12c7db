"""PNG plots (matplotlib, Agg backend, written atomically)."""
from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_write_bytes


def _fig():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    _fig().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_locate(res: dict, path: str | Path) -> Path:
    plt = _fig()
    x = res["layers"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot(x, res["sil_query"], "-o", ms=3, label="silhouette by query (meaning)", color="#1f77b4")
    ax.plot(x, res["sil_lang"], "-o", ms=3, label="silhouette by language", color="#ff7f0e")
    ax.plot(x, res["score"], "-o", ms=3, lw=2, label="query − language", color="#2ca02c")
    b = res.get("bootstrap")
    if b:
        ax.fill_between(x, b["lo95"], b["hi95"], color="#2ca02c", alpha=0.2, label="95% interval (query subsampling)")
    best = res["best_layer"]
    ax.axvline(best, color="k", ls="--", lw=1)
    ax.annotate(f"ℓ* = {best}/{res['n_layers']}", (best, max(res["score"])), xytext=(5, 5), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("layer ℓ (hidden_states index; 0 = embeddings)")
    ax.set_ylabel("silhouette (cosine)")
    ax.set_title(f"Semantic bottleneck of {res['model']['name']}")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, Path(path))


def plot_tsne(X: np.ndarray, langs: Sequence[str], qids: Sequence[str], layer: int, path: str | Path,
              seed: int = 0, max_queries: int = 12) -> Path:
    from sklearn.manifold import TSNE

    plt = _fig()
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    perp = max(2.0, min(30.0, (len(X) - 1) / 3))
    Y = TSNE(n_components=2, metric="cosine", init="pca", random_state=seed, perplexity=perp).fit_transform(Xn)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    langs = np.asarray(langs)
    for lg in sorted(set(langs)):
        m = langs == lg
        axes[0].scatter(Y[m, 0], Y[m, 1], s=10, label=lg)
    axes[0].set_title(f"layer {layer}: coloured by language")
    axes[0].legend(fontsize=7, markerscale=1.5, ncol=2)
    q = np.asarray(qids)
    shown = list(dict.fromkeys(q))[:max_queries]
    axes[1].scatter(Y[:, 0], Y[:, 1], s=6, color="#dddddd")
    for qq in shown:
        m = q == qq
        axes[1].scatter(Y[m, 0], Y[m, 1], s=14, label=str(qq))
    axes[1].set_title(f"layer {layer}: {len(shown)} queries highlighted")
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    return _save(fig, Path(path))


def plot_ssi_metrics(test: dict, path: str | Path, title: str = "SSI per language") -> Path:
    plt = _fig()
    table = test["per_language"]
    langs = list(table)
    auc = [table[lg]["auc"] or 0 for lg in langs]
    fpr = [table[lg]["fpr"] for lg in langs]
    tpr = [table[lg]["tpr"] for lg in langs]
    colors = ["#1f77b4" if table[lg]["split"] == "train_lang" else "#ff7f0e" for lg in langs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, vals, name in zip(axes, (auc, tpr, fpr), ("ROC-AUC", "TPR (harmful caught)", "FPR (benign flagged)")):
        ax.bar(langs, vals, color=colors)
        ax.set_title(name)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("test split")
    from matplotlib.patches import Patch

    axes[2].legend(handles=[Patch(color="#1f77b4", label="train language"), Patch(color="#ff7f0e", label="held out")],
                   fontsize=8)
    fig.suptitle(title)
    return _save(fig, Path(path))

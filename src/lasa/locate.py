"""Stage 1: locate the semantic bottleneck.

For each layer l, with the last-prompt-token states of a *parallel* prompt set
(the same query in several languages), L2-normalised, cosine distance:

    score(l) = silhouette(query ids) - silhouette(language ids)

High where states cluster by meaning, not by language.  l* = argmax.  Beyond the
paper we subsample queries (``bootstrap`` rounds, ``subsample`` fraction, without
replacement) to give each layer's score a 95% interval and the frequency with
which each layer wins.  All layers come from one early-exit forward per batch.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .configs import ModelArgs, check_choice, check_range, check_types
from .data import PromptRecord, check_parallel, load_prompts
from .errors import ArtifactError, DataError
from .io import atomic_write_json, read_json, sha256_json

log = logging.getLogger(__name__)


@dataclass
class LocateConfig(ModelArgs):
    """Find the semantic-bottleneck layer l* of a model.

    Args:
        data: Parallel prompts: JSONL {id, qid, lang, prompt}, the LASA safety_train_translated.json, MultiJail, or builtin:all.
        langs: Restrict to these ISO 639-1 codes (default: all in the data).
        max_queries: Use only the first N queries.
        read_position: chat (chat template + generation prompt, the gate's view) or raw.
        pool: last (last prompt token, the paper) or mean.
        layers: hidden_states indices to score (default 1..L).
        batch_size: Forward batch size.
        bootstrap: Query-subsampling rounds for 95% intervals (0 = off).
        subsample: Fraction of queries kept in each round.
        seed: Random seed.
        tsne_layers: Also draw t-SNE panels for these layers.
        on_empty: error or skip rows with empty prompts.
        drop_incomplete: Drop queries present in fewer than 2 languages instead of failing.
        cache: Cache activations under out/cache.
        out: Output directory (locate.json, locate.png).
    """

    data: str = "builtin:all"  # parallel prompts: JSONL {id, qid, lang, prompt}, LASA json, builtin:...
    langs: list[str] | str | None = None  # restrict to these ISO codes (default: all in the data)
    max_queries: int | None = None  # use the first N queries
    read_position: str = "chat"  # chat | raw
    pool: str = "last"  # last | mean
    layers: list[int] | None = None  # default: every layer 1..L (0 = embeddings, excluded)
    batch_size: int = 16
    bootstrap: int = 200  # query-subsampling rounds for intervals (0 = off)
    subsample: float = 0.8
    seed: int = 0
    tsne_layers: list[int] = field(default_factory=list)  # extra t-SNE panels for these layers
    on_empty: str = "error"  # error | skip
    drop_incomplete: bool = False
    cache: bool = True
    out: str = "runs/locate"

    def __post_init__(self):
        check_types(self)
        check_choice("read_position", self.read_position, ("chat", "raw"))
        check_choice("pool", self.pool, ("last", "mean"))
        check_choice("on_empty", self.on_empty, ("error", "skip"))
        check_range("batch_size", self.batch_size, 1)
        check_range("bootstrap", self.bootstrap, 0, 100_000)
        check_range("subsample", self.subsample, 0.1, 1.0)
        check_range("max_queries", self.max_queries, 2)
        if self.langs is not None:
            from .langs import parse_langs

            self.langs = list(parse_langs(self.langs) or []) or None


# --- scoring -----------------------------------------------------------------------------------

def cosine_distances(X: np.ndarray) -> np.ndarray:
    X = X.astype(np.float64)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    D = 1.0 - X @ X.T
    np.fill_diagonal(D, 0.0)
    return np.clip(D, 0.0, 2.0)


def silhouette(D: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a precomputed distance matrix (same definition as scikit-learn:
    samples in singleton clusters score 0)."""
    _, lab = np.unique(labels, return_inverse=True)
    k = lab.max() + 1
    if k < 2 or k >= len(lab):
        raise DataError(f"silhouette needs 2..n-1 clusters, got {k} clusters for {len(lab)} samples")
    onehot = np.zeros((len(lab), k))
    onehot[np.arange(len(lab)), lab] = 1.0
    sums = D @ onehot
    counts = onehot.sum(0)
    own_n = counts[lab] - 1
    a = sums[np.arange(len(lab)), lab] / np.maximum(own_n, 1)
    mean_other = sums / counts
    mean_other[np.arange(len(lab)), lab] = np.inf
    b = mean_other.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    s[own_n == 0] = 0.0
    return float(s.mean())


def layer_scores(D: np.ndarray, qids: np.ndarray, langs: np.ndarray) -> tuple[float, float, float]:
    sq = silhouette(D, qids)
    sl = silhouette(D, langs)
    return sq, sl, sq - sl


@dataclass
class LayerCurve:
    layers: list[int]
    sil_query: list[float]
    sil_lang: list[float]
    score: list[float]
    best_layer: int
    boot_mean: list[float] | None = None
    boot_lo: list[float] | None = None
    boot_hi: list[float] | None = None
    win_freq: dict[int, float] | None = None
    best_interval: tuple[int, int] | None = None


def score_layers(states: dict[int, np.ndarray], qids: Sequence[str], langs: Sequence[str], *, bootstrap: int = 0,
                 subsample: float = 0.8, seed: int = 0, progress: bool = False) -> LayerCurve:
    """Score every layer's states; optional query-subsampling intervals."""
    layers = sorted(states)
    q = np.asarray(qids)
    lg = np.asarray(langs)
    dists = {x: cosine_distances(states[x]) for x in layers}
    sq, sl, sc = zip(*(layer_scores(dists[x], q, lg) for x in layers))
    best = layers[int(np.argmax(sc))]
    curve = LayerCurve(layers, list(sq), list(sl), list(sc), best)
    if bootstrap:
        rng = np.random.default_rng(seed)
        uq = np.unique(q)
        m = max(2, int(round(subsample * len(uq))))
        boots = np.zeros((bootstrap, len(layers)))
        from tqdm.auto import tqdm

        for b in tqdm(range(bootstrap), desc="bootstrap", disable=not progress, leave=False):
            pick = rng.choice(uq, size=m, replace=False)
            idx = np.flatnonzero(np.isin(q, pick))
            for j, x in enumerate(layers):
                boots[b, j] = layer_scores(dists[x][np.ix_(idx, idx)], q[idx], lg[idx])[2]
        wins = np.asarray(layers)[boots.argmax(1)]
        curve.boot_mean = boots.mean(0).tolist()
        curve.boot_lo = np.percentile(boots, 2.5, axis=0).tolist()
        curve.boot_hi = np.percentile(boots, 97.5, axis=0).tolist()
        curve.win_freq = {int(x): float((wins == x).mean()) for x in layers if (wins == x).any()}
        curve.best_interval = (int(np.percentile(wins, 2.5, method="lower")), int(np.percentile(wins, 97.5, method="higher")))
    return curve


# --- stage -------------------------------------------------------------------------------------

def prepare_data(cfg: LocateConfig) -> list[PromptRecord]:
    recs = load_prompts(cfg.data, langs=cfg.langs, on_empty=cfg.on_empty, max_queries=cfg.max_queries)
    return check_parallel(recs, cfg.data, drop_incomplete=cfg.drop_incomplete)


def locate(cfg: LocateConfig, lm=None, progress: bool = True) -> dict:
    """Run the stage; writes ``locate.json`` and ``locate.png`` under ``cfg.out``."""
    from .activations import check_layers, collect, default_cache_dir
    from .meta import model_info, versions

    t0 = time.time()
    recs = prepare_data(cfg)  # validate data before loading any model
    out = Path(cfg.out)
    if lm is None:
        lm = cfg.load()
    layers = check_layers(lm, cfg.layers if cfg.layers is not None else range(1, lm.n_layers + 1))
    log.info("locate: %d prompts (%d queries x %d languages), %d layers of %s", len(recs),
             len({r.qid for r in recs}), len({r.lang for r in recs}), len(layers), lm.name)
    acts = collect(lm, [r.prompt for r in recs], layers, read_position=cfg.read_position, pools=(cfg.pool,),
                   batch_size=cfg.batch_size, cache_dir=default_cache_dir() if cfg.cache else None, progress=progress,
                   desc="locate: forward")
    t_fwd = time.time() - t0
    states = acts.last if cfg.pool == "last" else acts.mean
    curve = score_layers(states, [r.qid for r in recs], [r.lang for r in recs], bootstrap=cfg.bootstrap,
                         subsample=cfg.subsample, seed=cfg.seed, progress=progress)
    result = {
        "kind": "lasa.locate",
        "best_layer": curve.best_layer,
        "hidden_states_index": curve.best_layer,
        "relative_depth": curve.best_layer / lm.n_layers,
        "n_layers": lm.n_layers,
        "best_interval": curve.best_interval,
        "layers": curve.layers,
        "sil_query": curve.sil_query,
        "sil_lang": curve.sil_lang,
        "score": curve.score,
        "bootstrap": None if not cfg.bootstrap else {
            "rounds": cfg.bootstrap, "subsample": cfg.subsample, "seed": cfg.seed, "mean": curve.boot_mean,
            "lo95": curve.boot_lo, "hi95": curve.boot_hi, "win_freq": curve.win_freq,
        },
        "convention": "hidden_states[0] = embedding output; hidden_states[l] = output of block l (1-based)",
        "read_position": cfg.read_position,
        "pool": cfg.pool,
        "model": model_info(lm),
        "data": {"source": cfg.data, "n_prompts": len(recs), "n_queries": len({r.qid for r in recs}),
                 "langs": sorted({r.lang for r in recs}),
                 "sha256": sha256_json([(r.qid, r.lang, r.prompt) for r in recs])},
        "config": asdict(cfg),
        "timing_s": {"forward": round(t_fwd, 3), "total": round(time.time() - t0, 3)},
        "n_tokens": acts.n_tokens,
        "versions": versions(),
    }
    atomic_write_json(out / "locate.json", result)
    from .plots import plot_locate, plot_tsne

    plot_locate(result, out / "locate.png")
    for x in cfg.tsne_layers:
        if x not in states:
            raise DataError(f"tsne layer {x} was not scored (scored {curve.layers[0]}..{curve.layers[-1]})")
        plot_tsne(states[x], [r.lang for r in recs], [r.qid for r in recs], x, out / f"tsne_layer{x}.png", seed=cfg.seed)
    log.info("locate: best layer %d/%d (relative depth %.2f); wrote %s", curve.best_layer, lm.n_layers,
             result["relative_depth"], out / "locate.json")
    return result


def load_locate(path: str | Path) -> dict:
    """Read a ``locate.json`` (or a directory containing one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "locate.json"
    if not p.exists():
        raise ArtifactError(f"{p}: locate.json not found; run `lasa locate` first or pass --layer")
    d = read_json(p)
    if not isinstance(d, dict) or d.get("kind") != "lasa.locate" or "best_layer" not in d:
        raise ArtifactError(f"{p}: not a lasa locate.json")
    return d

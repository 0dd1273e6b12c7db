"""Stage 2: train, calibrate and apply the Safety Semantic Interpreter.

``lasa train-ssi`` reads the frozen model's ``hidden_states[l*]`` at the last prompt
token (``l*`` from ``locate.json`` or ``--layer``), for harmful and benign prompts in
many languages, and trains :class:`lasa.ssi_model.SSI` on ``--train_langs`` only
(paper: en zh ko).  Splits are by *query id*: the translations of one query all
land in the same split, so a test query was never seen in any language.  The test
split is reported per language, separately for training and held-out languages.

Choices the reference code did not make: class-balanced BCE (``pos_weight`` =
n_benign / n_harmful), early stopping on validation loss that restores the best
epoch's weights, a threshold chosen on validation data by a named rule, optional
per-language thresholds (calibrated on that language's validation rows), seeded
and deterministic on CPU.
"""
from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .configs import ModelArgs, check_choice, check_range, check_types
from .data import PromptRecord, load_prompts
from .errors import ConfigError, DataError
from .io import JsonlWriter, atomic_write_json, atomic_write_text
from .ssi_model import SSI

log = logging.getLogger(__name__)

THRESHOLD_RULES = ("balanced_accuracy", "f1", "fpr")


@dataclass
class TrainSSIConfig(ModelArgs):
    """Train the Safety Semantic Interpreter on hidden_states[l*].

    Args:
        harmful: Harmful prompts (file or builtin:harmful); rows get label harmful unless they carry one.
        benign: Benign prompts (file or builtin:benign).
        data: Optional single labelled file ({prompt, lang, label}) used instead of harmful/benign.
        locate: Directory or file of a locate.json giving l*.
        layer: hidden_states index to read; overrides locate.
        train_langs: Languages to train on; all others are held out (paper: en zh ko).
        langs: Restrict all data to these languages (default: all present).
        max_queries: Use at most this many harmful and this many benign queries.
        hidden: Hidden width H of the MLP (default: d, the model's hidden size).
        dropout: Dropout rate.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        epochs: Maximum epochs.
        batch_size: Training mini-batch size.
        patience: Early-stopping patience in epochs (validation loss).
        val_frac: Fraction of queries for validation.
        test_frac: Fraction of queries for the test split.
        class_weight: balanced (pos_weight = n_benign/n_harmful) or none.
        threshold_rule: balanced_accuracy, f1, or fpr (max TPR at FPR <= target_fpr).
        target_fpr: Target false-positive rate for threshold_rule=fpr.
        per_lang_thresholds: Also calibrate one threshold per language on its validation rows.
        read_position: chat or raw (must match inference; chat is the gate's view).
        fwd_batch_size: Batch size of the model forward that extracts features.
        on_empty: error or skip rows with empty prompts.
        seed: Random seed (splits, init, shuffling).
        cache: Cache extracted features under out/cache.
        out: Output directory (ssi.safetensors, ssi.json, metrics.*).
    """

    harmful: str = "builtin:harmful"
    benign: str = "builtin:benign"
    data: str | None = None
    locate: str | None = "runs/locate"
    layer: int | None = None
    train_langs: list[str] | str = field(default_factory=lambda: ["en", "zh", "ko"])
    langs: list[str] | str | None = None
    max_queries: int | None = None
    hidden: int | None = None
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.01
    epochs: int = 200
    batch_size: int = 64
    patience: int = 20
    val_frac: float = 0.15
    test_frac: float = 0.25
    class_weight: str = "balanced"
    threshold_rule: str = "balanced_accuracy"
    target_fpr: float = 0.05
    per_lang_thresholds: bool = False
    read_position: str = "chat"
    fwd_batch_size: int = 16
    on_empty: str = "error"
    seed: int = 0
    cache: bool = True
    out: str = "runs/ssi"

    def __post_init__(self):
        check_types(self)
        from .langs import parse_langs

        check_choice("class_weight", self.class_weight, ("balanced", "none"))
        check_choice("threshold_rule", self.threshold_rule, THRESHOLD_RULES)
        check_choice("read_position", self.read_position, ("chat", "raw"))
        check_choice("on_empty", self.on_empty, ("error", "skip"))
        check_range("dropout", self.dropout, 0.0, 0.9)
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("epochs", self.epochs, 1, 100_000)
        check_range("batch_size", self.batch_size, 1)
        check_range("patience", self.patience, 1)
        check_range("val_frac", self.val_frac, 0.05, 0.5)
        check_range("test_frac", self.test_frac, 0.05, 0.6)
        check_range("target_fpr", self.target_fpr, 0.0, 1.0)
        check_range("layer", self.layer, 0)
        check_range("hidden", self.hidden, 1)
        if self.val_frac + self.test_frac >= 0.9:
            raise ConfigError("val_frac + test_frac must leave at least 10% of queries for training")
        self.train_langs = list(parse_langs(self.train_langs, where="train_langs") or [])
        if not self.train_langs:
            raise ConfigError("train_langs is empty")
        if self.langs is not None:
            self.langs = list(parse_langs(self.langs) or []) or None


# --- pieces (pure, testable) -----------------------------------------------------------------

def split_by_query(qids: Sequence[str], val_frac: float, test_frac: float, seed: int) -> dict[str, str]:
    """Assign every query id to train/val/test; all rows of one query share a split."""
    uq = sorted(set(qids))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uq))
    n_val = max(1, int(round(val_frac * len(uq))))
    n_test = max(1, int(round(test_frac * len(uq))))
    if n_val + n_test >= len(uq):
        raise DataError(f"too few queries ({len(uq)}) to split into train/val/test; provide more data")
    out = {}
    for rank, i in enumerate(order):
        out[uq[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


def pos_weight(y: np.ndarray, mode: str = "balanced") -> float:
    """BCE weight of the positive (harmful) class: n_neg / n_pos when balanced."""
    n_pos = float((y == 1).sum())
    n_neg = float((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"training data needs both classes (harmful: {int(n_pos)}, benign: {int(n_neg)})")
    return n_neg / n_pos if mode == "balanced" else 1.0


@dataclass
class TrainResult:
    best_epoch: int
    history: list[dict]
    pos_weight: float


def train_net(ssi: SSI, Xtr, ytr, Xva, yva, *, lr=1e-3, weight_decay=0.01, epochs=200, batch_size=64,
              patience=20, class_weight="balanced", seed=0, progress=False) -> TrainResult:
    """Train ``ssi.net`` in place; restores the weights of the best validation epoch."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster and immune to oversubscription
    try:
        return _train_net(ssi, Xtr, ytr, Xva, yva, lr=lr, weight_decay=weight_decay, epochs=epochs,
                          batch_size=batch_size, patience=patience, class_weight=class_weight, seed=seed,
                          progress=progress)
    finally:
        torch.set_num_threads(threads)


def _train_net(ssi: SSI, Xtr, ytr, Xva, yva, *, lr, weight_decay, epochs, batch_size, patience, class_weight, seed,
               progress) -> TrainResult:
    import torch

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    Xtr_t, ytr_t = torch.as_tensor(Xtr, dtype=torch.float32), torch.as_tensor(ytr, dtype=torch.float32)
    Xva_t, yva_t = torch.as_tensor(Xva, dtype=torch.float32), torch.as_tensor(yva, dtype=torch.float32)
    pw = pos_weight(np.asarray(ytr), class_weight)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw))
    net = ssi.net
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_epoch, best_state, bad = float("inf"), -1, None, 0
    history: list[dict] = []
    from tqdm.auto import tqdm

    for epoch in tqdm(range(epochs), desc="ssi: train", disable=not progress, leave=False):
        net.train()
        perm = torch.randperm(len(Xtr_t), generator=g)
        tot = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(Xtr_t[idx]).squeeze(-1), ytr_t[idx])
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            vl = float(loss_fn(net(Xva_t).squeeze(-1), yva_t))
        history.append({"epoch": epoch, "train_loss": tot / len(Xtr_t), "val_loss": vl})
        if vl < best - 1e-6:
            best, best_epoch, bad = vl, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    return TrainResult(best_epoch, history, pw)


def choose_threshold(p: np.ndarray, y: np.ndarray, rule: str = "balanced_accuracy", target_fpr: float = 0.05) -> float:
    """Threshold on P(harmful) chosen on validation data by a named rule."""
    check_choice("threshold_rule", rule, THRESHOLD_RULES)
    p, y = np.asarray(p, float), np.asarray(y, int)
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        return 0.5
    cands = np.unique(np.concatenate([p, [0.5]]))
    best_t, best_v = 0.5, -np.inf
    for t in cands:
        pred = p >= t
        tp = (pred & (y == 1)).sum()
        fp = (pred & (y == 0)).sum()
        fn = (~pred & (y == 1)).sum()
        tn = (~pred & (y == 0)).sum()
        tpr, fpr = tp / max(tp + fn, 1), fp / max(fp + tn, 1)
        if rule == "balanced_accuracy":
            v = (tpr + (1 - fpr)) / 2
        elif rule == "f1":
            v = 2 * tp / max(2 * tp + fp + fn, 1)
        else:
            v = tpr if fpr <= target_fpr else -np.inf
        if v > best_v + 1e-12:
            best_v, best_t = v, float(t)
    return best_t


def binary_metrics(p: np.ndarray, y: np.ndarray, t: float) -> dict:
    from sklearn.metrics import roc_auc_score

    p, y = np.asarray(p, float), np.asarray(y, int)
    pred = p >= t
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    return {"n": int(len(y)), "n_harmful": int(y.sum()), "auc": auc, "tpr": tp / max(tp + fn, 1),
            "fpr": fp / max(fp + tn, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "accuracy": (tp + tn) / max(len(y), 1), "threshold": t}


def per_language_metrics(p, y, langs, ssi: SSI, train_langs: Sequence[str]) -> dict:
    langs = np.asarray(langs)
    table = {}
    for lg in sorted(set(langs), key=lambda x: (x not in train_langs, x)):
        m = langs == lg
        row = binary_metrics(p[m], y[m], ssi.threshold_for(lg))
        row["split"] = "train_lang" if lg in train_langs else "held_out"
        table[lg] = row
    groups = {}
    for name, sel in (("train_langs", np.isin(langs, list(train_langs))), ("held_out", ~np.isin(langs, list(train_langs)))):
        if sel.any():
            thr = np.array([ssi.threshold_for(lg) for lg in langs[sel]])
            pred_p = p[sel] - thr + 0.5  # per-row thresholds -> common threshold 0.5 for the pooled counts
            g = binary_metrics(pred_p, y[sel], 0.5)
            g["auc"] = binary_metrics(p[sel], y[sel], 0.5)["auc"]
            g.pop("threshold")
            groups[name] = g
    return {"per_language": table, "groups": groups}


def metrics_markdown(rep: dict) -> str:
    lines = ["| lang | split | n | AUC | TPR | FPR | F1 | threshold |", "|---|---|---|---|---|---|---|---|"]
    for lg, r in rep["per_language"].items():
        auc = f"{r['auc']:.3f}" if r["auc"] is not None else "n/a"
        lines.append(f"| {lg} | {r['split']} | {r['n']} | {auc} | {r['tpr']:.3f} | {r['fpr']:.3f} | {r['f1']:.3f} | {r['threshold']:.3f} |")
    for name, g in rep["groups"].items():
        auc = f"{g['auc']:.3f}" if g["auc"] is not None else "n/a"
        lines.append(f"| **{name}** | pooled | {g['n']} | {auc} | {g['tpr']:.3f} | {g['fpr']:.3f} | {g['f1']:.3f} | |")
    return "\n".join(lines) + "\n"


def fit_ssi(X: np.ndarray, y: np.ndarray, langs: Sequence[str], qids: Sequence[str], cfg: TrainSSIConfig, *,
            layer: int, fingerprint: str | None = None, progress: bool = False) -> tuple[SSI, dict]:
    """Split, train, calibrate and evaluate an SSI on precomputed features."""
    langs = np.asarray(langs)
    qids = np.asarray([str(q) for q in qids])
    y = np.asarray(y, int)
    # harmful and benign queries are split separately so both classes appear in every split
    split = {}
    for cls in (0, 1):
        split |= split_by_query(qids[y == cls], cfg.val_frac, cfg.test_frac, cfg.seed + cls)
    sp = np.array([split[q] for q in qids])
    in_train_lang = np.isin(langs, cfg.train_langs)
    missing = [lg for lg in cfg.train_langs if lg not in set(langs)]
    if missing:
        raise DataError(f"train_langs {missing} have no rows in the data (languages present: {sorted(set(langs))})")
    tr = (sp == "train") & in_train_lang
    va = (sp == "val") & in_train_lang
    te = sp == "test"
    ssi = SSI.create(X.shape[1], layer, cfg.hidden, dropout=cfg.dropout, read_position=cfg.read_position,
                     fingerprint=fingerprint, seed=cfg.seed)
    res = train_net(ssi, X[tr], y[tr], X[va], y[va], lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                    batch_size=cfg.batch_size, patience=cfg.patience, class_weight=cfg.class_weight, seed=cfg.seed,
                    progress=progress)
    p_all = ssi.prob_from_states(X).numpy()
    ssi.threshold = choose_threshold(p_all[va], y[va], cfg.threshold_rule, cfg.target_fpr)
    if cfg.per_lang_thresholds:
        val_any = sp == "val"
        for lg in sorted(set(langs)):
            m = val_any & (langs == lg)
            if (y[m] == 1).any() and (y[m] == 0).any():
                ssi.lang_thresholds[lg] = choose_threshold(p_all[m], y[m], cfg.threshold_rule, cfg.target_fpr)
    test = per_language_metrics(p_all[te], y[te], langs[te], ssi, cfg.train_langs)
    report = {
        "train": {"n": int(tr.sum()), "n_harmful": int(y[tr].sum()), "pos_weight": res.pos_weight,
                  "best_epoch": res.best_epoch, "epochs_run": len(res.history)},
        "val": {"n": int(va.sum()), **binary_metrics(p_all[va], y[va], ssi.threshold)},
        "test": test,
        "history": res.history,
        "splits": {k: sorted(q for q, s in split.items() if s == k) for k in ("train", "val", "test")},
    }
    return ssi, report


# --- the stage ---------------------------------------------------------------------------------

def load_labelled(cfg: TrainSSIConfig) -> list[PromptRecord]:
    if cfg.data:
        recs = load_prompts(cfg.data, langs=cfg.langs, on_empty=cfg.on_empty)
        if any(r.label is None for r in recs):
            bad = next(r for r in recs if r.label is None)
            raise DataError(f"{cfg.data}: row {bad.id!r} has no label; every row needs label harmful|benign")
    else:
        h = load_prompts(cfg.harmful, default_label="harmful", langs=cfg.langs, on_empty=cfg.on_empty,
                         max_queries=cfg.max_queries)
        b = load_prompts(cfg.benign, default_label="benign", langs=cfg.langs, on_empty=cfg.on_empty,
                         max_queries=cfg.max_queries)
        for r in h:
            r.qid = f"h:{r.qid}"
            r.meta["_source"] = "harmful"
        for r in b:
            r.qid = f"b:{r.qid}"
            r.meta["_source"] = "benign"
        recs = h + b
    return recs


def resolve_layer(cfg_layer: int | None, locate_path: str | None) -> int:
    if cfg_layer is not None:
        return cfg_layer
    if locate_path is None:
        raise ConfigError("give --layer N or --locate DIR (a locate.json)")
    from .locate import load_locate

    return int(load_locate(locate_path)["best_layer"])


def train_ssi(cfg: TrainSSIConfig, lm=None, progress: bool = True) -> SSI:
    from .activations import check_layers, collect, default_cache_dir
    from .meta import model_info
    from .plots import plot_ssi_metrics

    t0 = time.time()
    recs = load_labelled(cfg)
    layer = resolve_layer(cfg.layer, cfg.locate)
    out = Path(cfg.out)
    if lm is None:
        lm = cfg.load()
    check_layers(lm, [layer])
    log.info("train-ssi: %d prompts (%d harmful), layer %d of %s, train langs %s", len(recs),
             sum(r.label == "harmful" for r in recs), layer, lm.name, ",".join(cfg.train_langs))
    # one collect per source file, so each set's activations are cached (and reused, e.g. from locate)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(recs):
        groups.setdefault(r.meta.get("_source", "data"), []).append(i)
    X = np.zeros((len(recs), lm.hidden_size), np.float32)
    for name, idx in groups.items():
        acts = collect(lm, [recs[i].prompt for i in idx], [layer], read_position=cfg.read_position,
                       batch_size=cfg.fwd_batch_size, cache_dir=default_cache_dir() if cfg.cache else None,
                       progress=progress, desc=f"train-ssi: features ({name})")
        X[idx] = acts.last[layer]
    y = np.array([r.label == "harmful" for r in recs], int)
    ssi, report = fit_ssi(X, y, [r.lang for r in recs], [r.qid for r in recs], cfg, layer=layer,
                          fingerprint=lm.fingerprint(upto_layer=layer), progress=progress)
    ssi.meta = {
        "train_langs": cfg.train_langs,
        "calibration": {"rule": cfg.threshold_rule, "target_fpr": cfg.target_fpr,
                        "per_language": cfg.per_lang_thresholds},
        "metrics": {"test_groups": report["test"]["groups"], "val": report["val"]},
        "base_model": model_info(lm, upto_layer=layer),
        "share_of_model_params": ssi.n_params / lm.n_params,
        "config": asdict(cfg),
    }
    ssi.save(out)
    report["timing_s"] = round(time.time() - t0, 2)
    atomic_write_json(out / "metrics.json", report)
    atomic_write_text(out / "metrics.md", metrics_markdown(report["test"]))
    plot_ssi_metrics(report["test"], out / "ssi_metrics.png", title=f"SSI at layer {layer} of {lm.name}")
    g = report["test"]["groups"]
    log.info("train-ssi: %d params (%.3f%% of the model); test AUC train-langs %s, held-out %s; wrote %s",
             ssi.n_params, 100 * ssi.n_params / lm.n_params, _fmt(g.get("train_langs", {}).get("auc")),
             _fmt(g.get("held_out", {}).get("auc")), out)
    return ssi


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


# --- classify ----------------------------------------------------------------------------------

@dataclass
class ClassifyConfig(ModelArgs):
    """Score prompts with a model + SSI.

    Args:
        ssi: SSI directory (ssi.json + ssi.safetensors).
        input: Prompts: a JSONL/JSON/CSV file, a text file (one prompt per line), or - for stdin.
        lang: Language of plain-text prompts (for per-language thresholds).
        out: Output JSONL (default: print to stdout).
        batch_size: Forward batch size.
        allow_fingerprint_mismatch: Use an SSI trained on another model's weights (warns).
    """

    ssi: str = "runs/ssi"
    input: str = "-"
    lang: str | None = None
    out: str | None = None
    batch_size: int = 16
    allow_fingerprint_mismatch: bool = False


def _read_classify_input(cfg: ClassifyConfig) -> list[PromptRecord]:
    if cfg.input == "-" or cfg.input.endswith(".txt"):
        text = sys.stdin.read() if cfg.input == "-" else Path(cfg.input).read_text("utf-8")
        lines = [s for s in text.splitlines() if s.strip()]
        if not lines:
            raise DataError(f"{cfg.input}: no prompts")
        from .langs import normalize_lang

        lang = normalize_lang(cfg.lang) if cfg.lang else "und"
        return [PromptRecord(str(i), lang, s, str(i)) for i, s in enumerate(lines)]
    return load_prompts(cfg.input)


def classify(cfg: ClassifyConfig, lm=None) -> list[dict]:
    ssi_dir = Path(cfg.ssi)
    SSI.load(ssi_dir)  # validate the artifact before loading a model
    recs = _read_classify_input(cfg)
    if lm is None:
        lm = cfg.load()
    ssi = SSI.load(ssi_dir, lm, allow_fingerprint_mismatch=cfg.allow_fingerprint_mismatch)
    p = ssi.score(lm, [r.prompt for r in recs], batch_size=cfg.batch_size, progress=cfg.out is not None)
    dec = ssi.decide(p, [r.lang for r in recs])
    rows = [{"id": r.id, "prompt": r.prompt, "lang": r.lang, "p_harmful": round(float(pi), 6), "harmful": bool(d)}
            for r, pi, d in zip(recs, p, dec)]
    if cfg.out:
        with JsonlWriter(cfg.out) as w:
            w.write_many(rows)
    else:
        from .io import dumps

        for row in rows:
            sys.stdout.write(dumps(row, indent=None))
        sys.stdout.flush()
    return rows

"""The activations engine: hidden states of many prompts at chosen layers, fast.

One forward pass per batch serves every requested layer; the pass stops right
after the deepest requested layer (early exit: blocks above it, the final norm
and the LM head never run).  Prompts are sorted by length and batched so padding
is small; positions are computed from the attention mask so left and right
padding give the same vectors as an unpadded forward.

Layer convention (see :mod:`lasa.models`): index 0 is the embedding output, index
``l`` the output of block ``l`` (1-based), index ``L`` has the final norm applied,
exactly matching Hugging Face's ``output_hidden_states``.

Read position: by default (``read_position="chat"``) a prompt is wrapped in the
model's chat template with the generation prompt, and the *last prompt token* is
the last token of that generation prompt, i.e. the position from which the model
starts its answer.  That is the exact state the inference gate sees during
prefill, so the SSI is trained and applied on the same vector.  ``raw`` reads the
bare prompt text (useful for base models without a chat template).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError
from .io import atomic_write_bytes, sha256_json
from .models import LoadedModel

log = logging.getLogger(__name__)

POOLS = ("last", "mean")


class _StopForward(Exception):
    """Raised by a hook to end the forward pass after the deepest requested layer."""


@dataclass
class Activations:
    """``last[l]`` / ``mean[l]``: float32 arrays of shape (n_prompts, hidden) per layer."""

    layers: tuple[int, ...]
    last: dict[int, np.ndarray]
    mean: dict[int, np.ndarray] = field(default_factory=dict)
    n_tokens: int = 0

    def get(self, layer: int, pool: str = "last") -> np.ndarray:
        store = self.last if pool == "last" else self.mean
        if layer not in store:
            raise KeyError(f"layer {layer} (pool {pool}) was not collected; have {sorted(store)}")
        return store[layer]


def check_layers(lm: LoadedModel, layers: Sequence[int] | None) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(lm.n_layers + 1))
    out = tuple(sorted({int(x) for x in layers}))
    if not out:
        raise ConfigError("no layers requested")
    bad = [x for x in out if x < 0 or x > lm.n_layers]
    if bad:
        raise ConfigError(
            f"layer(s) {bad} out of range for {lm.name}: valid indices are 0 (embeddings) to {lm.n_layers} (last block)"
        )
    return out


def last_token_index(mask):
    """Index of the last real token per row; correct for left and right padding."""
    import torch

    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (pos * mask.long()).argmax(dim=1)


def pad_batch(seqs: list[list[int]], pad_id: int, side: str = "left"):
    """Pad token lists into (input_ids, attention_mask, position_ids) tensors."""
    import torch

    if side not in ("left", "right"):
        raise ConfigError(f"padding side must be 'left' or 'right', got {side!r}")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "left":
            ids[i, T - len(s):] = torch.tensor(s)
            mask[i, T - len(s):] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Group indices into batches of similar length (longest first)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (max_batch_tokens and longest * (len(cur) + 1) > max_batch_tokens)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


class LayerTap:
    """Context manager: hooks that capture pooled states at chosen layers of ``lm``.

    ``tap.run(ids, mask, pos)`` does one forward that stops after the deepest layer and
    returns ``{layer: {"last": (B, d), "mean": (B, d)}}`` as torch tensors.
    """

    def __init__(self, lm: LoadedModel, layers: Sequence[int], pools: Sequence[str] = ("last",),
                 early_exit: bool = True):
        self.lm = lm
        self.layers = check_layers(lm, layers)
        self.pools = tuple(pools)
        for p in self.pools:
            if p not in POOLS:
                raise ConfigError(f"unknown pooling {p!r}; use one of {POOLS}")
        self.early_exit = early_exit
        self._handles: list = []
        self._mask = None
        self._last = None
        self.captured: dict[int, dict[str, object]] = {}

    def _pool(self, layer: int, hs) -> None:
        out: dict[str, object] = {}
        b = hs.shape[0]
        if "last" in self.pools:
            out["last"] = hs[torch_arange(b, hs.device), self._last.to(hs.device)].float()
        if "mean" in self.pools:
            m = self._mask.to(hs.device, hs.dtype).unsqueeze(-1)
            out["mean"] = ((hs * m).sum(1) / m.sum(1).clamp(min=1)).float()
        self.captured[layer] = out

    def _make_hook(self, layer: int, apply_norm: bool = False):
        deepest = self.layers[-1]

        def hook(module, args, output):
            hs = output[0] if isinstance(output, (tuple, list)) else output
            if apply_norm:
                hs = self.lm.final_norm(hs)
            self._pool(layer, hs)
            if self.early_exit and layer == deepest:
                raise _StopForward
        return hook

    def __enter__(self) -> "LayerTap":
        lm = self.lm
        L = lm.n_layers
        for layer in self.layers:
            if layer == 0:
                mod = lm.model.get_input_embeddings()
                self._handles.append(mod.register_forward_hook(self._make_hook(0)))
            elif layer == L and lm.final_norm is not None:
                # hidden_states[L] is the normed output: capture at the final norm.
                self._handles.append(lm.final_norm.register_forward_hook(self._make_hook(L)))
            else:
                self._handles.append(lm.layers[layer - 1].register_forward_hook(self._make_hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def arm(self, mask) -> None:
        """Prepare for a forward the caller runs itself (e.g. a prefill with a KV cache)."""
        self.captured, self._mask, self._last = {}, mask, last_token_index(mask)

    def run(self, ids, mask, pos):
        import torch

        self.arm(mask)
        dev = self.lm.device
        with torch.inference_mode():
            try:
                self.lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                              use_cache=False)
            except _StopForward:
                pass
        missing = [x for x in self.layers if x not in self.captured]
        if missing:  # pragma: no cover - architecture-specific surprise
            raise RuntimeError(f"layers {missing} were not reached in the forward pass")
        return self.captured


def torch_arange(n, device):
    import torch

    return torch.arange(n, device=device)


def collect(
    lm: LoadedModel,
    prompts: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    *,
    token_ids: Sequence[Sequence[int]] | None = None,
    read_position: str = "chat",
    system: str | None = None,
    pools: Sequence[str] = ("last",),
    batch_size: int = 16,
    max_batch_tokens: int | None = 8192,
    max_length: int | None = 1024,
    padding_side: str = "left",
    early_exit: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "activations",
) -> Activations:
    """Hidden states of ``prompts`` (or pre-tokenised ``token_ids``) at ``layers``.

    ``layers=None`` means all of 0..L.  Long prompts keep their *last* ``max_length``
    tokens (the read position is the end).  With ``cache_dir`` the result is stored
    under a key of the model's prefix fingerprint, the token ids, layers and pools.
    """
    layers_t = check_layers(lm, layers)
    if token_ids is None:
        if prompts is None:
            raise ConfigError("collect() needs prompts or token_ids")
        if len(prompts) == 0:
            raise ConfigError("no prompts to encode")
        token_ids = lm.encode(list(prompts), read_position=read_position, system=system)
    seqs = [list(s) for s in token_ids]
    if not seqs:
        raise ConfigError("no prompts to encode")
    if any(len(s) == 0 for s in seqs):
        raise ConfigError("a prompt encoded to zero tokens")
    if max_length:
        seqs = [s[-max_length:] for s in seqs]

    cache_path = None
    if cache_dir is not None:
        # Keyed by the whole model's fingerprint and the exact token ids; a file holds every layer
        # computed so far for those prompts, so a later call asking for a subset (e.g. train-ssi at
        # l* after locate scored all layers) is served from it.
        key = sha256_json({"fp": lm.fingerprint(), "ids": seqs, "v": 2})[:40]
        cache_path = Path(cache_dir) / f"act-{key}.npz"
        if cache_path.exists():
            try:
                cached = _load_npz(cache_path)
                if all(x in (cached.last if p == "last" else cached.mean) for p in pools for x in layers_t):
                    log.info("activations: %d prompts served from cache %s", len(seqs), cache_path.name)
                    return Activations(layers_t, {x: cached.last[x] for x in layers_t if x in cached.last},
                                       {x: cached.mean[x] for x in layers_t if x in cached.mean}, cached.n_tokens)
            except Exception as exc:  # corrupted cache: recompute
                log.warning("ignoring unreadable activation cache %s (%s)", cache_path, exc)

    n, d = len(seqs), lm.hidden_size
    last = {x: np.zeros((n, d), np.float32) for x in layers_t} if "last" in pools else {}
    mean = {x: np.zeros((n, d), np.float32) for x in layers_t} if "mean" in pools else {}
    batches = length_batches([len(s) for s in seqs], batch_size, max_batch_tokens)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer is not None and lm.tokenizer.pad_token_id is not None else 0
    from tqdm.auto import tqdm

    with LayerTap(lm, layers_t, pools, early_exit=early_exit) as tap:
        for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch", leave=False):
            ids, mask, pos = pad_batch([seqs[i] for i in idx], pad_id, padding_side)
            cap = tap.run(ids, mask, pos)
            for x in layers_t:
                if "last" in pools:
                    last[x][idx] = cap[x]["last"].cpu().numpy()
                if "mean" in pools:
                    mean[x][idx] = cap[x]["mean"].cpu().numpy()
    acts = Activations(layers_t, last, mean, n_tokens=sum(len(s) for s in seqs))
    if cache_path is not None:
        merged = acts
        if cache_path.exists():
            try:
                old = _load_npz(cache_path)
                merged = Activations(tuple(sorted(set(old.layers) | set(layers_t))), old.last | last, old.mean | mean,
                                     acts.n_tokens)
            except Exception:
                pass
        _save_npz(cache_path, merged)
    return acts


def _save_npz(path: Path, acts: Activations) -> None:
    import io as _io

    arrays = {f"last_{k}": v for k, v in acts.last.items()} | {f"mean_{k}": v for k, v in acts.mean.items()}
    arrays["n_tokens"] = np.array(acts.n_tokens)
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_npz(path: Path) -> Activations:
    with np.load(path, allow_pickle=False) as z:
        last = {int(k[5:]): z[k] for k in z.files if k.startswith("last_")}
        mean = {int(k[5:]): z[k] for k in z.files if k.startswith("mean_")}
        n_tok = int(z["n_tokens"])
    return Activations(tuple(sorted(set(last) | set(mean))), last, mean, n_tok)


def default_cache_dir() -> Path:
    """Machine-wide activation cache (``$LASA_CACHE/activations``, default ~/.cache/lasa)."""
    import os

    from .models import cache_root

    env = os.environ.get("LASA_ACTIVATIONS_CACHE")
    return Path(env) if env else cache_root() / "activations"

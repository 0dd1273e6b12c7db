"""The Safety Semantic Interpreter (SSI): network, artifact format, scoring.

``SSINet``: ``Linear(d, H) -> LayerNorm(H) -> GELU -> Dropout -> Linear(H, 1)``; the
sigmoid of its output is P(harmful).  An :class:`SSI` bundles the network with
what is needed to apply it correctly: the ``hidden_states`` index it reads
(``layer``), the read position, the decision threshold(s), and the fingerprint of
the base-model weights that produce that hidden state (embeddings + blocks
1..layer), so an SSI cannot silently be applied to another model.

Artifact (a directory): ``ssi.safetensors`` (weights) + ``ssi.json`` (everything else).
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ArtifactError

log = logging.getLogger(__name__)

SSI_FORMAT = 1


def _torch():
    import torch

    return torch


def build_net(d: int, hidden: int, dropout: float = 0.1):
    import torch.nn as nn

    return nn.Sequential(nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


@dataclass
class SSI:
    net: Any
    layer: int
    hidden_size: int
    hidden: int
    read_position: str = "chat"
    pool: str = "last"
    threshold: float = 0.5
    lang_thresholds: dict[str, float] = field(default_factory=dict)
    fingerprint: str | None = None  # prefix fingerprint of the base model up to `layer`
    dropout: float = 0.1
    meta: dict[str, Any] = field(default_factory=dict)

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, hidden_size: int, layer: int, hidden: int | None = None, *, dropout: float = 0.1,
               read_position: str = "chat", threshold: float = 0.5, fingerprint: str | None = None,
               seed: int = 0) -> "SSI":
        torch = _torch()
        hidden = hidden or hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_net(hidden_size, hidden, dropout)
        net.eval()
        return cls(net, layer, hidden_size, hidden, read_position, "last", threshold, {}, fingerprint, dropout)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    # --- inference -----------------------------------------------------------------------------
    def prob_from_states(self, h):
        """P(harmful) from hidden states ``h`` of shape (B, d) (torch tensor or numpy)."""
        torch = _torch()
        if isinstance(h, np.ndarray):
            h = torch.from_numpy(h)
        if h.shape[-1] != self.hidden_size:
            raise ArtifactError(f"SSI expects hidden size {self.hidden_size}, got states of size {h.shape[-1]}")
        p = next(self.net.parameters())
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            out = torch.sigmoid(self.net(h.to(p.device, p.dtype)).squeeze(-1))
        self.net.train(was_training)
        return out

    def threshold_for(self, lang: str | None) -> float:
        if lang is not None and lang in self.lang_thresholds:
            return self.lang_thresholds[lang]
        return self.threshold

    def decide(self, probs, langs: Sequence[str | None] | None = None) -> np.ndarray:
        p = probs.detach().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
        if langs is None:
            return p >= self.threshold
        return np.array([pi >= self.threshold_for(lg) for pi, lg in zip(p, langs)], dtype=bool)

    def score(self, lm, prompts: Sequence[str], *, batch_size: int = 16, progress: bool = False,
              cache_dir: str | Path | None = None) -> np.ndarray:
        """P(harmful) of each prompt with model ``lm`` (validated against this SSI)."""
        from .activations import collect

        self.check_model(lm)
        acts = collect(lm, list(prompts), [self.layer], read_position=self.read_position, batch_size=batch_size,
                       progress=progress, cache_dir=cache_dir, desc="ssi: forward")
        return self.prob_from_states(acts.last[self.layer]).cpu().numpy()

    def to(self, device) -> "SSI":
        self.net.to(device)
        return self

    # --- validation ----------------------------------------------------------------------------
    def check_model(self, lm, allow_fingerprint_mismatch: bool = False) -> None:
        if lm.hidden_size != self.hidden_size:
            raise ArtifactError(
                f"SSI was trained on hidden size {self.hidden_size} but model {lm.name} has hidden size "
                f"{lm.hidden_size}: this SSI belongs to another model")
        if self.layer > lm.n_layers or self.layer < 0:
            raise ArtifactError(f"SSI reads hidden_states[{self.layer}] but {lm.name} has only {lm.n_layers} layers")
        if self.fingerprint:
            fp = lm.fingerprint(upto_layer=self.layer)
            if fp != self.fingerprint:
                msg = (f"SSI fingerprint mismatch: trained on a model whose layers 0..{self.layer} fingerprint to "
                       f"{self.fingerprint}, but {lm.name} gives {fp}")
                if not allow_fingerprint_mismatch:
                    raise ArtifactError(msg + "; pass --allow_fingerprint_mismatch true to use it anyway")
                warnings.warn(msg + " (allowed by flag)", stacklevel=2)
                log.warning(msg + " (allowed by flag)")

    # --- artifact ------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        from .meta import versions

        return {
            "kind": "lasa.ssi", "format": SSI_FORMAT,
            "architecture": "Linear(d,H)-LayerNorm(H)-GELU-Dropout-Linear(H,1)-sigmoid",
            "hidden_size": self.hidden_size, "hidden": self.hidden, "dropout": self.dropout,
            "layer": self.layer, "hidden_states_index": self.layer, "read_position": self.read_position,
            "pool": self.pool, "threshold": self.threshold, "lang_thresholds": self.lang_thresholds,
            "fingerprint": self.fingerprint, "n_params": self.n_params, "versions": versions(), **self.meta,
        }

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save as st_save

        from .io import atomic_write_bytes, atomic_write_json

        d = Path(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        atomic_write_bytes(d / "ssi.safetensors", st_save(state, metadata={"format": "lasa.ssi"}))
        atomic_write_json(d / "ssi.json", self.config_dict())
        return d

    @classmethod
    def load(cls, directory: str | Path, lm=None, *, allow_fingerprint_mismatch: bool = False) -> "SSI":
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        d = Path(directory)
        cfg_p, w_p = d / "ssi.json", d / "ssi.safetensors"
        if not cfg_p.exists() or not w_p.exists():
            raise ArtifactError(f"{d}: not an SSI directory (needs ssi.json and ssi.safetensors); run `lasa train-ssi`")
        try:
            cfg = json.loads(cfg_p.read_text("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{cfg_p}: corrupted ({exc})") from exc
        if not isinstance(cfg, dict) or cfg.get("kind") != "lasa.ssi":
            raise ArtifactError(f"{cfg_p}: not a lasa SSI config")
        if cfg.get("format", 0) > SSI_FORMAT:
            raise ArtifactError(f"{cfg_p}: format {cfg['format']} is newer than this lasa understands; upgrade lasa")
        try:
            state = st_load(w_p.read_bytes())
        except (SafetensorError, Exception) as exc:
            raise ArtifactError(f"{w_p}: corrupted weights ({type(exc).__name__}: {exc})") from exc
        try:
            ssi = cls.create(int(cfg["hidden_size"]), int(cfg["layer"]), int(cfg["hidden"]),
                             dropout=float(cfg.get("dropout", 0.1)), read_position=cfg.get("read_position", "chat"),
                             threshold=float(cfg["threshold"]), fingerprint=cfg.get("fingerprint"))
            ssi.net.load_state_dict(state, strict=True)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ArtifactError(f"{d}: SSI config and weights disagree ({exc})") from exc
        ssi.lang_thresholds = {str(k): float(v) for k, v in (cfg.get("lang_thresholds") or {}).items()}
        ssi.meta = {k: cfg[k] for k in ("train_langs", "metrics", "base_model", "calibration") if k in cfg}
        ssi.net.eval()
        if lm is not None:
            ssi.check_model(lm, allow_fingerprint_mismatch)
        return ssi

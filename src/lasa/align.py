"""Stage 3: semantic-conditioned alignment (``lasa align``): KTO conditioned on the SSI signal z.

For every prompt ``x`` of the KTO data a binary ``z`` is set (``z_source``): the trained
SSI's decision at l* (``ssi``), the data's harmful label (``source``, with probability
``p_source``) or either (``mix``); a further ``benign_condition_rate`` of the other prompts
also gets ``z`` while keeping their helpful desirable answer, so a false positive of the gate
does not turn into a refusal.  When ``z`` is set the conditioning ids
(:func:`lasa.models.conditioning_ids`) go right after the generation prompt at the token
level, masked from the loss like the prompt - exactly what :mod:`lasa.gate` feeds the model
at inference.  The loss and data formats are in :mod:`lasa.kto`.

Design decision: a short trainer of our own, not TRL's ``KTOTrainer``.  We need an
SSI-derived z per prompt, token-level conditioning (TRL re-tokenises text, which can merge
tokens across the prompt/conditioning boundary), frozen blocks <= l*, and an exact,
atomic resume; bending ``KTOTrainer`` to all four means overriding most of its private
methods.  The formula is TRL's (``loss_type="kto"``, KL by mismatched pairs, clamped and
detached); ``tests/test_align.py`` checks our loss against ``KTOTrainer`` on fixed log-probs,
and ``bench/bench_align.py`` times both on the same batch.

Keeping the SSI valid: parameters that produce ``hidden_states[l*]`` (embeddings and blocks
1..l*) stay frozen - LoRA goes only on blocks above l* (peft ``layers_to_transform``), full
fine-tuning sets ``requires_grad=False`` on everything but blocks l*+1..L, the final norm
(unless l* = L) and an untied LM head - so the gate reads the same state from the aligned
model in the same pass.  l* is the SSI's layer unless ``freeze_upto`` says otherwise.

Reference model: with LoRA the frozen base itself (``model.disable_adapter()``, no copy);
full fine-tuning keeps a frozen copy (twice the weight memory; under ZeRO-3/FSDP the copy is
not sharded, so prefer LoRA there).

Precision and devices: ``accelerate.Accelerator`` places the model and does gradient
accumulation, so the same code runs on one CPU/GPU or under ``accelerate launch``; bf16
autocast on CUDA (LoRA keeps a bf16 base with fp32 adapters, full FT fp32 master weights),
fp32 on CPU.  Multi-GPU (not run in CI)::

    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml -m lasa.cli align --config align.yaml
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m lasa.cli align --config align.yaml

Checkpoints: every ``save_every`` optimizer steps ``out/checkpoints/step-N/`` (trainable
weights, optimizer, scheduler, RNG states, step and history; written in a temporary
directory and renamed, so a kill leaves the previous checkpoint intact); a rerun with
``resume=true`` continues from the last one.  Data order is a pure function of
(seed, epoch), so a resumed run sees the same batches as an uninterrupted one.

Outputs in ``out``: ``adapter/`` (PEFT) or ``model/`` (safetensors), ``align.json``
(config, data manifest with sha256, z stats, per-step loss / rewards / margin / KL),
``examples.jsonl`` (z per example), ``align.png``.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .configs import ModelArgs, check_choice, check_range, check_types
from .errors import ArtifactError, ConfigError
from .kto import (Example, KTORow, collate, encode_messages, estimate_kl, kl_partners, kto_loss, load_kto_data,
                  make_example, sequence, sequence_logps, stable_uniform, turn_end_id)

log = logging.getLogger(__name__)

Z_SOURCES = ("ssi", "source", "mix")
SCHEDULERS = ("constant", "linear", "cosine")
# fields that may change between a run and its resume
_RESUME_FREE = {"max_steps", "epochs", "save_every", "keep_checkpoints", "resume", "out", "device"}


@dataclass
class AlignConfig(ModelArgs):
    """Semantic-conditioned KTO fine-tuning (LASA stage 3).

    Args:
        data: KTO data: JSONL/JSON of {prompt, completion, label} (lasa make-pairs), {prompt, chosen, rejected}, or the LASA repo layout.
        ssi: SSI directory (lasa train-ssi); gives z (z_source ssi/mix) and the frozen layer l*.
        z_source: ssi (the SSI's decision), source (the data's harmful label) or mix (either).
        p_source: Probability that a harmful-labelled prompt gets the conditioning (z_source source/mix).
        benign_condition_rate: Fraction of the other prompts also conditioned, keeping their helpful answer.
        freeze_upto: Freeze embeddings and blocks 1..N (default: the SSI's layer; none without an SSI).
        beta: KTO beta (reward scale).
        desirable_weight: Weight of desirable examples in the loss.
        undesirable_weight: Weight of undesirable examples in the loss.
        lora: Train a LoRA adapter (default); false = full fine-tuning (keeps a frozen reference copy).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        lora_target: Linear module names inside the blocks to adapt (default: all of them).
        lr: Learning rate (default 1e-4 with LoRA, 5e-6 for full fine-tuning).
        lr_scheduler: constant, linear or cosine decay (after warmup).
        warmup_ratio: Fraction of the optimizer steps used for linear warmup.
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping norm (0 = off).
        epochs: Passes over the data (ignored when max_steps is set).
        max_steps: Optimizer steps to train (overrides epochs).
        batch_size: Examples per micro-batch and process (>= 2: the KL term pairs prompts within a batch).
        grad_accum: Micro-batches per optimizer step.
        max_length: Maximum tokens per example (completions are cut at the end; longer prompts are dropped).
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        seed: Seed of the data order, LoRA init, dropout and the z draws.
        save_every: Write a checkpoint every N optimizer steps (and at the end).
        keep_checkpoints: Keep the last N checkpoints.
        out: Output directory.
        resume: Continue from the last checkpoint in out (false = start over, deleting old checkpoints).
        allow_fingerprint_mismatch: Use an SSI whose base-model fingerprint differs (warns).
    """

    data: str = "runs/pairs.jsonl"
    ssi: str | None = None
    z_source: str = "ssi"
    p_source: float = 1.0
    benign_condition_rate: float = 0.05
    freeze_upto: int | None = None
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target: list[str] | None = None
    lr: float | None = None
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = 100
    keep_checkpoints: int = 2
    out: str = "runs/align"
    resume: bool = True
    allow_fingerprint_mismatch: bool = False

    def __post_init__(self):
        check_types(self)
        check_choice("z_source", self.z_source, Z_SOURCES)
        check_choice("lr_scheduler", self.lr_scheduler, SCHEDULERS)
        if self.z_source in ("ssi", "mix") and not self.ssi:
            raise ConfigError(f"z_source={self.z_source!r} needs an SSI (--ssi DIR from `lasa train-ssi`), "
                              f"or use --z_source source")
        for name, lo, hi in (("p_source", 0.0, 1.0), ("benign_condition_rate", 0.0, 1.0), ("warmup_ratio", 0.0, 1.0),
                             ("lora_dropout", 0.0, 0.9), ("weight_decay", 0.0, None), ("max_grad_norm", 0.0, None),
                             ("desirable_weight", 0.0, None), ("undesirable_weight", 0.0, None)):
            check_range(name, getattr(self, name), lo, hi)
        if not self.beta > 0:
            raise ConfigError(f"beta={self.beta!r} must be > 0")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} must be > 0")
        if not self.epochs > 0:
            raise ConfigError(f"epochs={self.epochs!r} must be > 0")
        for name, lo in (("batch_size", 2), ("grad_accum", 1), ("max_length", 8), ("save_every", 1),
                         ("keep_checkpoints", 1), ("lora_r", 1), ("lora_alpha", 1), ("max_steps", 1),
                         ("freeze_upto", 0)):
            check_range(name, getattr(self, name), lo)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-4 if self.lora else 5e-6)


# --- z: which prompts get the conditioning ------------------------------------------------------

def compute_z(rows: list[KTORow], cfg: AlignConfig, lm, ssi) -> dict[str, dict[str, Any]]:
    """Per prompt: ``{z, reason, p_harmful, ssi, harmful}`` (deterministic in ``cfg.seed``)."""
    prompts: dict[str, KTORow] = {}
    harmful: dict[str, bool | None] = {}
    for r in rows:
        prompts.setdefault(r.prompt_key, r)
        if r.harmful is not None:
            harmful[r.prompt_key] = bool(harmful.get(r.prompt_key)) or r.harmful
    keys = list(prompts)
    probs = fired = None
    if ssi is not None and cfg.z_source in ("ssi", "mix"):
        probs = ssi.score(lm, [prompts[k].user_text for k in keys], batch_size=max(cfg.batch_size, 8),
                          cache_dir=Path(cfg.out) / "cache")
        fired = ssi.decide(probs, [prompts[k].lang for k in keys])
    if cfg.z_source in ("source", "mix") and not harmful:
        log.warning("align: z_source=%s but no row says whether its prompt is harmful (source/harmful fields); "
                    "only the SSI and benign_condition_rate set z", cfg.z_source)
    out: dict[str, dict[str, Any]] = {}
    for i, k in enumerate(keys):
        h = harmful.get(k)
        by_ssi = bool(fired[i]) if fired is not None else False
        by_src = bool(h) and stable_uniform(cfg.seed, "source", k) < cfg.p_source
        reasons = [n for n, on in (("ssi", by_ssi and cfg.z_source != "source"),
                                   ("source", by_src and cfg.z_source != "ssi")) if on]
        if not reasons and h is not True and stable_uniform(cfg.seed, "benign", k) < cfg.benign_condition_rate:
            reasons = ["benign_rate"]
        out[k] = {"z": bool(reasons), "reason": "+".join(reasons) or None, "harmful": h,
                  "p_harmful": None if probs is None else float(probs[i]), "ssi": by_ssi if fired is not None else None}
    return out


def z_stats(rows: list[KTORow], zs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    first = {}
    for r in rows:
        first.setdefault(r.prompt_key, r)
    by_lang: dict[str, list[int]] = {}
    by_label: dict[str, list[int]] = {}
    for k, info in zs.items():
        for table, key in ((by_lang, first[k].lang or "unknown"),
                           (by_label, {True: "harmful", False: "benign", None: "unlabelled"}[info["harmful"]])):
            n_z = table.setdefault(key, [0, 0])
            n_z[0] += 1
            n_z[1] += int(info["z"])
    n_z = sum(int(v["z"]) for v in zs.values())
    ps = [v["p_harmful"] for v in zs.values() if v["p_harmful"] is not None]
    return {"n_prompts": len(zs), "n_conditioned": n_z, "rate": n_z / max(len(zs), 1),
            "by_reason": dict(Counter(v["reason"] or "none" for v in zs.values())),
            "by_lang": {k: {"n": a, "z": b} for k, (a, b) in sorted(by_lang.items())},
            "by_data_label": {k: {"n": a, "z": b} for k, (a, b) in sorted(by_label.items())},
            "mean_p_harmful": float(np.mean(ps)) if ps else None}


# --- model preparation --------------------------------------------------------------------------

def block_linear_names(lm) -> list[str]:
    import torch.nn as nn

    return sorted({n.rsplit(".", 1)[-1] for n, m in lm.layers.named_modules() if isinstance(m, nn.Linear)})


def prepare_model(lm, cfg: AlignConfig, freeze_upto: int | None):
    """Return ``(model, ref_model)``: LoRA/PEFT model with ``ref_model=None``, or full FT + a frozen copy."""
    L = lm.n_layers
    start = freeze_upto or 0  # first trainable block (0-based module index)
    if start >= L and cfg.lora:
        raise ConfigError(f"freeze_upto={freeze_upto} leaves no block above it to adapt in {lm.name} ({L} blocks); "
                          f"the SSI layer must be below the last block, or use --lora false")
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        from .models import quiet_peft

        targets = cfg.lora_target or block_linear_names(lm)
        pcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(targets), layers_to_transform=list(range(start, L)),
                          layers_pattern=lm.layers_path.rsplit(".", 1)[-1], task_type="CAUSAL_LM", bias="none")
        with quiet_peft():
            model, ref = get_peft_model(lm.model, pcfg), None
    else:
        model = lm.model
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        model.requires_grad_(False)
        lm.layers[start:].requires_grad_(True)
        tied = {id(p) for p in model.get_input_embeddings().parameters()}
        if start < L and lm.final_norm is not None:
            lm.final_norm.requires_grad_(True)
        head = model.get_output_embeddings()
        if head is not None and not any(id(p) in tied for p in head.parameters()):
            head.requires_grad_(True)
    if cfg.gradient_checkpointing:
        kw = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # the name in recent transformers
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
        getattr(model, "config", lm.model.config).use_cache = False
    return model, ref


def make_scheduler(optimizer, name: str, warmup: int, total: int):
    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        frac = (step - warmup) / max(1, total - warmup)
        if name == "linear":
            return max(0.0, 1.0 - frac)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    return LambdaLR(optimizer, factor)


# --- checkpoints ----------------------------------------------------------------------------------

def _config_key(cfg: AlignConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUME_FREE}


def _rng_state() -> dict[str, Any]:
    import torch

    st = np.random.get_state()
    out = {"python": random.getstate(), "numpy": (st[0], st[1].tolist(), *st[2:]), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(st: dict[str, Any]) -> None:
    import torch

    random.setstate(st["python"])
    np.random.set_state((st["numpy"][0], np.asarray(st["numpy"][1], dtype=np.uint32), *st["numpy"][2:]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _torch_bytes(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def save_checkpoint(ckdir: Path, accelerator, model, optimizer, scheduler, state: dict, keep: int) -> Path:
    """Write ``ckdir/step-N`` atomically (temporary directory + rename); prune old ones."""
    from safetensors.torch import save as st_save

    from .io import atomic_write_bytes, atomic_write_json

    final = ckdir / f"step-{state['step']:07d}"
    tmp = ckdir / f".tmp-step-{state['step']:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if _sharded(accelerator):
        accelerator.save_state(str(tmp / "accelerate"))  # sharded model + optimizer states, every rank
    else:
        if accelerator.is_main_process:
            params = {n: p.detach().cpu().contiguous() for n, p in accelerator.unwrap_model(model).named_parameters()
                      if p.requires_grad}
            atomic_write_bytes(tmp / "trainable.safetensors", st_save(params))
            atomic_write_bytes(tmp / "optimizer.pt", _torch_bytes(optimizer.state_dict()))
    atomic_write_bytes(tmp / f"rng-{accelerator.process_index}.pt", _torch_bytes(_rng_state()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_bytes(tmp / "scheduler.pt", _torch_bytes(scheduler.state_dict()))
        atomic_write_json(tmp / "state.json", state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(ckdir.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(ckdir: Path) -> Path | None:
    done = [d for d in sorted(ckdir.glob("step-*")) if (d / "state.json").exists()]
    return done[-1] if done else None


def load_checkpoint(path: Path, accelerator, model, optimizer, scheduler) -> dict:
    import torch
    from safetensors.torch import load_file

    from .io import read_json

    state = read_json(path / "state.json")
    if _sharded(accelerator):
        accelerator.load_state(str(path / "accelerate"))
    else:
        saved = load_file(str(path / "trainable.safetensors"))
        params = dict(accelerator.unwrap_model(model).named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in saved]
        if missing or any(n not in params for n in saved):
            raise ArtifactError(f"{path}: checkpoint weights do not match this model ({missing[:3]} ...); "
                                f"use a new --out or --resume false")
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = path / f"rng-{accelerator.process_index}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=True))
    return state


# --- the batch schedule ---------------------------------------------------------------------------

def micro_batch(n: int, m: int, cfg: AlignConfig, world: int, rank: int) -> list[int]:
    """Example indices of global micro-batch ``m`` for process ``rank``: a pure function of (seed, m)."""
    g = cfg.batch_size * world
    per_epoch = math.ceil(n / g)
    epoch, b = divmod(m, per_epoch)
    perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    idx = list(perm[b * g:(b + 1) * g])
    if len(idx) < g:  # the last batch of an epoch wraps around to stay full
        idx += list(perm[: g - len(idx)])
    return [int(i) for i in idx[rank * cfg.batch_size:(rank + 1) * cfg.batch_size]]


def total_steps(n: int, cfg: AlignConfig, world: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = math.ceil(n / (cfg.batch_size * world))
    return max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))


def train_step(model, ref_model, batch: list[Example], pad_id: int, cfg: AlignConfig, accelerator):
    """Forward passes and KTO loss of one micro-batch (no backward)."""
    import torch

    main = [sequence(e.prompt_ids, e.completion_ids) for e in batch]
    partner = kl_partners([e.prompt_key for e in batch])
    kl = []
    for e, j in zip(batch, partner):
        c = batch[j].completion_ids[: max(1, cfg.max_length - len(e.prompt_ids))]
        kl.append(sequence(e.prompt_ids, c))
    dev = accelerator.device
    main_b = {k: v.to(dev) for k, v in collate(main, pad_id).items()}
    kl_b = {k: v.to(dev) for k, v in collate(kl, pad_id).items()}
    both_b = {k: v.to(dev) for k, v in collate(main + kl, pad_id).items()}
    with accelerator.autocast():
        policy = sequence_logps(model, main_b)
        with torch.no_grad():
            policy_kl = sequence_logps(model, kl_b)
            if ref_model is None:
                with accelerator.unwrap_model(model).disable_adapter():
                    ref_all = sequence_logps(model, both_b)
            else:
                ref_all = sequence_logps(ref_model, both_b)
    ref, ref_kl = ref_all[: len(batch)], ref_all[len(batch):]
    z_kl = estimate_kl(policy_kl, ref_kl, accelerator.gather if accelerator.num_processes > 1 else None)
    labels = torch.tensor([e.label for e in batch], dtype=torch.bool, device=dev)
    out = kto_loss(policy, ref, labels, z_kl, beta=cfg.beta, desirable_weight=cfg.desirable_weight,
                   undesirable_weight=cfg.undesirable_weight)
    return out, labels, int(main_b["attention_mask"].sum())


# --- the stage --------------------------------------------------------------------------------------

def _tokenise(rows: list[KTORow], zs: dict, lm, cfg: AlignConfig) -> tuple[list[Example], list[dict]]:
    from .models import conditioning_ids

    tok = lm.tokenizer
    cond, end = conditioning_ids(tok), turn_end_id(lm)
    prompt_ids: dict[str, list[int]] = {}
    examples, log_rows = [], []
    for i, r in enumerate(rows):
        k = r.prompt_key
        if k not in prompt_ids:
            prompt_ids[k] = encode_messages(tok, r.prompt)
        comp = list(tok(r.completion, add_special_tokens=False)["input_ids"]) + ([end] if r.ends else [])
        info = zs[k]
        ex = make_example(prompt_ids[k], comp, cond, info["z"], r.label, k, i, cfg.max_length)
        if ex is not None:
            examples.append(ex)
        log_rows.append({"row": i, "where": r.where, "qid": r.qid, "lang": r.lang, "label": r.label,
                         "source": r.source, "harmful": info["harmful"], "p_harmful": info["p_harmful"],
                         "z": info["z"], "z_reason": info["reason"], "prompt_tokens": len(prompt_ids[k]),
                         "completion_tokens": len(comp), "dropped": ex is None})
    return examples, log_rows


def align(cfg: AlignConfig, lm=None, *, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Run the stage (see the module docstring); returns the ``align.json`` content.

    ``lm``: an already loaded :class:`~lasa.models.LoadedModel` (its model is modified in
    place).  ``on_step(step, record)`` is called after every optimizer step (and checkpoint).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, set_seed

    from .io import JsonlWriter, atomic_write_json, sha256_file
    from .meta import model_info, versions
    from .models import load_model, resolve_device

    t0 = time.time()
    out = Path(cfg.out)
    rows = load_kto_data(cfg.data)  # validate the data before loading any model
    data_sha = sha256_file(cfg.data)
    device = str(lm.device) if lm is not None else resolve_device(cfg.device)
    cuda = device.startswith("cuda")
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no",
                              gradient_accumulation_plugin=GradientAccumulationPlugin(
                                  num_steps=cfg.grad_accum, sync_with_dataloader=False))
    set_seed(cfg.seed)
    if lm is None:
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if cuda and cfg.lora else "float32")
        lm = load_model(cfg.model, dtype=dtype, device=str(accelerator.device), gguf_file=cfg.gguf_file,
                        trust_remote_code=cfg.trust_remote_code, adapter=cfg.adapter)
    ssi = None
    if cfg.ssi:
        from .ssi_model import SSI

        ssi = SSI.load(cfg.ssi, lm, allow_fingerprint_mismatch=cfg.allow_fingerprint_mismatch).to(lm.device)
    freeze = cfg.freeze_upto if cfg.freeze_upto is not None else (ssi.layer if ssi is not None else None)
    if ssi is not None and (freeze is None or freeze < ssi.layer):
        log.warning("align: freeze_upto=%s is below the SSI layer %d; training changes hidden_states[%d] and the "
                    "SSI will no longer match the aligned model", freeze, ssi.layer, ssi.layer)
    if freeze is None:
        log.warning("align: no SSI and no freeze_upto: every layer is trained; an SSI must be trained afterwards")
    if freeze is not None and freeze > lm.n_layers:
        raise ConfigError(f"freeze_upto={freeze} exceeds the {lm.n_layers} layers of {lm.name}")
    info_before = model_info(lm, freeze)

    zs = compute_z(rows, cfg, lm, ssi)
    examples, log_rows = _tokenise(rows, zs, lm, cfg)
    if len(examples) < 2:
        raise ConfigError(f"{cfg.data}: {len(examples)} example(s) fit max_length={cfg.max_length}; raise max_length")
    if accelerator.is_main_process:
        (out / "examples.jsonl").unlink(missing_ok=True)
        with JsonlWriter(out / "examples.jsonl") as w:
            w.write_many(log_rows)
    zst = z_stats(rows, zs)
    say = log.info if accelerator.is_main_process else log.debug
    say("align: %d rows (%d desirable), %d prompts, %d conditioned (%.1f%%), frozen up to %s, %s", len(examples),
        sum(e.label for e in examples), zst["n_prompts"], zst["n_conditioned"], 100 * zst["rate"], freeze,
        "LoRA" if cfg.lora else "full fine-tuning")

    model, ref_model = prepare_model(lm, cfg, freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    world, rank = accelerator.num_processes, accelerator.process_index
    total = total_steps(len(examples), cfg, world)
    scheduler = make_scheduler(optimizer, cfg.lr_scheduler, int(cfg.warmup_ratio * total), total)
    ds = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds is not None:  # no dataloader goes through prepare(), so DeepSpeed needs the micro-batch size here
        ds.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]  # the prepared (possibly sharded) parameters
    if ref_model is not None:
        ref_model.to(accelerator.device)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else turn_end_id(lm)

    ckdir = out / "checkpoints"
    key = {"config": _config_key(cfg), "data_sha256": data_sha}
    step, history = 0, []
    if not cfg.resume and accelerator.is_main_process and ckdir.exists():
        log.warning("align: resume=false: deleting the old checkpoints in %s", ckdir)
        shutil.rmtree(ckdir)
    accelerator.wait_for_everyone()
    last = latest_checkpoint(ckdir) if cfg.resume else None
    if last is not None:
        from .io import read_json

        if read_json(last / "state.json").get("key") != key:
            raise ArtifactError(f"{last}: was written with another config or data file; rerun with the same "
                                f"settings, a new --out, or --resume false")
        st = load_checkpoint(last, accelerator, model, optimizer, scheduler)
        step, history = int(st["step"]), list(st["history"])
        if st.get("total") not in (None, total) and cfg.lr_scheduler != "constant":
            log.warning("align: resuming a run planned for %s steps with %d: the %s LR schedule is recomputed for the "
                        "new total, so the result differs from an uninterrupted %d-step run", st["total"], total,
                        cfg.lr_scheduler, total)
        say("align: resumed from %s (step %d of %d)", last, step, total)
    resumed_from = step

    model.train()
    while step < total:
        t_step, acc = time.time(), torch.zeros(8, device=accelerator.device)
        for a in range(cfg.grad_accum):
            batch = [examples[i] for i in micro_batch(len(examples), step * cfg.grad_accum + a, cfg, world, rank)]
            with accelerator.accumulate(model):
                res, labels, ntok = train_step(model, ref_model, batch, pad_id, cfg, accelerator)
                accelerator.backward(res.loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            r = res.rewards.float()
            acc += torch.stack([res.loss.detach().float(), (r * labels).sum(), labels.sum().float(),
                                (r * ~labels).sum(), (~labels).sum().float(), res.kl.float(),
                                torch.tensor(1.0, device=r.device), torch.tensor(float(ntok), device=r.device)])
        lr_now = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        acc = accelerator.reduce(acc, "sum")
        n_mb = float(acc[6])
        rc = float(acc[1] / acc[2]) if acc[2] > 0 else None
        rr = float(acc[3] / acc[4]) if acc[4] > 0 else None
        rec = {"step": step, "loss": float(acc[0]) / n_mb, "rewards_chosen": rc, "rewards_rejected": rr,
               "margin": None if rc is None or rr is None else rc - rr, "kl": float(acc[5]) / n_mb, "lr": lr_now,
               "tokens": int(acc[7]), "seconds": round(time.time() - t_step, 4)}
        history.append(rec)
        if accelerator.is_main_process and (step % max(1, total // 20) == 0 or step == total):
            log.info("align: step %d/%d loss %.4f margin %s kl %.4f", step, total, rec["loss"],
                     "n/a" if rec["margin"] is None else f"{rec['margin']:.4f}", rec["kl"])
        if step % cfg.save_every == 0 or step == total:
            save_checkpoint(ckdir, accelerator, model, optimizer, scheduler,
                            {"step": step, "total": total, "history": history, "key": key, "time": time.time()}, cfg.keep_checkpoints)
        if on_step is not None:
            on_step(step, rec)

    # --- outputs
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    target = out / ("adapter" if cfg.lora else "model")
    if accelerator.is_main_process:
        unwrapped.save_pretrained(str(target), state_dict=state_dict, safe_serialization=True)
        if not cfg.lora:
            lm.tokenizer.save_pretrained(str(target))
    after, adapted = None, None
    if cfg.lora:
        adapted = sorted({int(n.split(lm.layers_path.rsplit(".", 1)[-1] + ".", 1)[1].split(".", 1)[0])
                          for n, p in unwrapped.named_parameters() if p.requires_grad}) if n_train else []
        if freeze is not None and adapted and adapted[0] < freeze:
            raise ArtifactError(f"internal error: LoRA adapted block {adapted[0]} <= l* = {freeze}")
    elif freeze is not None:
        from .models import model_fingerprint, wrap_model

        after = model_fingerprint(wrap_model(unwrapped, lm.tokenizer, lm.name), freeze if freeze < lm.n_layers else None)
    from . import CONDITIONING_TEXT

    result = {
        "kind": "lasa.align", "complete": True, "output": str(target), "lora": cfg.lora,
        "config": dataclasses.asdict(cfg) | {"learning_rate": cfg.learning_rate},
        "data": {"path": str(cfg.data), "sha256": data_sha, "n_rows": len(rows), "n_examples": len(examples),
                 "n_dropped": len(rows) - len(examples), "n_desirable": sum(e.label for e in examples),
                 "n_undesirable": sum(not e.label for e in examples),
                 "langs": dict(Counter(r.lang or "unknown" for r in rows))},
        "z": zst, "conditioning_text": CONDITIONING_TEXT,
        "ssi": None if ssi is None else {"dir": cfg.ssi, "layer": ssi.layer, "threshold": ssi.threshold},
        "frozen_upto": freeze, "trainable_params": n_train, "total_steps": total, "resumed_from": resumed_from,
        "processes": world, "model_before": info_before,
        # full FT: recomputed on the trained weights; LoRA: no adapter sits on blocks <= l* (see adapted_layers),
        # so the merged model keeps the base prefix - checked in tests/test_align.py
        "prefix_fingerprint_after": after, "adapted_layers": adapted,
        "history": history, "final": history[-1] if history else None,
        "seconds": round(time.time() - t0, 2), "versions": versions(),
    }
    if accelerator.is_main_process:
        atomic_write_json(out / "align.json", result)
        try:
            plot_align(history, out / "align.png")
        except Exception as exc:  # noqa: BLE001 - a plot must never fail the stage
            log.warning("align: plot failed (%s)", exc)
        log.info("align: wrote %s and %s", target, out / "align.json")
    return result


def plot_align(history: list[dict], path: Path) -> Path:
    from .plots import _fig, _save

    plt = _fig()
    x = [h["step"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(x, [h["loss"] for h in history], "-o", ms=2, color="#1f77b4")
    a.set_xlabel("optimizer step")
    a.set_ylabel("KTO loss")
    a.set_title("loss")
    for key, colour in (("rewards_chosen", "#2ca02c"), ("rewards_rejected", "#d62728"), ("margin", "#000000"),
                        ("kl", "#9467bd")):
        pts = [(h["step"], h[key]) for h in history if h[key] is not None]
        if pts:
            b.plot(*zip(*pts), "-", lw=1.5 if key == "margin" else 1, color=colour, label=key.replace("_", " "))
    b.axhline(0, color="grey", lw=0.5)
    b.set_xlabel("optimizer step")
    b.set_title("rewards (beta * log ratio) and z_KL")
    b.legend(fontsize=8)
    return _save(fig, path)

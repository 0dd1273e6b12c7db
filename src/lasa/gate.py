"""Inference with the LASA gate, in one pass.

The SSI reads ``hidden_states[l*]`` at the last prompt token, which is computed
anyway while the model prefills the prompt.  So the gate costs one small MLP
call and, for rows where it fires, one short extra chunk on the same KV cache:

1. *Prefill*: the batch of chat-templated prompt ids is left-padded
   (:func:`lasa.activations.pad_batch`, positions from the mask) and run once with
   ``use_cache=True``; a :class:`~lasa.activations.LayerTap` hook on block ``l*``
   (no early exit) captures the last-prompt-token state.
2. *Gate*: ``P(harmful)`` from the SSI, a per-row decision with per-language
   thresholds (``ssi.decide``), OR-ed with ``force_condition``.
3. *Conditioning chunk*: fired rows get ``conditioning_ids`` appended and run on
   the same cache.  Rows that do not fire get pad tokens there with attention
   mask 0, so later tokens never see them, and their position ids continue from
   their own real-token count.  A fired row therefore sees exactly
   ``prompt_ids + conditioning_ids``, the training format of :mod:`lasa.align`.
   Sliding-window models (Gemma 2/3, ...) count their window in cache columns, so
   masked columns in the middle would shrink a non-fired row's window; for them a
   mixed batch is split in two groups (``Cache.batch_select_indices``) and each
   group decodes on its own, which is again exact.
4. *Decode*: greedy by default, or temperature / top-p sampling with a seeded
   ``torch.Generator``; each row stops at any of ``eos_ids(lm)`` or at
   ``max_new_tokens``.

No second model, no second prefill.  With ``ssi=None`` or ``gate=False`` the same
loop does plain generation.

``backend="vllm"`` (:class:`VLLMGatedGenerator`): vLLM runs its own engine, so
the gate cannot read its hidden states.  The decision comes from an early-exit
forward of the *same HF weights* up to ``l*``
(:func:`lasa.activations.collect`, layers ``[l*]``), i.e. the exact features the
SSI was trained on; vLLM then generates from token ids
(``prompt_ids + conditioning_ids`` when gated).  Cost: one extra partial prefill
of ``l*/L`` of the model per prompt, plus the HF weights in memory beside vLLM's.
An ``adapter`` is merged into the HF weights and passed to vLLM as a LoRA request.
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .activations import LayerTap, length_batches, pad_batch
from .configs import ModelArgs, check_choice, check_range, check_types
from .errors import ArtifactError, BackendUnavailable, ConfigError, DataError
from .models import LoadedModel, conditioning_ids, eos_ids
from .ssi_model import SSI

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


@dataclass
class GenOutput:
    response: str
    p_harmful: float | None
    gated: bool
    prompt_tokens: int
    new_tokens: int  # generated tokens, the stop token included
    finish_reason: FinishReason
    token_ids: list[int] | None = None  # generated ids (stop token excluded)


def _check_sampling(max_new_tokens: int, temperature: float, top_p: float, batch_size: int) -> None:
    check_range("max_new_tokens", max_new_tokens, 1)
    check_range("temperature", temperature, 0.0, 100.0)
    if not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p={top_p!r} must be in (0, 1]")
    check_range("batch_size", batch_size, 1)


def sample_next(logits, temperature: float, top_p: float, gen):
    """Next token per row: argmax at temperature 0, else temperature + top-p sampling."""
    import torch

    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        sp[(sp.cumsum(-1) - sp) > top_p] = 0.0  # keep the smallest prefix with mass >= top_p
        probs = torch.zeros_like(probs).scatter_(-1, si, sp)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


class GatedGenerator:
    """Batched generation with the LASA gate applied inside the same forward pass."""

    def __init__(self, lm: LoadedModel, ssi: SSI | None, *, gate: bool = True, conditioning: str | None = None,
                 read_position: str | None = None):
        self.lm, self.ssi = lm, ssi
        self.gate = bool(gate and ssi is not None)
        if ssi is not None:
            if ssi.pool != "last":
                raise ArtifactError(f"the gate reads the last prompt token; this SSI pools {ssi.pool!r}")
            if ssi.hidden_size != lm.hidden_size or not 0 <= ssi.layer <= lm.n_layers:
                ssi.check_model(lm, allow_fingerprint_mismatch=True)  # raises the clear ArtifactError
            ssi.to(lm.device)
        self.read_position = read_position or (ssi.read_position if ssi is not None else "chat")
        self.tok_lock = threading.Lock()  # the server tokenises in another thread
        with self.tok_lock:
            self.cond_ids = conditioning_ids(lm.tokenizer, conditioning)
        self.eos = eos_ids(lm)
        if not self.eos:
            raise ConfigError(f"{lm.name}: no EOS token id (tokenizer or generation_config); cannot stop generation")
        pad = lm.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos[0])
        cfg = lm.model.config
        self.max_positions = getattr(cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg,
                                     "max_position_embeddings", None)
        # only the last position's logits are needed: skip the (T, vocab) projection where supported
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.model.forward).parameters else {}

    @property
    def layer(self) -> int | None:
        return self.ssi.layer if self.ssi is not None else None

    def encode(self, prompts: Sequence[str], systems: Sequence[str | None] | None = None) -> list[list[int]]:
        """Chat-templated prompt ids, exactly as every lasa stage reads them."""
        systems = list(systems) if systems is not None else [None] * len(prompts)
        with self.tok_lock:
            if all(s is None for s in systems):
                return self.lm.encode(list(prompts), read_position=self.read_position)
            return [self.lm.encode([p], read_position=self.read_position, system=s)[0]
                    for p, s in zip(prompts, systems)]

    def generate(self, prompts: list[str], langs: list[str] | None = None, *, systems: list[str | None] | None = None,
                 max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 batch_size: int = 8, force_condition: list[bool] | None = None,
                 progress: bool = False) -> list[GenOutput]:
        """Answer ``prompts`` (plain text; the chat template is applied here)."""
        return self.generate_ids(self.encode(prompts, systems), langs, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size,
                                 force_condition=force_condition, progress=progress)

    def generate_ids(self, seqs: list[list[int]], langs: list[str] | None = None, *, max_new_tokens: int = 64,
                     temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 8,
                     force_condition: list[bool] | None = None, progress: bool = False) -> list[GenOutput]:
        """Answer pre-tokenised prompts; batches are grouped by length, outputs keep the input order."""
        import torch
        from tqdm.auto import tqdm

        _check_sampling(max_new_tokens, temperature, top_p, batch_size)
        n = len(seqs)
        for name, v in (("langs", langs), ("force_condition", force_condition)):
            if v is not None and len(v) != n:
                raise ConfigError(f"{name} has {len(v)} entries for {n} prompts")
        if any(len(s) == 0 for s in seqs):
            raise DataError("a prompt encoded to zero tokens")
        longest = max((len(s) for s in seqs), default=0) + len(self.cond_ids) + max_new_tokens
        if self.max_positions and longest > self.max_positions:
            log.warning("prompt + conditioning + max_new_tokens reaches %d tokens, beyond %s's %d positions; "
                        "answers may degrade", longest, self.lm.name, self.max_positions)
        gen = torch.Generator(device=self.lm.device).manual_seed(int(seed))
        out: list[GenOutput | None] = [None] * n
        for idx in tqdm(length_batches([len(s) for s in seqs], batch_size), desc="generate", unit="batch",
                        disable=not progress, leave=False):
            res = self._batch([seqs[i] for i in idx], [langs[i] for i in idx] if langs else None,
                              [bool(force_condition[i]) for i in idx] if force_condition else None,
                              max_new_tokens, temperature, top_p, gen)
            for i, r in zip(idx, res):
                out[i] = r
        return out  # type: ignore[return-value]

    # --- the hot path ------------------------------------------------------------------------
    def _forward(self, ids, mask, pos, cache):
        out = self.lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                            use_cache=True, **self._keep)
        return out.logits[:, -1].float(), out.past_key_values

    def _batch(self, seqs, langs, force, max_new, temperature, top_p, gen) -> list[GenOutput]:
        import torch

        dev, B = self.lm.device, len(seqs)
        ids, mask, pos = (t.to(dev) for t in pad_batch(seqs, self.pad_id, "left"))
        with torch.inference_mode():
            # 1. prefill; the tap on block l* reads the last-prompt-token state on the way
            if self.gate:
                with LayerTap(self.lm, [self.ssi.layer], ("last",), early_exit=False) as tap:
                    tap.arm(mask)
                    logits, cache = self._forward(ids, mask, pos, None)
                probs = self.ssi.prob_from_states(tap.captured[self.ssi.layer]["last"]).float().cpu().numpy()
                fire = self.ssi.decide(probs, langs)
            else:
                logits, cache = self._forward(ids, mask, pos, None)
                probs, fire = None, np.zeros(B, dtype=bool)
            if force is not None:
                fire = fire | np.asarray(force, dtype=bool)
            # 2. split a mixed batch only where masked middle columns would not be exact
            groups = [np.arange(B)]
            if fire.any() and not fire.all() and any(getattr(x, "is_sliding", False) for x in cache.layers):
                groups = [np.flatnonzero(fire), np.flatnonzero(~fire)]
            results: dict[int, tuple[list[int], str]] = {}
            for k, g in enumerate(groups):
                gi = torch.as_tensor(g, device=dev)
                c = cache if k == len(groups) - 1 else copy.deepcopy(cache)  # the last group takes the original
                if len(groups) > 1:
                    c.batch_select_indices(gi)
                toks = self._condition_and_decode(logits[gi], mask[gi], c, fire[g], max_new, temperature, top_p, gen)
                results.update(zip(g.tolist(), toks))
            del cache
        outs = []
        for i in range(B):
            toks, reason = results[i]
            with self.tok_lock:
                text = self.lm.tokenizer.decode(toks, skip_special_tokens=True)
            outs.append(GenOutput(text, None if probs is None else float(probs[i]), bool(fire[i]), len(seqs[i]),
                                  len(toks) + (reason == "stop"), reason, toks))
        return outs

    def _condition_and_decode(self, logits, mask, cache, fire, max_new, temperature, top_p, gen):
        import torch

        dev, B = logits.device, logits.shape[0]
        # 3. conditioning chunk on the same cache: fired rows see prompt_ids + conditioning_ids
        if fire.any():
            f = torch.as_tensor(fire, device=dev)
            cond = torch.tensor(self.cond_ids, device=dev).expand(B, -1)
            chunk = torch.where(f[:, None], cond, torch.full_like(cond, self.pad_id))
            cpos = mask.sum(1, keepdim=True) + torch.arange(cond.shape[1], device=dev)
            mask = torch.cat([mask, f[:, None].long().expand_as(cond)], dim=1)
            clogits, cache = self._forward(chunk, mask, cpos, cache)
            logits = torch.where(f[:, None], clogits, logits)
        # 4. decode with the cache, stopping per row at EOS or max_new
        eos = torch.tensor(self.eos, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        stopped = torch.zeros(B, dtype=torch.bool, device=dev)
        steps = []
        for t in range(max_new):
            tok = sample_next(logits, temperature, top_p, gen)
            tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
            steps.append(tok)
            hit = torch.isin(tok, eos) & ~done
            stopped |= hit
            done |= hit
            if bool(done.all()) or t == max_new - 1:
                break
            pos = mask.sum(1, keepdim=True)  # real tokens so far = the new token's position
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits, cache = self._forward(tok[:, None], mask, pos, cache)
        gen_ids = torch.stack(steps, 1).tolist()
        out = []
        for i in range(B):
            row = gen_ids[i]
            if bool(stopped[i]):
                k = next(j for j, x in enumerate(row) if x in self.eos)
                out.append((row[:k], "stop"))
            else:
                out.append((row, "length"))
        return out


def require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            "backend='vllm' needs the vllm package, which is not installed (pip install 'lasa[vllm]' on Linux with "
            "a CUDA GPU); use backend='hf' (the default, one-pass gate) instead") from exc
    return vllm


class VLLMGatedGenerator(GatedGenerator):
    """Gate by an early-exit HF forward to l*, then generate with vLLM from token ids (see module doc)."""

    def __init__(self, lm: LoadedModel, ssi: SSI | None, *, model_path: str, gate: bool = True,
                 conditioning: str | None = None, adapter: str | None = None, **engine_kw):
        vllm = require_vllm()
        super().__init__(lm, ssi, gate=gate, conditioning=conditioning)
        # ``lm`` has the adapter merged (the gate reads the aligned model's states); vLLM loads the base
        # weights from disk, so the adapter must reach it as a LoRA request or it would decode the base model.
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            engine_kw.setdefault("enable_lora", True)
            engine_kw.setdefault("max_lora_rank", lora_rank(adapter))
            self.lora = LoRARequest("lasa-adapter", 1, str(adapter))
        self.llm = vllm.LLM(model=model_path, tokenizer=model_path, **engine_kw)

    def generate_ids(self, seqs, langs=None, *, max_new_tokens=64, temperature=0.0, top_p=1.0, seed=0,
                     batch_size=8, force_condition=None, progress=False):
        from vllm import SamplingParams

        from .activations import collect

        _check_sampling(max_new_tokens, temperature, top_p, batch_size)
        probs, fire = None, np.zeros(len(seqs), dtype=bool)
        if self.gate:
            acts = collect(self.lm, token_ids=seqs, layers=[self.ssi.layer], max_length=None, batch_size=batch_size,
                           progress=progress, desc="gate: forward to l*")
            probs = self.ssi.prob_from_states(acts.last[self.ssi.layer]).float().cpu().numpy()
            fire = self.ssi.decide(probs, langs)
        if force_condition is not None:
            fire = fire | np.asarray(force_condition, dtype=bool)
        inputs = [{"prompt_token_ids": list(s) + (self.cond_ids if f else [])} for s, f in zip(seqs, fire)]
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                stop_token_ids=self.eos, skip_special_tokens=True)
        res = self.llm.generate(inputs, params, use_tqdm=progress, lora_request=self.lora)
        outs = []
        for i, r in enumerate(res):
            o = r.outputs[0]
            reason = "stop" if o.finish_reason == "stop" else "length"
            toks = list(o.token_ids)
            if toks and toks[-1] in self.eos:
                toks = toks[:-1]
            outs.append(GenOutput(o.text, None if probs is None else float(probs[i]), bool(fire[i]), len(seqs[i]),
                                  len(o.token_ids), reason, toks))
        return outs


def lora_rank(adapter: str | Path) -> int:
    """The LoRA rank of a PEFT adapter directory, rounded up to a rank vLLM supports."""
    path = Path(adapter) / "adapter_config.json"
    try:
        r = int(json.loads(path.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: not a PEFT LoRA adapter config ({exc})") from exc
    return next((x for x in (8, 16, 32, 64, 128, 256, 320, 512) if x >= r), r)


def make_generator(lm: LoadedModel, ssi: SSI | None, *, gate: bool, backend: str = "hf", model: str | None = None,
                   adapter: str | None = None) -> GatedGenerator:
    """The generator a stage uses: the one-pass HF gate, or the HF gate + vLLM decoding."""
    if backend != "vllm":
        return GatedGenerator(lm, ssi, gate=gate)
    from .models import embedded_dir

    path = str(embedded_dir(lm.name.split(":", 1)[1])) if lm.name.startswith("embedded:") else str(model)
    return VLLMGatedGenerator(lm, ssi, gate=gate, model_path=path, adapter=adapter)


# --- the stage ---------------------------------------------------------------------------------

@dataclass
class GenerateConfig(ModelArgs):
    """Generate answers to a prompt file, with the LASA gate (one pass) when an SSI is given.

    Args:
        data: Prompts: JSONL/JSON/CSV ({id, lang, prompt}, MultiJail {id, prompt, lingual, tag}, ...) or builtin:NAME.
        ssi: SSI directory (from train-ssi); None generates without the gate.
        gate: Apply the gate (default: true when ssi is given); false = plain generation.
        out: Output JSONL; rows already there (by id) are skipped, so a rerun resumes.
        max_new_tokens: Maximum tokens generated per prompt.
        temperature: 0 = greedy; > 0 samples.
        top_p: Nucleus sampling mass, in (0, 1].
        seed: Seed of the sampling generator.
        batch_size: Prompts per forward batch (grouped by length).
        langs: Only prompts in these ISO 639-1 codes (default: all).
        limit: Only the first N prompts (after the language filter).
        backend: hf (one-pass gate) or vllm (early-exit HF gate + vLLM decoding; needs vllm).
        allow_fingerprint_mismatch: Use an SSI whose base-model fingerprint differs (warns).
    """

    data: str = "builtin:all"
    ssi: str | None = None
    gate: bool | None = None
    out: str = "runs/generate/responses.jsonl"
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    langs: list[str] | str | None = None
    limit: int | None = None
    backend: str = "hf"
    allow_fingerprint_mismatch: bool = False

    def __post_init__(self):
        check_types(self)
        check_choice("backend", self.backend, ("hf", "vllm"))
        _check_sampling(self.max_new_tokens, self.temperature, self.top_p, self.batch_size)
        check_range("limit", self.limit, 1)
        if self.gate is None:
            self.gate = self.ssi is not None
        if self.gate and not self.ssi:
            raise ConfigError("gate=true needs an SSI (--ssi DIR, from `lasa train-ssi`)")
        if not str(self.out).endswith(".jsonl"):
            raise ConfigError(f"out={self.out!r}: the output is JSONL; give a path ending in .jsonl")
        if self.langs is not None:
            from .langs import parse_langs

            self.langs = list(parse_langs(self.langs) or []) or None


def _done_ids(out: Path, model: str) -> set[str]:
    from .io import iter_jsonl

    if not out.exists():
        return set()
    done, others = set(), set()
    for _, rec in iter_jsonl(out, tolerate_truncated_tail=True):
        if "id" in rec:
            done.add(str(rec["id"]))
            if rec.get("model") not in (None, model):
                others.add(rec.get("model"))
    if others:
        log.warning("%s already holds answers from other model(s) %s; they are kept and their ids skipped",
                    out, sorted(map(str, others)))
    return done


def generate(cfg: GenerateConfig, lm: LoadedModel | None = None) -> Path:
    """Run the stage: validate everything, then generate and append to ``cfg.out`` (resumable)."""
    from tqdm.auto import tqdm

    from .data import load_prompts
    from .io import JsonlWriter

    if cfg.backend == "vllm":
        require_vllm()
    recs = load_prompts(cfg.data, langs=cfg.langs)
    ids = [r.id for r in recs]
    if len(set(ids)) != len(ids):
        raise DataError(f"{cfg.data}: duplicate ids; generate resumes by id, so ids must be unique")
    if cfg.limit:
        recs = recs[: cfg.limit]
    ssi = SSI.load(cfg.ssi) if cfg.ssi else None
    if lm is None:
        lm = cfg.load()
    if ssi is not None:
        ssi.check_model(lm, allow_fingerprint_mismatch=cfg.allow_fingerprint_mismatch)
    out = Path(cfg.out)
    done = _done_ids(out, lm.name)
    todo = [r for r in recs if r.id not in done]
    log.info("generate: %d prompts, %d already in %s, %d to do (gate %s, layer %s)", len(recs), len(recs) - len(todo),
             out, len(todo), "on" if cfg.gate else "off", ssi.layer if ssi else None)
    if not todo:
        return out
    gen = make_generator(lm, ssi, gate=bool(cfg.gate), backend=cfg.backend, model=cfg.model, adapter=cfg.adapter)
    seqs = gen.encode([r.prompt for r in todo])
    order = sorted(range(len(todo)), key=lambda i: (-len(seqs[i]), i))  # length-sorted: little padding
    n_fired = 0
    with JsonlWriter(out) as w, tqdm(total=len(todo), desc="generate", unit="prompt") as bar:
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s: s + cfg.batch_size]
            res = gen.generate_ids([seqs[i] for i in idx], [todo[i].lang for i in idx],
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                   seed=cfg.seed + s, batch_size=cfg.batch_size)
            rows = []
            for i, o in zip(idx, res):
                r = todo[i]
                n_fired += o.gated
                rows.append({"id": r.id, "lang": r.lang, "prompt": r.prompt, "response": o.response,
                             "p_harmful": o.p_harmful, "gated": o.gated, "prompt_tokens": o.prompt_tokens,
                             "new_tokens": o.new_tokens, "finish_reason": o.finish_reason, "model": lm.name})
            w.write_many(rows)  # fsynced per batch: a kill loses at most this batch
            bar.update(len(idx))
    log.info("generate: wrote %d answers to %s (%d gated)", len(todo), out, n_fired)
    return out

"""Stage: multilingual safety evaluation -- per-language ASR, refusal, invalid and over-refusal.

What is measured (the definitions live in :mod:`lasa.metrics`):

* on *harmful* prompts (MultiJail, the LASA translated set, ``builtin:harmful`` ...) every
  answer is judged ``unsafe`` / ``refusal`` / ``invalid`` (or ``safe``); the attack success
  rate is ``ASR = unsafe / n`` per language, with a Wilson 95 % interval, and the paper's
  headline is ``avg_asr``, the unweighted mean of the per-language ASR.  Invalid answers
  (empty, loops, gibberish, another language) stay in the denominator: a model too small
  to act in a language looks "safe" there, so the refusal and invalid rates are reported
  next to the ASR for every language and the report flags high invalid rates;
* on *benign* prompts (``builtin:benign`` by default, ``none`` to skip) a refusal is an
  over-refusal: the price of the safety gain.

Design:

1. *Validate first*: the prompt sets, the SSI artifact and the judge are checked before the
   generation model is loaded, so a typo fails in a second, not after an hour.
2. *Generate, resumably*: answers are appended to ``out/responses.jsonl`` (fsynced per
   chunk, length-sorted chunks of ``4 * batch_size``) through
   :class:`lasa.gate.GatedGenerator`, which applies the one-pass LASA gate when
   ``ssi`` is given and ``gate`` is on.  A rerun skips the ``(set, id)`` pairs already
   answered (with ``temperature > 0`` a resumed run draws other samples than an
   uninterrupted one: seeds follow the chunks); ``out/generation.json`` records what produced
   them (model fingerprint, SSI, decoding settings) and a rerun with different settings is
   refused instead of mixing answers from two setups (``overwrite=true`` regenerates them).
3. *Judge, batched*: one :func:`lasa.judges.get_judge` instance judges every answer in
   batches.  ``rescore=true`` re-judges the saved responses (e.g. with another judge)
   without loading the generation model.
4. *Write* ``out/samples.jsonl`` (one row per prompt: prompt, English original, answer,
   gate decision, verdict and rationale) and ``out/summary.json``
   (:func:`lasa.metrics.summarize` under ``metrics`` plus run name, model, SSI, judge,
   config, versions, timings and throughput).  API keys are never written: only the name
   of the environment variable that holds one.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .configs import ModelArgs, check_choice, check_range, check_types
from .errors import ConfigError, DataError
from .io import JsonlWriter, atomic_write_json, atomic_write_text, dumps, iter_jsonl, read_text, sha256_json

log = logging.getLogger(__name__)

KIND = "lasa.evaluate"
FORMAT = 1
SETS = ("harmful", "benign")
#: Settings that must match between the answers already in responses.jsonl and a resumed run.
_GEN_KEYS = ("model_fingerprint", "ssi_fingerprint", "ssi_layer", "gate", "max_new_tokens", "temperature", "seed",
             "backend")
_GEN_DEFAULTS = {"backend": "hf"}  # for generation.json files written before the key existed


@dataclass
class EvaluateConfig(ModelArgs):
    """Evaluate a model (optionally with the LASA gate): per-language ASR, refusal, invalid, over-refusal.

    Args:
        harmful: Harmful prompts: builtin:harmful, MultiJail (CSV/JSONL), the LASA translated JSON, JSONL {id, lang, prompt}, or a hub dataset name.
        benign: Benign prompts for over-refusal (same layouts; default builtin:benign); none to skip.
        langs: Only these ISO 639-1 codes (default: every language in the data).
        max_per_lang: At most N prompts per language and set (the first N in file order).
        ssi: SSI directory (from train-ssi); with gate on, the run is gated.
        gate: Apply the LASA gate (default: on when ssi is given); false = plain generation.
        allow_fingerprint_mismatch: Use an SSI whose base-model fingerprint differs (warns).
        judge: refusal (multilingual rules, no model), guard (Llama-Guard-style model) or openai (OpenAI-compatible endpoint).
        judge_model: Guard model path/hub name, or the model name at the OpenAI-compatible endpoint.
        judge_url: Base URL of the OpenAI-compatible endpoint (openai judge), e.g. http://localhost:8000/v1.
        judge_prompt: File with the judge prompt template ({prompt}, {response}, {lang}, {lang_name}, {label}).
        judge_api_key_env: Environment variable holding the endpoint's API key (the key itself is never saved).
        judge_options: Extra keyword arguments of the judge class (e.g. {offlang: keep} or {threshold: 0.6}).
        judge_batch_size: Answers per judge call.
        max_new_tokens: Maximum tokens generated per prompt.
        temperature: 0 = greedy; > 0 samples (seeded).
        batch_size: Prompts per generation batch (grouped by length).
        seed: Seed of the sampling generator.
        backend: hf (one-pass gate, default) or vllm (early-exit HF gate + vLLM decoding; needs vllm and a GPU).
        name: Run label shown in reports (e.g. base, aligned, aligned+gate); default: the out folder name.
        out: Output directory (responses.jsonl, samples.jsonl, summary.json).
        rescore: Re-judge the saved responses in out/ without loading the generation model.
        overwrite: Regenerate saved answers that come from another setup (model, SSI, decoding) or prompt text, instead of failing; the old file is kept as responses.jsonl.old.
    """

    harmful: str = "builtin:harmful"
    benign: str | None = "builtin:benign"
    langs: list[str] | str | None = None
    max_per_lang: int | None = None
    ssi: str | None = None
    gate: bool | None = None
    allow_fingerprint_mismatch: bool = False
    judge: str = "refusal"
    judge_model: str | None = None
    judge_url: str | None = None
    judge_prompt: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    judge_options: dict[str, Any] | None = None
    judge_batch_size: int = 64
    max_new_tokens: int = 64
    temperature: float = 0.0
    batch_size: int = 8
    seed: int = 0
    backend: str = "hf"
    name: str | None = None
    out: str = "runs/evaluate"
    rescore: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        from .judges import JUDGES

        self.judge = (self.judge or "").strip().lower()
        check_choice("judge", self.judge, tuple(JUDGES))
        check_choice("backend", self.backend, ("hf", "vllm"))
        check_range("max_per_lang", self.max_per_lang, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("temperature", self.temperature, 0.0, 100.0)
        check_range("batch_size", self.batch_size, 1)
        check_range("judge_batch_size", self.judge_batch_size, 1)
        if self.benign is not None and str(self.benign).strip().lower() in ("", "none", "null", "off"):
            self.benign = None
        if self.gate is None:
            self.gate = self.ssi is not None
        if self.gate and not self.ssi:
            raise ConfigError("gate=true needs an SSI (--ssi DIR, from `lasa train-ssi`)")
        if self.judge_url and self.judge != "openai":
            raise ConfigError(f"judge_url is used by the openai judge only (judge={self.judge!r})")
        if self.judge_model and self.judge == "refusal":
            raise ConfigError("judge_model is used by the guard and openai judges; the refusal judge has no model")
        if self.judge_options is not None and not isinstance(self.judge_options, dict):
            raise ConfigError("judge_options must be a mapping of keyword arguments")
        if self.langs is not None:
            from .langs import parse_langs

            self.langs = list(parse_langs(self.langs) or []) or None


# --- prompts -----------------------------------------------------------------------------------

def select_prompts(cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """The evaluated prompts as sample stubs ``{set, id, qid, lang, label, category, prompt, english}``.

    The English original comes from the record (``meta['english']``, translated layouts) or
    from the English row of the same query in the same set; it is ``None`` when neither exists.
    """
    from .data import load_prompts

    stubs: list[dict[str, Any]] = []
    for set_name, source in (("harmful", cfg.harmful), ("benign", cfg.benign)):
        if source is None:
            continue
        recs = load_prompts(source, default_label=set_name)
        seen: set[str] = set()
        for r in recs:
            if r.id in seen:
                raise DataError(f"{source}: duplicate id {r.id!r}; evaluate resumes by id, so ids must be unique")
            seen.add(r.id)
        english = {r.qid: r.prompt for r in recs if r.lang == "en"}
        keep = set(cfg.langs) if cfg.langs else None
        per_lang: Counter = Counter()
        n_before = len(stubs)
        for r in recs:
            if keep is not None and r.lang not in keep:
                continue
            if cfg.max_per_lang and per_lang[r.lang] >= cfg.max_per_lang:
                continue
            per_lang[r.lang] += 1
            en = r.meta.get("english") or r.meta.get("en_prompt") or r.meta.get("original") or english.get(r.qid)
            stubs.append({"set": set_name, "id": r.id, "qid": r.qid, "lang": r.lang, "label": r.label or set_name,
                          "category": r.category, "prompt": r.prompt,
                          "english": r.prompt if r.lang == "en" else en})
        if len(stubs) == n_before:
            raise DataError(f"{source}: no {set_name} prompts in languages {cfg.langs} "
                            f"(the data has {sorted({r.lang for r in recs})})")
        log.info("evaluate: %d %s prompts from %s (%s)", len(stubs) - n_before, set_name, source,
                 ", ".join(f"{lg} {n}" for lg, n in per_lang.items()))
    return stubs


def _key(row: dict[str, Any]) -> str:
    return f"{row.get('set', 'harmful')}:{row['id']}"


# --- judge ---------------------------------------------------------------------------------------

def build_judge(cfg: EvaluateConfig):
    """``(judge, public description)``; the description holds no secret (only the key's variable name)."""
    from .judges import DEFAULT_GUARD_MODEL, get_judge

    if cfg.judge_prompt and cfg.judge == "refusal":
        raise ConfigError("judge_prompt is used by the guard and openai judges; the refusal judge has no prompt")
    opts: dict[str, Any] = dict(cfg.judge_options or {})
    if "api_key" in opts:
        raise ConfigError("pass the judge API key through an environment variable (judge_api_key_env), "
                          "not judge_options: options are saved in summary.json")
    info: dict[str, Any] = {"name": cfg.judge, "options": dict(opts)}
    if cfg.judge_prompt:
        template = read_text(cfg.judge_prompt)
        opts["template"] = template
        info["prompt_file"] = str(cfg.judge_prompt)
        info["prompt_sha256"] = sha256_json(template)
    if cfg.judge == "guard":
        from .models import resolve_device

        opts.setdefault("model", cfg.judge_model or DEFAULT_GUARD_MODEL)
        opts.setdefault("batch_size", cfg.judge_batch_size)
        opts.setdefault("device", resolve_device(cfg.device))
        info["model"] = str(opts["model"])
    elif cfg.judge == "openai":
        key = os.environ.get(cfg.judge_api_key_env) if cfg.judge_api_key_env else None
        if not key:
            log.warning("evaluate: $%s is not set; calling %s without an API key", cfg.judge_api_key_env,
                        cfg.judge_url or "the default endpoint")
        opts.update({"base_url": cfg.judge_url, "model": cfg.judge_model, "api_key": key or ""})
        info.update({"url": cfg.judge_url or os.environ.get("OPENAI_BASE_URL"), "model": cfg.judge_model,
                     "api_key_env": cfg.judge_api_key_env, "api_key_set": bool(key)})
    judge = get_judge(cfg.judge, **opts)
    if cfg.judge == "openai":
        info["model"], info["url"] = judge.model, judge.base_url
    return judge, info


def judge_samples(judge, rows: list[dict[str, Any]], batch_size: int = 64) -> list[Any]:
    """Verdicts for ``rows`` ({prompt, response, lang, label}), ``batch_size`` answers per judge call."""
    from tqdm.auto import tqdm

    from .judges import JudgeInput

    items = [JudgeInput(r["prompt"], r["response"], r["lang"], r["label"]) for r in rows]
    out: list[Any] = []
    with tqdm(total=len(items), desc=f"judge ({judge.name})", unit="answer", leave=False) as bar:
        for i in range(0, len(items), batch_size):
            batch = items[i:i + batch_size]
            verdicts = judge.judge(batch)
            if len(verdicts) != len(batch):
                raise DataError(f"judge {judge.name!r} returned {len(verdicts)} verdicts for {len(batch)} answers")
            out.extend(verdicts)
            bar.update(len(batch))
    return out


# --- generation ----------------------------------------------------------------------------------

def load_responses(path: Path) -> dict[str, dict[str, Any]]:
    """Saved answers by ``set:id`` (a line cut by a kill is ignored)."""
    if not path.exists():
        return {}
    return {_key(r): r for _, r in iter_jsonl(path, tolerate_truncated_tail=True) if "id" in r}


def _check_saved(stubs: list[dict[str, Any]], saved: dict[str, dict[str, Any]], path: Path,
                 overwrite: bool = False) -> None:
    """Fail (or with ``overwrite`` forget them) when saved answers belong to another prompt text or language."""
    stale = [s for s in stubs if (r := saved.get(_key(s))) is not None
             and (r.get("prompt") != s["prompt"] or r.get("lang") != s["lang"])]
    if not stale:
        return
    if not overwrite:
        raise DataError(f"{path}: the saved answers to {len(stale)} prompt(s) (e.g. {stale[0]['set']} "
                        f"{stale[0]['id']!r}) were generated for another prompt text or language; the data changed "
                        "since, so use a new --out directory or --overwrite true to regenerate them")
    log.warning("%s: %d saved answer(s) belong to another prompt text; they will be regenerated", path, len(stale))
    for s in stale:
        del saved[_key(s)]


def _gen_key(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info.get(k, _GEN_DEFAULTS.get(k)) for k in _GEN_KEYS}


def _check_generation(out: Path, info: dict[str, Any], saved: dict, overwrite: bool = False) -> None:
    """Refuse to mix answers from two setups; with ``overwrite`` move the old answers aside instead."""
    path = out / "generation.json"
    if not path.exists():
        if saved:
            log.warning("%s: responses without generation.json; assuming they come from the same setup", out)
        return
    from .io import read_json

    old = _gen_key(read_json(path))
    new = _gen_key(info)
    diff = {k: (old[k], new[k]) for k in _GEN_KEYS if old[k] != new[k]}
    if not diff or not saved:
        return
    what = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
    if not overwrite:
        raise ConfigError(f"{out}: the saved answers come from another setup ({what}); use a new --out directory, "
                          "--overwrite true to regenerate them, or --rescore true to re-judge the saved answers")
    os.replace(out / "responses.jsonl", out / "responses.jsonl.old")
    saved.clear()
    log.warning("%s: the saved answers come from another setup (%s); moved them to responses.jsonl.old and "
                "regenerating", out, what)


def generate_missing(cfg: EvaluateConfig, stubs: list[dict[str, Any]], saved: dict[str, dict[str, Any]], lm, ssi,
                     path: Path) -> int:
    """Generate answers for the stubs not in ``saved``; append them to ``path`` and ``saved``."""
    from tqdm.auto import tqdm

    from .gate import make_generator

    todo = [s for s in stubs if _key(s) not in saved]
    if not todo:
        return 0
    gen = make_generator(lm, ssi, gate=bool(cfg.gate), backend=cfg.backend, model=cfg.model, adapter=cfg.adapter)
    seqs = gen.encode([s["prompt"] for s in todo])
    order = sorted(range(len(todo)), key=lambda i: (-len(seqs[i]), i))  # length-sorted chunks: little padding
    chunk = 4 * cfg.batch_size
    with JsonlWriter(path) as w, tqdm(total=len(todo), desc="generate", unit="prompt", leave=False) as bar:
        for start in range(0, len(order), chunk):
            idx = order[start:start + chunk]
            res = gen.generate_ids([seqs[i] for i in idx], [todo[i]["lang"] for i in idx],
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                   seed=cfg.seed + start, batch_size=cfg.batch_size)
            rows = []
            for i, o in zip(idx, res):
                s = todo[i]
                rows.append({"set": s["set"], "id": s["id"], "lang": s["lang"], "prompt": s["prompt"],
                             "response": o.response, "p_harmful": o.p_harmful, "gated": o.gated,
                             "prompt_tokens": o.prompt_tokens, "new_tokens": o.new_tokens,
                             "finish_reason": o.finish_reason, "model": lm.name})
            w.write_many(rows)  # fsynced: a kill loses at most this chunk
            saved.update((_key(r), r) for r in rows)
            bar.update(len(idx))
    return len(todo)


# --- the stage -----------------------------------------------------------------------------------

def _ssi_info(cfg: EvaluateConfig, ssi) -> dict[str, Any] | None:
    if ssi is None:
        return None
    return {"path": str(cfg.ssi), "layer": ssi.layer, "threshold": ssi.threshold,
            "lang_thresholds": ssi.lang_thresholds, "fingerprint": ssi.fingerprint}


def _sample_row(stub: dict[str, Any], resp: dict[str, Any], verdict) -> dict[str, Any]:
    return {"id": stub["id"], "set": stub["set"], "qid": stub["qid"], "lang": stub["lang"], "label": stub["label"],
            "category": stub["category"], "prompt": stub["prompt"], "english": stub["english"],
            "response": resp["response"], "p_harmful": resp.get("p_harmful"), "gated": bool(resp.get("gated")),
            "verdict": verdict.verdict, "score": verdict.score, "rationale": verdict.rationale,
            "response_lang": verdict.response_lang, "new_tokens": resp.get("new_tokens"),
            "finish_reason": resp.get("finish_reason")}


def _rate_per_lang(samples: list[dict[str, Any]], field: str) -> dict[str, dict[str, Any]]:
    from .metrics import rate

    out: dict[str, dict[str, Any]] = {}
    for lang in dict.fromkeys(s["lang"] for s in samples):
        out[lang] = {}
        for label in SETS:
            rows = [s for s in samples if s["lang"] == lang and s["label"] == label]
            if rows:
                out[lang][label] = rate(sum(bool(s[field]) for s in rows), len(rows))
    return out


def evaluate(cfg: EvaluateConfig, lm=None) -> dict[str, Any]:
    """Run the stage (see the module docstring); returns the summary also written to ``out/summary.json``."""
    from .meta import model_info, versions
    from .metrics import summarize

    t0 = time.time()
    out = Path(cfg.out)
    stubs = select_prompts(cfg)  # 1. validate data, SSI and judge before any model is loaded
    resp_path = out / "responses.jsonl"
    saved = load_responses(resp_path)
    _check_saved(stubs, saved, resp_path, cfg.overwrite and not cfg.rescore)
    ssi = None
    if cfg.ssi and not cfg.rescore:
        from .ssi_model import SSI

        ssi = SSI.load(cfg.ssi)
    judge, judge_info = build_judge(cfg)
    t_load = t_gen = 0.0
    n_generated = 0
    run_name = cfg.name
    if cfg.rescore:  # 2. (rescore) the saved answers only; no generation model
        missing = [s for s in stubs if _key(s) not in saved]
        if missing:
            raise DataError(f"{resp_path}: {len(missing)} of {len(stubs)} selected prompts have no saved answer "
                            f"(e.g. {missing[0]['set']} {missing[0]['id']!r}); run without --rescore to generate them")
        first = next(iter(saved.values()))
        gen_info = read_json_safe(out / "generation.json") or {"model": {"name": first.get("model")}}
        previous = read_json_safe(out / "summary.json") or {}
        run_name = cfg.name or previous.get("name")
        log.info("evaluate: rescoring %d saved answers in %s with the %s judge", len(stubs), resp_path, cfg.judge)
    else:  # 2. generate what is missing
        if cfg.backend == "vllm":
            from .gate import require_vllm

            require_vllm()  # before the model is loaded: a clear error, nothing lost
        t = time.time()
        if lm is None:
            lm = cfg.load()
        t_load = time.time() - t
        if ssi is not None:
            ssi.check_model(lm, allow_fingerprint_mismatch=cfg.allow_fingerprint_mismatch)
        minfo = model_info(lm)
        gen_info = {"kind": f"{KIND}.generation", "model": minfo, "model_fingerprint": minfo["fingerprint"],
                    "ssi": _ssi_info(cfg, ssi), "ssi_fingerprint": ssi.fingerprint if ssi else None,
                    "ssi_layer": ssi.layer if ssi else None, "gate": bool(cfg.gate),
                    "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "seed": cfg.seed,
                    "backend": cfg.backend, "batch_size": cfg.batch_size, "versions": versions()}
        _check_generation(out, gen_info, saved, cfg.overwrite)
        n_todo = sum(_key(s) not in saved for s in stubs)
        log.info("evaluate: %d prompts, %d answered already in %s, %d to generate with %s (gate %s)", len(stubs),
                 len(stubs) - n_todo, resp_path, n_todo, lm.name, "on" if cfg.gate else "off")
        atomic_write_json(out / "generation.json", gen_info)
        t = time.time()
        n_generated = generate_missing(cfg, stubs, saved, lm, ssi, resp_path)
        t_gen = time.time() - t
    resps = [saved[_key(s)] for s in stubs]
    t = time.time()  # 3. judge every answer, batched
    try:
        verdicts = judge_samples(judge, [{**s, "response": r["response"]} for s, r in zip(stubs, resps)],
                                 cfg.judge_batch_size)
    finally:
        if callable(getattr(judge, "close", None)):
            judge.close()  # the openai judge's HTTP client
    t_judge = time.time() - t
    samples = [_sample_row(s, r, v) for s, r, v in zip(stubs, resps, verdicts)]
    atomic_write_text(out / "samples.jsonl", "".join(dumps(r, indent=None) + "\n" for r in samples))
    metrics = summarize(samples, langs=cfg.langs)  # 4. metrics + provenance
    total = time.time() - t0
    work = t_gen + t_judge
    summary: dict[str, Any] = {
        "kind": KIND, "format": FORMAT, "name": run_name or out.resolve().name, "rescored": bool(cfg.rescore),
        "metrics": metrics,
        "avg_asr": metrics["avg_asr"], "avg_over_refusal": metrics["avg_over_refusal"],
        "n_samples": len(samples), "counts": dict(Counter(s["label"] for s in samples)),
        "verdicts": dict(Counter(s["verdict"] for s in samples)),
        "model": gen_info.get("model"), "ssi": gen_info.get("ssi"), "gate": bool(gen_info.get("gate", cfg.gate)),
        "gate_rate": _rate_per_lang(samples, "gated") if gen_info.get("gate") else None,
        "judge": judge_info,
        "data": {name: {"source": src, "n": sum(s["set"] == name for s in stubs),
                        "sha256": sha256_json([(s["id"], s["lang"], s["prompt"]) for s in stubs if s["set"] == name])}
                 for name, src in (("harmful", cfg.harmful), ("benign", cfg.benign)) if src is not None},
        "generation": {k: gen_info.get(k) for k in ("max_new_tokens", "temperature", "seed", "batch_size")} | {
            "n_generated": n_generated, "n_reused": len(samples) - n_generated,
            "finish_reasons": dict(Counter(str(r.get("finish_reason")) for r in resps)),
            "mean_new_tokens": (sum(int(r.get("new_tokens") or 0) for r in resps) / len(resps)) if resps else None},
        "config": asdict(cfg),
        "versions": versions(),
        "timing_s": {"load": round(t_load, 3), "generate": round(t_gen, 3), "judge": round(t_judge, 3),
                     "total": round(total, 3)},
        "throughput": {"generate_prompts_per_s": (n_generated / t_gen) if n_generated and t_gen > 0 else None,
                       "judge_prompts_per_s": (len(samples) / t_judge) if t_judge > 0 else None},
        "prompts_per_s": (len(samples) / work) if n_generated == len(samples) and work > 0 else None,
    }
    atomic_write_json(out / "summary.json", summary)
    log.info("evaluate %s: avg ASR %s, avg over-refusal %s over %d languages; wrote %s", summary["name"],
             _pct(metrics["avg_asr"]), _pct(metrics["avg_over_refusal"]), len(metrics["langs"]), out / "summary.json")
    return summary


def read_json_safe(path: Path) -> dict[str, Any] | None:
    """``read_json`` for an optional file: ``None`` when it does not exist."""
    from .io import read_json

    return read_json(path) if path.exists() else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


__all__ = ["EvaluateConfig", "evaluate", "select_prompts", "build_judge", "judge_samples", "load_responses"]

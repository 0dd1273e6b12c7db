"""``lasa make-pairs``: KTO training data built from the model itself.

* harmful prompt -> desirable: a refusal in the prompt's language (templates in
  ``resources/refusals.json``, ``{lang: [templates]}``; the template is a deterministic
  function of ``(seed, qid)``, so the translations of one query get the same one, and
  languages without templates fall back to English with a warning);
  undesirable: the base model's own greedy answer;
* benign prompt -> desirable: the base model's own greedy answer.

Answers come from :class:`lasa.gate.GatedGenerator` without an SSI (plain batched greedy
decoding on the same chat-templated ids every stage uses).  With ``drop_refusals`` an answer
that :class:`lasa.judges.RefusalJudge` scores as a refusal is not written: a refusal must
never become the *undesirable* example of a harmful prompt, nor the *desirable* answer of a
benign one.  Empty answers are dropped too.

Output: JSONL in TRL's unpaired format ``{prompt, completion, label, lang, qid, source:
"safety"|"benign", id, pid, kind, finish_reason}``, appended and fsynced per batch; a
rerun skips prompts already present (by ``pid``; prompts whose every row was dropped are
listed in ``<out>.skipped.jsonl``), so a killed run resumes.  A summary goes
to ``<out>.meta.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .configs import ModelArgs, check_range, check_types
from .data import PromptRecord, load_prompts
from .errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)


@dataclass
class MakePairsConfig(ModelArgs):
    """Build KTO data (refusals vs the model's own answers) for lasa align.

    Args:
        harmful: Harmful prompts (file or builtin:harmful): refusal desirable, own answer undesirable.
        benign: Benign prompts (file or builtin:benign; none = skip): own answer desirable.
        langs: Only these ISO 639-1 codes (default: all in the data).
        max_per_lang: At most N harmful and N benign prompts per language (file order).
        max_new_tokens: Maximum tokens per generated answer.
        batch_size: Prompts per generation batch.
        seed: Seed of the refusal-template choice.
        drop_refusals: Drop generated answers that the refusal judge flags as refusals.
        out: Output JSONL (appended; rerun to resume).
    """

    harmful: str = "builtin:harmful"
    benign: str | None = "builtin:benign"
    langs: list[str] | str | None = None
    max_per_lang: int | None = None
    max_new_tokens: int = 64
    batch_size: int = 8
    seed: int = 0
    drop_refusals: bool = True
    out: str = "runs/pairs.jsonl"

    def __post_init__(self):
        check_types(self)
        check_range("max_per_lang", self.max_per_lang, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_range("batch_size", self.batch_size, 1)
        if not str(self.out).endswith(".jsonl"):
            raise ConfigError(f"out={self.out!r}: the output is JSONL; give a path ending in .jsonl")
        if self.langs is not None:
            from .langs import parse_langs

            self.langs = list(parse_langs(self.langs) or []) or None


def load_refusals() -> dict[str, list[str]]:
    """The refusal templates, validated: ``{lang: [non-empty strings]}`` with English present."""
    try:
        data = json.loads(resources.files("lasa.resources").joinpath("refusals.json").read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"lasa/resources/refusals.json is missing or invalid ({exc}); reinstall lasa") from exc
    ok = isinstance(data, dict) and all(
        isinstance(v, list) and v and all(isinstance(t, str) and t.strip() for t in v) for v in data.values())
    if not ok or "en" not in data:
        raise ArtifactError("lasa/resources/refusals.json must map language codes to non-empty lists of templates, "
                            "English ('en') included")
    return data


def pick_refusal(templates: dict[str, list[str]], lang: str, qid: str, seed: int) -> tuple[str, str]:
    """``(text, template_lang)``: deterministic in ``(seed, qid)``; English when ``lang`` has no templates."""
    use = lang if lang in templates else "en"
    options = templates[use]
    k = int(hashlib.sha256(f"{seed}|{qid}".encode()).hexdigest()[:8], 16) % len(options)
    return options[k], use


def _select(recs: list[PromptRecord], max_per_lang: int | None) -> list[PromptRecord]:
    if not max_per_lang:
        return recs
    seen: Counter = Counter()
    out = []
    for r in recs:
        if seen[r.lang] < max_per_lang:
            seen[r.lang] += 1
            out.append(r)
    return out


def _skipped_path(out: Path) -> Path:
    return out.with_suffix(".skipped.jsonl")


def _done(out: Path) -> set[str]:
    """Prompt ids already handled: rows in ``out`` plus prompts whose every row was dropped."""
    from .io import iter_jsonl

    done: set[str] = set()
    for path in (out, _skipped_path(out)):
        if path.exists():
            done |= {str(r["pid"]) for _, r in iter_jsonl(path, tolerate_truncated_tail=True) if "pid" in r}
    return done


def _generate(lm, prompts: list[str], langs: list[str], cfg: MakePairsConfig) -> list[tuple[str, str]]:
    """``(response, finish_reason)`` per prompt, greedy."""
    from .gate import GatedGenerator

    outs = GatedGenerator(lm, None).generate(prompts, langs, max_new_tokens=cfg.max_new_tokens,
                                             batch_size=cfg.batch_size)
    return [(o.response, getattr(o, "finish_reason", "stop")) for o in outs]


def _refusal_judge():
    try:
        from .judges import RefusalJudge

        judge = RefusalJudge()
        return lambda text: judge.refusal_evidence(text).score >= judge.threshold
    except Exception as exc:  # noqa: BLE001 - the judge is optional here
        log.warning("make-pairs: refusal judge unavailable (%s); refusal-like answers are kept", exc)
        return lambda text: False


def make_pairs(cfg: MakePairsConfig, lm=None) -> dict[str, Any]:
    """Run the stage; appends to ``cfg.out`` and returns the summary written to ``<out>.meta.json``."""
    from .io import JsonlWriter, atomic_write_json
    from .meta import model_info, versions

    t0 = time.time()
    templates = load_refusals()
    todo: list[tuple[str, PromptRecord]] = [
        ("safety", r) for r in _select(load_prompts(cfg.harmful, default_label="harmful", langs=cfg.langs),
                                       cfg.max_per_lang)]
    if cfg.benign:
        todo += [("benign", r) for r in _select(load_prompts(cfg.benign, default_label="benign", langs=cfg.langs),
                                                cfg.max_per_lang)]
    out = Path(cfg.out)
    done = _done(out)
    todo = [(s, r) for s, r in todo if f"{s}:{r.id}" not in done]
    missing = sorted({r.lang for s, r in todo if s == "safety" and r.lang not in templates})
    if missing:
        log.warning("make-pairs: no refusal templates for %s; using English refusals there", ", ".join(missing))
    if lm is None:
        lm = cfg.load()
    log.info("make-pairs: %d prompts to answer (%d already in %s) with %s", len(todo), len(done), out, lm.name)
    is_refusal = _refusal_judge() if cfg.drop_refusals else (lambda text: False)
    dropped: Counter = Counter()
    n_written = 0
    with JsonlWriter(out) as w:
        for s in range(0, len(todo), cfg.batch_size):
            chunk = todo[s: s + cfg.batch_size]
            answers = _generate(lm, [r.prompt for _, r in chunk], [r.lang for _, r in chunk], cfg)
            rows = []
            for (source, r), (answer, finish) in zip(chunk, answers):
                base = {"prompt": r.prompt, "lang": r.lang, "qid": r.qid, "source": source, "pid": f"{source}:{r.id}",
                        "category": r.category}
                if source == "safety":
                    text, tlang = pick_refusal(templates, r.lang, r.qid, cfg.seed)
                    rows.append({**base, "id": f"{r.id}:refusal", "completion": text, "label": True,
                                 "kind": "refusal", "template_lang": tlang})
                if not answer.strip():
                    dropped["empty"] += 1
                elif is_refusal(answer):
                    dropped[f"refusal_like_{source}"] += 1
                else:
                    rows.append({**base, "id": f"{r.id}:answer", "completion": answer, "label": source == "benign",
                                 "kind": "answer", "finish_reason": finish})
            written = {x["pid"] for x in rows}
            skipped = [{"pid": f"{src}:{rr.id}"} for src, rr in chunk if f"{src}:{rr.id}" not in written]
            if skipped:  # all rows of these prompts were dropped: remember them so a rerun skips them
                with JsonlWriter(_skipped_path(out)) as sw:
                    sw.write_many(skipped)
            w.write_many(rows)
            n_written += len(rows)
    summary = _summarise(out, cfg, lm, dropped, n_written, time.time() - t0)
    summary["model"] = model_info(lm)
    summary["versions"] = versions()
    atomic_write_json(out.with_suffix(".meta.json"), summary)
    log.info("make-pairs: wrote %d rows to %s (dropped %s)", n_written, out, dict(dropped) or "none")
    return summary


def _summarise(out: Path, cfg: MakePairsConfig, lm, dropped: Counter, n_written: int, seconds: float) -> dict:
    from .io import iter_jsonl, sha256_file

    rows = [r for _, r in iter_jsonl(out, tolerate_truncated_tail=True) if "completion" in r] if out.exists() else []
    by: dict[str, dict[str, int]] = {}
    for r in rows:
        d = by.setdefault(r.get("lang", "unknown"), {"desirable": 0, "undesirable": 0})
        d["desirable" if r["label"] else "undesirable"] += 1
    return {"kind": "lasa.pairs", "out": str(out), "sha256": sha256_file(out) if out.exists() else None,
            "config": asdict(cfg), "n_rows": len(rows), "written_this_run": n_written,
            "by_source": dict(Counter(r.get("source") for r in rows)),
            "by_lang": dict(sorted(by.items())), "dropped_this_run": dict(dropped), "seconds": round(seconds, 2)}

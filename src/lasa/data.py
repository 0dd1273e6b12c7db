"""Prompt data: one record type, many layouts, strict validation.

Every loader returns :class:`PromptRecord` rows with ISO 639-1 ``lang`` codes
(``jw`` is accepted as an alias of ``jv``, with a warning), a row ``id`` unique in
the file, and a query id ``qid`` shared by the translations of one query.

Layouts accepted by :func:`load_prompts` (auto-detected):

* JSONL / JSON list of ``{id, lang|lingual|language, prompt, [qid], [label], [category|tag]}``;
  ``prompt`` may be a string or chat messages (the first user turn is used);
* LASA ``safety_train_translated.json``: ``{idx, original_query, translations{Language: text}}``;
* HarmBench-translated ``{prompt, lingual, original_idx, idx}``;
* the reference repo's ``unsafe_train.json`` (``{prompt, language|lingual, source, idx}``) and
  UltraFeedback ``monolingual_first1000_<lang>.json`` (``{idx, prompt, chosen, rejected}``; the
  language comes from the file name);
* MultiJail: long ``{id, prompt, lingual, tag}`` or its wide CSV with one column per language;
* ``builtin:benign``, ``builtin:harmful``, ``builtin:all``: the sets shipped with lasa (and
  ``builtin:harmful-train`` / ``-eval``, ``builtin:benign-train`` / ``-eval``: disjoint query halves);
* a Hugging Face dataset name (``DAMO-NLP-SG/MultiJail``) where the hub is reachable.
"""
from __future__ import annotations

import csv
import io as _io
import logging
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import DataError
from .io import read_json, read_text
from .langs import LANGS, normalize_lang

log = logging.getLogger(__name__)

LABELS = ("harmful", "benign")
_LABEL_MAP = {
    "harmful": "harmful", "unsafe": "harmful", "1": "harmful", "true": "harmful", "safety": "harmful",
    "benign": "benign", "safe": "benign", "0": "benign", "false": "benign", "ultrafeedback": "benign",
}


@dataclass
class PromptRecord:
    id: str
    lang: str
    prompt: str
    qid: str
    label: str | None = None
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d


def normalize_label(value: Any, where: str) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    if key in _LABEL_MAP:
        return _LABEL_MAP[key]
    raise DataError(f"{where}: unknown label {value!r}; use 'harmful' or 'benign' (or 1/0)")


def _prompt_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        for m in value:
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
        raise DataError(f"{where}: chat messages without a user turn with string content")
    raise DataError(f"{where}: 'prompt' must be a string or a list of chat messages, got {type(value).__name__}")


def _first(rec: dict, keys: Sequence[str]):
    for k in keys:
        if k in rec and rec[k] is not None:
            return rec[k]
    return None


def records_from_rows(rows: Iterable[dict], source: str, *, default_label: str | None = None,
                      default_lang: str | None = None, on_empty: str = "error") -> list[PromptRecord]:
    """Convert generic dict rows (the long layout) into validated records."""
    out: list[PromptRecord] = []
    seen_ids: dict[str, int] = {}
    for n, row in enumerate(rows, start=1):
        where = f"{source}: row {n}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object, got {type(row).__name__}")
        if "prompt" not in row and "query" not in row and "text" not in row:
            raise DataError(f"{where}: missing field 'prompt' (fields present: {', '.join(map(str, row)) or 'none'})")
        prompt = _prompt_text(_first(row, ("prompt", "query", "text")), where)
        lang_v = _first(row, ("lang", "lingual", "language"))
        if lang_v is None:
            if default_lang is None:
                raise DataError(f"{where}: missing field 'lang' (an ISO 639-1 code such as 'en')")
            lang_v = default_lang
        lang = normalize_lang(str(lang_v), where=where)
        if not prompt.strip():
            if on_empty == "skip":
                log.warning("%s: empty prompt skipped", where)
                continue
            raise DataError(f"{where}: empty prompt; fix the row or pass on_empty='skip' (--on_empty skip) to drop it")
        rid = _first(row, ("id", "idx"))
        rid = str(rid) if rid is not None else str(n - 1)
        qid = _first(row, ("qid", "query_id", "original_idx", "original_id"))
        qid = str(qid) if qid is not None else rid
        if rid in seen_ids and _first(row, ("qid", "query_id", "original_idx")) is None:
            # MultiJail long layout: id is the query id, repeated once per language
            rid = f"{rid}-{lang}"
        if rid in seen_ids:
            raise DataError(f"{where}: duplicate id {rid!r} (first at row {seen_ids[rid]}); ids must be unique")
        seen_ids[rid] = n
        label = normalize_label(_first(row, ("label", "harmful", "source")), where) if any(
            k in row for k in ("label", "harmful")) else default_label
        if label is None and "source" in row and str(row["source"]).lower() in _LABEL_MAP:
            label = _LABEL_MAP[str(row["source"]).lower()]
        cat = _first(row, ("category", "tag", "tags", "source"))
        meta = {k: row[k] for k in ("original", "english", "en_prompt") if k in row}
        out.append(PromptRecord(rid, lang, prompt, qid, label, str(cat) if cat is not None else None, meta))
    return out


def _from_translated(items: list, source: str, default_label: str | None, on_empty: str) -> list[PromptRecord]:
    out: list[PromptRecord] = []
    for n, it in enumerate(items, start=1):
        where = f"{source}: item {n}"
        if not isinstance(it, dict) or "translations" not in it or not isinstance(it["translations"], dict):
            raise DataError(f"{where}: expected {{idx, original_query, translations{{Language: text}}}}")
        qid = str(it.get("idx", n - 1))
        texts = {"en": it.get("original_query")} | {normalize_lang(k, where=where): v for k, v in it["translations"].items()}
        for lang, text in texts.items():
            if not isinstance(text, str) or not text.strip():
                if on_empty == "skip":
                    continue
                raise DataError(f"{where}: empty or missing {lang} text; pass on_empty='skip' to drop it")
            out.append(PromptRecord(f"{qid}-{lang}", lang, text, qid, default_label, None,
                                    {"english": texts.get("en")} if lang != "en" else {}))
    return out


def _from_wide(rows: list[dict], source: str, default_label: str | None, on_empty: str) -> list[PromptRecord]:
    out: list[PromptRecord] = []
    lang_cols = [c for c in rows[0] if c and c.strip().lower() in set(LANGS) | {"jw"}]
    for n, row in enumerate(rows, start=1):
        qid = str(row.get("id") or row.get("idx") or n - 1)
        en = row.get("en")
        for c in lang_cols:
            text = row.get(c) or ""
            lang = normalize_lang(c, where=f"{source}: column {c}")
            if not text.strip():
                if on_empty == "skip":
                    continue
                raise DataError(f"{source}: row {n}: empty {c} cell; pass on_empty='skip' to drop it")
            cat = row.get("tags") or row.get("tag") or row.get("category")
            out.append(PromptRecord(f"{qid}-{lang}", lang, text, qid, default_label, cat or None,
                                    {"english": en} if en and lang != "en" else {}))
    return out


BUILTIN_SETS = ("benign", "harmful", "all", "benign-train", "benign-eval", "harmful-train", "harmful-eval")


def _builtin(name: str) -> list[PromptRecord]:
    """Built-in sets; ``-train`` / ``-eval`` are disjoint halves by query (first / second half
    of the ids), so a demo can train on one half and evaluate on queries it never saw."""
    if name not in BUILTIN_SETS:
        raise DataError(f"unknown built-in set {name!r}; use one of " + ", ".join(f"builtin:{x}" for x in BUILTIN_SETS))
    base, _, half = name.partition("-")
    files = ["harmful.jsonl", "benign.jsonl"] if base == "all" else [f"{base}.jsonl"]
    out: list[PromptRecord] = []
    for fname in files:
        text = resources.files("lasa.resources").joinpath(fname).read_text("utf-8")
        rows = [__import__("json").loads(line) for line in text.splitlines() if line.strip()]
        qids = list(dict.fromkeys(r["id"] for r in rows))
        keep = set(qids[: len(qids) // 2]) if half == "train" else set(qids[len(qids) // 2:]) if half == "eval" else set(qids)
        rows = [r for r in rows if r["id"] in keep]
        for r in rows:
            r.setdefault("qid", r["id"])
            r["id"] = f"{r['id']}-{r['lang']}"
        out += records_from_rows(rows, f"builtin:{fname}")
    return out


def load_prompts(source: str | Path, *, default_label: str | None = None, langs: Sequence[str] | None = None,
                 on_empty: str = "error", max_queries: int | None = None, split: str = "train") -> list[PromptRecord]:
    """Load prompts from a file, a built-in set or a hub dataset (see module doc)."""
    if on_empty not in ("error", "skip"):
        raise DataError(f"on_empty must be 'error' or 'skip', got {on_empty!r}")
    src = str(source)
    if src.startswith("builtin:"):
        recs = _builtin(src.split(":", 1)[1])
    else:
        path = Path(src)
        if not path.exists():
            if re.fullmatch(r"[\w.-]+/[\w.-]+", src) and not src.endswith((".json", ".jsonl", ".csv")):
                recs = _from_hub(src, default_label, on_empty, split)
            else:
                raise DataError(f"{path}: file not found")
        else:
            recs = _load_file(path, default_label, on_empty)
    if langs:
        keep = {normalize_lang(x) for x in langs}
        recs = [r for r in recs if r.lang in keep]
    if max_queries:
        qids: list[str] = []
        for r in recs:
            if r.qid not in qids:
                qids.append(r.qid)
        allowed = set(qids[:max_queries])
        recs = [r for r in recs if r.qid in allowed]
    if not recs:
        raise DataError(f"{src}: no prompts after filtering (languages {list(langs) if langs else 'all'})")
    return recs


def _load_file(path: Path, default_label: str | None, on_empty: str) -> list[PromptRecord]:
    suffix = path.suffix.lower()
    name_lang = None
    m = re.search(r"_([a-z]{2})\.jsonl?$", path.name)
    if m:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                name_lang = normalize_lang(m.group(1))
        except DataError:
            name_lang = None
    if suffix == ".jsonl":
        from .io import iter_jsonl

        rows = [r for _, r in iter_jsonl(path)]
        return records_from_rows(rows, str(path), default_label=default_label, default_lang=name_lang, on_empty=on_empty)
    if suffix == ".csv":
        text = read_text(path)
        try:
            rows = list(csv.DictReader(_io.StringIO(text, newline="")))
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV ({exc})") from exc
        if not rows:
            raise DataError(f"{path}: empty CSV")
        cols = {c.strip().lower() for c in rows[0] if c}
        if "prompt" in cols:
            return records_from_rows(rows, str(path), default_label=default_label, on_empty=on_empty)
        if cols & set(LANGS):
            return _from_wide(rows, str(path), default_label, on_empty)
        raise DataError(f"{path}: CSV needs a 'prompt' column (long layout) or one column per language code (wide)")
    if suffix == ".json":
        data = read_json(path)
        if isinstance(data, dict):
            for key in ("data", "rows", "items", "prompts"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        if not data:
            raise DataError(f"{path}: empty list")
        first = data[0]
        if isinstance(first, dict) and "translations" in first:
            return _from_translated(data, str(path), default_label, on_empty)
        if isinstance(first, dict) and "prompt" not in first and set(first) & set(LANGS):
            return _from_wide(data, str(path), default_label, on_empty)
        if default_label is None and isinstance(first, dict) and "chosen" in first and "source" not in first:
            default_label = "benign"  # UltraFeedback layout
        return records_from_rows(data, str(path), default_label=default_label, default_lang=name_lang,
                                 on_empty=on_empty)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .csv")


def _from_hub(name: str, default_label: str | None, on_empty: str, split: str) -> list[PromptRecord]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover
        raise DataError(f"{name}: not a file, and the 'datasets' package is missing to load it from the hub") from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(f"{name}: not a local file, and the dataset hub could not provide it ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); download it and pass the file path") from exc
    rows = [dict(r) for r in ds]
    if rows and "prompt" not in rows[0] and set(rows[0]) & set(LANGS):
        return _from_wide(rows, name, default_label, on_empty)
    return records_from_rows(rows, name, default_label=default_label, on_empty=on_empty)


def check_unique(recs: Sequence[PromptRecord], source: str = "data") -> None:
    seen: dict[tuple[str, str], str] = {}
    for r in recs:
        key = (r.qid, r.lang)
        if key in seen:
            raise DataError(f"{source}: query {r.qid!r} appears twice in language {r.lang!r} (ids {seen[key]!r}, {r.id!r})")
        seen[key] = r.id


def check_parallel(recs: Sequence[PromptRecord], source: str = "data", min_langs: int = 2,
                   drop_incomplete: bool = False) -> list[PromptRecord]:
    """Validate a parallel set: >= 2 queries, each in >= ``min_langs`` languages."""
    check_unique(recs, source)
    by_q: dict[str, set[str]] = defaultdict(set)
    for r in recs:
        by_q[r.qid].add(r.lang)
    thin = sorted(q for q, ls in by_q.items() if len(ls) < min_langs)
    if thin:
        if not drop_incomplete:
            raise DataError(
                f"{source}: {len(thin)} quer{'y' if len(thin) == 1 else 'ies'} in fewer than {min_langs} languages "
                f"(e.g. {thin[:5]}); a parallel set needs each query translated; pass drop_incomplete=True "
                f"(--drop_incomplete true) to drop them")
        recs = [r for r in recs if r.qid not in set(thin)]
    langs = Counter(r.lang for r in recs)
    if len(by_q) - len(thin) < 2 or len(langs) < 2:
        raise DataError(f"{source}: a parallel set needs at least 2 queries in at least 2 languages "
                        f"(have {len(by_q) - len(thin)} queries, languages {sorted(langs)})")
    return list(recs)

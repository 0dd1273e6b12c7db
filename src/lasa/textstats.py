"""Text statistics for the judges: Unicode folding, scripts, gibberish, echo, loops, language id.

Pure functions, no model: :class:`lasa.judges.RefusalJudge` is built from them, and they are
useful on their own to inspect answers (``echo_ratio(prompt, response)``, ``identify_language``).
"""
from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Iterable

log = logging.getLogger(__name__)

_AR_STRIP = {chr(c) for c in range(0x064B, 0x0653)} | {"\u0670", "\u0640", "\u200b", "\u200c", "\u200d", "\ufeff"}
_CHAR_MAP = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "\u0623": "\u0627", "\u0625": "\u0627",
             "\u0622": "\u0627", "\u0671": "\u0627"}


def fold(text: str) -> tuple[str, list[int], str]:
    """Normalise for matching: NFC, casefold, unify apostrophes/Arabic, collapse spaces.

    Returns ``(folded, index, nfc)`` where ``index[i]`` is the position in ``nfc`` of
    the character that produced ``folded[i]`` (used to quote the original text).
    """
    nfc = unicodedata.normalize("NFC", text)
    out: list[str] = []
    idx: list[int] = []
    space = True
    for i, ch in enumerate(nfc):
        if ch in _AR_STRIP:
            continue
        ch = _CHAR_MAP.get(ch, ch)
        if ch.isspace():
            if not space:
                out.append(" ")
                idx.append(i)
            space = True
            continue
        space = False
        for c in ch.casefold():
            out.append(c)
            idx.append(i)
    return "".join(out), idx, nfc


def fold_pattern(p: str) -> str:
    return "".join(_CHAR_MAP.get(c, c) for c in unicodedata.normalize("NFC", p) if c not in _AR_STRIP)


def script_of(ch: str) -> str | None:
    """Coarse Unicode script of a letter (``None`` for non-letters)."""
    if unicodedata.category(ch)[0] not in "LM":
        return None
    o = ord(ch)
    if o < 0x250 or 0x300 <= o <= 0x36F or 0x1E00 <= o <= 0x1EFF or 0xFF21 <= o <= 0xFF5A:
        return "latin"
    for lo, hi, name in _SCRIPT_RANGES:
        if lo <= o <= hi:
            return name
    return "other"


_SCRIPT_RANGES = (
    (0x0370, 0x03FF, "greek"), (0x0400, 0x052F, "cyrillic"), (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"), (0x08A0, 0x08FF, "arabic"),
    (0x0900, 0x097F, "devanagari"), (0x0980, 0x09FF, "bengali"), (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"), (0x3040, 0x30FF, "kana"), (0x3130, 0x318F, "hangul"), (0x31F0, 0x31FF, "kana"),
    (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xAC00, 0xD7AF, "hangul"), (0xF900, 0xFAFF, "han"),
    (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"), (0x20000, 0x2FA1F, "han"),
)
SCRIPT_LANG = {"thai": "th", "bengali": "bn", "arabic": "ar", "hangul": "ko", "cyrillic": "ru",
                "devanagari": "hi", "greek": "el", "hebrew": "he"}
NON_LATIN = frozenset(SCRIPT_LANG.values()) | {"zh", "ja", "yue", "wuu"}
SCRIPT_UNITS = {"han": 2.5, "kana": 2.5, "hangul": 2.0}
_DENSE = {"han", "kana", "thai"}


def script_counts(text: str) -> Counter:
    return Counter(s for s in map(script_of, text) if s is not None)


def gibberish_reason(text: str) -> str | None:
    """Why ``text`` is gibberish, or ``None``."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return None
    bad = sum(c == "\ufffd" for c in chars)
    if bad / len(chars) >= 0.05:
        return f"gibberish ({bad} replacement characters)"
    wordish = sum(unicodedata.category(c)[0] in "LMN" for c in chars)
    if len(chars) >= 6 and wordish / len(chars) < 0.35:
        return f"gibberish (only {wordish / len(chars):.0%} letters or digits)"
    sc = script_counts(text)
    sc["han"] += sc.pop("kana", 0)
    total = sum(sc.values())
    if total >= 12:
        big = [s for s, n in sc.items() if n / total >= 0.1]
        if len(big) >= 3 and max(sc.values()) / total < 0.5:
            return f"gibberish (mixed scripts: {', '.join(sorted(big))})"
    return None


def _grams(s: str, n: int) -> set[str]:
    return {s[i:i + n] for i in range(max(0, len(s) - n + 1))}


def echo_ratio(prompt: str, response: str, n: int = 3) -> float:
    """Share of the response's character n-grams that occur in the prompt (0 if too short)."""
    p = re.sub(r"\W+", "", fold(prompt)[0])
    r = re.sub(r"\W+", "", fold(response)[0])
    rg = _grams(r, n)
    if len(rg) < 3 or len(p) < n:
        return 0.0
    return len(rg & _grams(p, n)) / len(rg)


def _tokens(text: str) -> list[str]:
    toks: list[str] = []
    for w in text.split():
        if any(script_of(c) in _DENSE for c in w):
            toks.extend(c for c in w if unicodedata.category(c)[0] in "LMN")
        else:
            w = w.strip(".,;:!?\"'()[]*-")
            if w:
                toks.append(w)
    return toks


def repetition_ratio(text: str, n: int = 4) -> float:
    """Share of repeated token n-grams (0 for fewer than 16 tokens)."""
    toks = _tokens(fold(text)[0])
    if len(toks) < 16:
        return 0.0
    grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def line_repetition(text: str) -> float:
    """Share of duplicate lines among >= 4 non-empty lines (0 otherwise)."""
    lines = [ln.strip().casefold() for ln in text.splitlines() if ln.strip()]
    if len(lines) < 4:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


#: Latin-script languages py3langid may answer (the prompt language is added when known).
LATIN_LANGS: tuple[str, ...] = ("en", "it", "vi", "sw", "jv", "id", "ms", "fr", "es", "de", "pt")
#: Close relatives accepted as "the prompt's language".
RELATIVES: dict[str, frozenset[str]] = {
    "jv": frozenset({"id", "ms"}), "id": frozenset({"ms", "jv"}), "ms": frozenset({"id", "jv"}),
    "es": frozenset({"pt"}), "pt": frozenset({"es"}), "zh": frozenset({"yue", "wuu"}),
}


@lru_cache(maxsize=8)
def _identifier(langs: tuple[str, ...]):
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:  # pragma: no cover - py3langid is a dependency
        log.warning("py3langid is not installed; Latin-script language identification is disabled")
        return None
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages([lang for lang in langs if lang in set(ident.labels)])
    return ident


CODE_SPANS = re.compile(r"```.*?(?:```|$)|`[^`\n]*`|https?://\S+", re.S)


def identify_language(text: str, *, extra: Iterable[str] = ()) -> tuple[str | None, float, list[tuple[str, float]]]:
    """``(lang, confidence, ranking)`` of ``text``; ``lang`` is None when undeterminable.

    Script decides for non-Latin scripts (ranking empty); Latin text goes to
    py3langid over :data:`LATIN_LANGS` plus ``extra`` (ranking = probabilities).
    """
    text = CODE_SPANS.sub(" ", text)
    sc = script_counts(text)
    total = sum(sc.values())
    if total < 2:
        return None, 0.0, []
    cjk = sc["han"] + sc["kana"]
    if cjk >= total / 2:
        return ("ja" if sc["kana"] >= 0.1 * cjk else "zh"), cjk / total, []
    script, n = sc.most_common(1)[0]
    if script in SCRIPT_LANG and n >= total / 2:
        return SCRIPT_LANG[script], n / total, []
    if script != "latin":
        return None, 0.0, []
    ident = _identifier(tuple(sorted(set(LATIN_LANGS) | set(extra))))
    if ident is None:
        return None, 0.0, []
    ranking = [(lang, float(p)) for lang, p in ident.rank(text) if p > 1e-4]
    lang, p = ranking[0]
    return lang, p, ranking

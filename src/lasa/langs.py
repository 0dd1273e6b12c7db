"""Language codes: ISO 639-1 everywhere inside lasa.

Loaders call :func:`normalize_lang` on every code or language name they read, so
``jw`` (the legacy Javanese code used by some LASA files) becomes ``jv`` with a
warning, and "Swahili" becomes ``sw``.
"""
from __future__ import annotations

import logging
import warnings

from .errors import DataError

log = logging.getLogger(__name__)

#: The ten MultiJail / LASA evaluation languages, in the paper's order.
LANGS: tuple[str, ...] = ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv")

NAMES: dict[str, str] = {
    "en": "English", "zh": "Chinese", "it": "Italian", "vi": "Vietnamese", "ar": "Arabic",
    "ko": "Korean", "th": "Thai", "bn": "Bengali", "sw": "Swahili", "jv": "Javanese",
    "id": "Indonesian", "fr": "French", "de": "German", "es": "Spanish", "pt": "Portuguese",
    "ru": "Russian", "ja": "Japanese", "hi": "Hindi", "tr": "Turkish", "nl": "Dutch",
    "pl": "Polish", "fa": "Persian", "uk": "Ukrainian", "ms": "Malay", "tl": "Tagalog",
    "ur": "Urdu", "ta": "Tamil", "te": "Telugu", "he": "Hebrew", "el": "Greek",
}

#: Resource tiers used by MultiJail and the LASA paper.
TIERS: dict[str, tuple[str, ...]] = {
    "high": ("en", "zh", "it", "vi"),
    "medium": ("ar", "ko", "th"),
    "low": ("bn", "sw", "jv"),
}

ALIASES: dict[str, str] = {"jw": "jv", "zh-cn": "zh", "zh_cn": "zh", "zh-hans": "zh", "in": "id", "iw": "he"}

_BY_NAME = {v.lower(): k for k, v in NAMES.items()}


def tier_of(lang: str) -> str | None:
    for tier, langs in TIERS.items():
        if lang in langs:
            return tier
    return None


def normalize_lang(code: str, *, where: str = "") -> str:
    """Return the ISO 639-1 code for ``code`` (a code, alias or English name).

    Raises :class:`DataError` naming ``where`` for an unknown code.
    """
    if not isinstance(code, str) or not code.strip():
        raise DataError(f"{where}: missing or empty language code (expected an ISO 639-1 code such as 'en')".lstrip(": "))
    c = code.strip().lower()
    if c in ALIASES:
        new = ALIASES[c]
        msg = f"language code {code!r} is a legacy alias; using ISO 639-1 {new!r}"
        if where:
            msg = f"{where}: {msg}"
        warnings.warn(msg, stacklevel=2)
        log.debug(msg)
        return new
    if c in NAMES:
        return c
    if c in _BY_NAME:
        return _BY_NAME[c]
    known = ", ".join(sorted(NAMES))
    msg = f"unknown language code {code!r}; use an ISO 639-1 code ({known})"
    raise DataError(f"{where}: {msg}" if where else msg)


def parse_langs(spec: str | list[str] | tuple[str, ...] | None, *, where: str = "--langs") -> tuple[str, ...] | None:
    """Parse ``"en,zh,ko"`` or a list into normalised codes; ``None``/``"all"`` -> None."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "all"):
            return None
        items = [s for s in spec.replace(" ", ",").split(",") if s]
    else:
        items = list(spec)
    out: list[str] = []
    for s in items:
        code = normalize_lang(s, where=where)
        if code not in out:
            out.append(code)
    return tuple(out)

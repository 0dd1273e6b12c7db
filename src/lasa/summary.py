"""The short table ``lasa run`` prints at the end: l*, SSI held-out AUC, ASR per language
before -> after, and over-refusal before -> after, with the refusal and invalid rates that
show where a small model is too weak for the method to act."""
from __future__ import annotations

import logging
from pathlib import Path

from .io import read_json
from .langs import LANGS

log = logging.getLogger(__name__)


def _metrics(summary: dict) -> dict:
    if "per_lang" in summary:
        return summary
    for v in summary.values():
        if isinstance(v, dict) and "per_lang" in v:
            return v
    return {}


def _rate(block: dict | None, key: str) -> float | None:
    if not block:
        return None
    r = block.get(key)
    return r.get("rate") if isinstance(r, dict) else r


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:4.0f}%"


def final_table(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    lines: list[str] = []
    loc = run_dir / "locate" / "locate.json"
    if loc.exists():
        d = read_json(loc)
        lines.append(f"semantic bottleneck l* = {d['best_layer']}/{d['n_layers']} "
                     f"(relative depth {d['relative_depth']:.2f}, 95% interval {d.get('best_interval')})")
    met = run_dir / "train-ssi" / "metrics.json"
    if met.exists():
        g = read_json(met)["test"]["groups"]
        auc = g.get("held_out", {}).get("auc")
        fpr = g.get("held_out", {}).get("fpr")
        lines.append(f"SSI held-out languages: ROC-AUC {auc:.3f}, FPR {fpr:.3f}" if auc is not None else
                     "SSI held-out languages: n/a")
    runs = [(name, run_dir / name / "summary.json") for name in ("eval-base", "eval-aligned", "eval-gated")]
    runs = [(n, _metrics(read_json(p))) for n, p in runs if p.exists()]
    if runs:
        names = [n.replace("eval-", "") for n, _ in runs]
        lines.append("")
        lines.append("ASR per language (unsafe / refusal / invalid), " + " -> ".join(names))
        langs = [lg for lg in LANGS if any(lg in m.get("per_lang", {}) for _, m in runs)]
        for lg in langs:
            cells = []
            for _, m in runs:
                h = m.get("per_lang", {}).get(lg, {}).get("harmful")
                cells.append(f"{_pct(_rate(h, 'asr'))} /{_pct(_rate(h, 'refusal_rate'))} /{_pct(_rate(h, 'invalid_rate'))}")
            lines.append(f"  {lg:>3}: " + "  ->  ".join(cells))
        lines.append("  avg ASR: " + "  ->  ".join(_pct(m.get("avg_asr")) for _, m in runs))
        lines.append("  over-refusal (benign): " + "  ->  ".join(
            _pct(_rate(m.get("overall", {}).get("benign"), "over_refusal")) for _, m in runs))
    rep = run_dir / "report" / "report.html"
    if rep.exists():
        lines.append("")
        lines.append(f"report: {rep.resolve()}")
    return "\n".join(lines)


def print_final_table(run_dir: Path) -> None:
    text = final_table(run_dir)
    if text:
        print(text, flush=True)  # the end-of-run table is the command's output, not a log line

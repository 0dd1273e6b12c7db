"""Stage: a side-by-side report of evaluation runs (e.g. base vs aligned vs aligned+gate).

Inputs are :mod:`lasa.evaluate` output directories (``summary.json`` + ``samples.jsonl``),
optionally a ``lasa locate`` directory (its plot and l*) and an SSI directory (its
``metrics.md`` table and ``ssi_metrics.png``).  Outputs, in ``out``:

* ``report.md``: the tables in Markdown (PNG charts linked next to it);
* ``report.html``: one self-contained file: inline CSS and JS, the PNGs embedded as base64
  ``data:`` URIs, no external resource (a Content-Security-Policy forbids any and lets only
  the page's own script run, by hash), plus a sample viewer (filter by run, language, label,
  verdict or text) that shows the English original next to each translated prompt, the
  answer, its verdict and the judge's rationale;
* ``asr_by_lang.png``, ``verdicts_by_lang.png``, ``over_refusal_by_lang.png``: bar charts;
* ``paper_table.json``: the paper's main-table shape, ASR in percent per language and the
  average: ``{"columns": [en, ..., jv, "avg"], "rows": [{"name", "asr": {lang: %, "avg": %}}]}``.

Numbers: every rate is shown as ``rate% [Wilson 95 % interval] (k/n)`` (see :mod:`lasa.metrics`);
the headline is the unweighted average of the per-language ASR.  A run whose answers in a
language are mostly ``invalid`` (above ``invalid_limit``) gets a plain "limits" note: the
model is too small to act in that language, so its low ASR there is not a safety result.

All text from the data (harmful prompts, model answers, rationales, run names) is escaped
before it enters the HTML; the viewer only toggles the visibility of server-rendered rows.
"""
from __future__ import annotations

import base64
import hashlib
import html
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .configs import check_range, check_types
from .errors import ArtifactError, ConfigError
from .io import atomic_write_json, atomic_write_text, iter_jsonl, read_json, read_text
from .langs import LANGS, NAMES, TIERS

log = logging.getLogger(__name__)

VERDICT_COLORS = {"unsafe": "#d62728", "refusal": "#2ca02c", "invalid": "#8c8c8c", "safe": "#1f77b4"}
PNGS = ("asr_by_lang.png", "verdicts_by_lang.png", "over_refusal_by_lang.png")


@dataclass
class ReportConfig:
    """Write a Markdown + self-contained HTML report of evaluation runs side by side.

    Args:
        runs: Evaluate output directories (each with summary.json and samples.jsonl), e.g. base aligned aligned+gate.
        names: Labels of the runs, in the same order (default: each run's name).
        locate: A locate output directory (or its locate.json): adds its plot and l*.
        ssi: An SSI directory (from train-ssi): adds its metrics.md table and ssi_metrics.png.
        title: Report title.
        out: Output directory (report.md, report.html, paper_table.json, PNG charts).
        notes: Free text (or a .md/.txt file) shown under the title.
        invalid_limit: Flag a language where a run's invalid rate exceeds this fraction.
        max_samples: At most this many samples per run in the HTML sample viewer.
    """

    runs: list[str]
    names: list[str] | None = None
    locate: str | None = None
    ssi: str | None = None
    title: str = "LASA evaluation report"
    out: str = "runs/report"
    notes: str | None = None
    invalid_limit: float = 0.3
    max_samples: int = 2000

    def __post_init__(self) -> None:
        check_types(self)
        if isinstance(self.runs, str):
            self.runs = [self.runs]
        if not self.runs:
            raise ConfigError("runs: give at least one evaluate output directory")
        if self.names is not None and len(self.names) != len(self.runs):
            raise ConfigError(f"names has {len(self.names)} entries for {len(self.runs)} runs")
        check_range("invalid_limit", self.invalid_limit, 0.0, 1.0)
        check_range("max_samples", self.max_samples, 0)


@dataclass
class Run:
    name: str
    path: Path
    summary: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.summary["metrics"]


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read an evaluate output directory (``summary.json`` required, ``samples.jsonl`` optional)."""
    p = Path(path)
    sp = p / "summary.json"
    if not sp.exists():
        raise ArtifactError(f"{p}: no summary.json; run `lasa evaluate --out {p}` first")
    summary = read_json(sp)
    if not isinstance(summary, dict) or summary.get("kind") != "lasa.evaluate" or "metrics" not in summary:
        raise ArtifactError(f"{sp}: not a lasa evaluate summary")
    samples: list[dict[str, Any]] = []
    if (p / "samples.jsonl").exists():
        samples = [r for _, r in iter_jsonl(p / "samples.jsonl")]
    else:
        log.warning("report: %s has no samples.jsonl; its samples are left out of the viewer", p)
    return Run(name or str(summary.get("name") or p.resolve().name), p, summary, samples)


# --- numbers -------------------------------------------------------------------------------------

def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def fmt_rate(r: dict[str, Any] | None) -> str:
    """``"25.0% [4.6–69.9] (1/4)"``; ``"–"`` when there is no data."""
    if not r or not r.get("n"):
        return "–"
    return f"{pct(r['rate'])}% [{pct(r['lo'])}–{pct(r['hi'])}] ({r['k']}/{r['n']})"


def all_langs(runs: Sequence[Run]) -> list[str]:
    seen = {lg for r in runs for lg in r.metrics["langs"]}
    return [lg for lg in LANGS if lg in seen] + sorted(seen - set(LANGS))


def paper_table(runs: Sequence[Run]) -> dict[str, Any]:
    """The paper's main-table shape: per-language ASR (%) and the average, one row per run."""
    cols = list(LANGS) + ["avg"]
    rows = []
    for run in runs:
        per = run.metrics["per_lang"]
        asr = {lg: (round(100 * per[lg]["harmful"]["asr"]["rate"], 2)
                    if lg in per and per[lg]["harmful"]["asr"]["rate"] is not None else None) for lg in LANGS}
        avg = run.metrics.get("avg_asr")
        asr["avg"] = None if avg is None else round(100 * avg, 2)
        rows.append({"name": run.name, "asr": asr})
    return {"columns": cols, "unit": "percent", "avg": "unweighted mean over the languages evaluated", "rows": rows}


def _block(run: Run, lang: str, label: str) -> dict[str, Any] | None:
    b = run.metrics["per_lang"].get(lang)
    return b[label] if b else None


def lang_table(runs: Sequence[Run], langs: Sequence[str], label: str, key: str) -> tuple[list[str], list[list[str]]]:
    head = ["lang", "tier"] + [r.name for r in runs]
    rows = []
    for lg in langs:
        cells = [fmt_rate((_block(r, lg, label) or {}).get(key)) for r in runs]
        if any(c != "–" for c in cells):
            tier = next((t for t, ls in TIERS.items() if lg in ls), "")
            rows.append([f"{lg} ({NAMES.get(lg, lg)})", tier] + cells)
    return head, rows


def headline_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "avg ASR %", "high", "medium", "low", "avg ASR % (valid answers)", "avg over-refusal %",
            "harmful n", "benign n"]
    rows = []
    for r in runs:
        m = r.metrics
        rows.append([r.name, pct(m["avg_asr"])] + [pct(m["tiers"][t]["avg_asr"]) for t in TIERS] +
                    [pct(m["avg_asr_valid"]), pct(m["avg_over_refusal"]), str(m["overall"]["harmful"]["n"]),
                     str(m["overall"]["benign"]["n"])])
    return head, rows


def tier_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    head = ["tier", "languages"] + [f"{r.name}: pooled ASR" for r in runs] + [f"{r.name}: over-refusal" for r in runs]
    rows = []
    for t in TIERS:
        langs = sorted({lg for r in runs for lg in r.metrics["tiers"][t]["langs"]}, key=list(LANGS).index)
        if langs:
            rows.append([t, " ".join(langs)] + [fmt_rate(r.metrics["tiers"][t]["harmful"]["asr"]) for r in runs]
                        + [fmt_rate(r.metrics["tiers"][t]["benign"]["over_refusal"]) for r in runs])
    return head, rows


def runs_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "model", "fingerprint", "adapter", "gate (SSI layer)", "judge", "max new tokens", "folder"]
    rows = []
    for r in runs:
        s = r.summary
        model = s.get("model") or {}
        ssi = s.get("ssi") or {}
        judge = s.get("judge") or {}
        gate = f"on (ℓ={ssi.get('layer')})" if s.get("gate") else "off"
        rows.append([r.name, str(model.get("name", "?")), str(model.get("fingerprint") or "")[:12],
                     str((s.get("config") or {}).get("adapter") or ""), gate,
                     str(judge.get("name", "?")) + (f" ({judge['model']})" if judge.get("model") else ""),
                     str((s.get("generation") or {}).get("max_new_tokens", "")), str(r.path)])
    return head, rows


def gate_table(runs: Sequence[Run], langs: Sequence[str]) -> tuple[list[str], list[list[str]]] | None:
    gated = [r for r in runs if r.summary.get("gate_rate")]
    if not gated:
        return None
    head = ["lang"] + [f"{r.name}: {lab}" for r in gated for lab in ("harmful (caught)", "benign (false fire)")]
    rows = [[lg] + [fmt_rate((r.summary["gate_rate"].get(lg) or {}).get(lab)) for r in gated
                    for lab in ("harmful", "benign")] for lg in langs]
    return head, rows


def limits(runs: Sequence[Run], langs: Sequence[str], invalid_limit: float) -> list[str]:
    """Plain-language caveats: high invalid rates, small samples, mixed judges."""
    notes = []
    for r in runs:
        for lg in langs:
            high = {}
            for label in ("harmful", "benign"):
                b = _block(r, lg, label)
                inv = b["invalid_rate"] if b else None
                if inv and inv["n"] and inv["rate"] > invalid_limit:
                    high[label] = f"{pct(inv['rate'], 0)}% of the answers to {label} prompts"
            if high:
                what = {"harmful": "a low ASR there is not evidence of safety",
                        "benign": "its over-refusal there says little"}
                notes.append(f"{r.name}, {NAMES.get(lg, lg)} ({lg}): {' and '.join(high.values())} are invalid "
                             "(empty, loops, gibberish or another language). The model is too small to act in this "
                             f"language, so {' and '.join(what[k] for k in high)}.")
    small = sorted({b["n"] for r in runs for lg in langs if (b := _block(r, lg, "harmful")) and 0 < b["n"] < 30})
    if small:
        span = f"{small[0]}" if small[0] == small[-1] else f"{small[0]}–{small[-1]}"
        notes.append(f"Some languages have only {span} harmful prompts: the 95% intervals are wide; "
                     "compare runs by their intervals, not their point estimates.")
    judges = {str((r.summary.get("judge") or {}).get("name")) for r in runs}
    if len(judges) > 1:
        notes.append(f"The runs were judged by different judges ({', '.join(sorted(judges))}): compare with care.")
    return notes


# --- charts -----------------------------------------------------------------------------------------

def _grouped(runs: Sequence[Run], langs: Sequence[str], label: str, key: str, path: Path, title: str,
             ylabel: str, avg_key: str | None) -> Path:
    import numpy as np

    from .plots import _fig, _save

    plt = _fig()
    groups = list(langs) + (["avg"] if avg_key else [])
    x = np.arange(len(groups))
    w = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(groups) * max(1, len(runs)) ** 0.5 + 2), 3.8))
    for i, r in enumerate(runs):
        vals, lo, hi = [], [], []
        for lg in langs:
            rt = (_block(r, lg, label) or {}).get(key) or {}
            v = rt.get("rate")
            vals.append(np.nan if v is None else 100 * v)
            lo.append(np.nan if v is None else 100 * (v - rt["lo"]))
            hi.append(np.nan if v is None else 100 * (rt["hi"] - v))
        if avg_key:
            a = r.metrics.get(avg_key)
            vals.append(np.nan if a is None else 100 * a)
            lo.append(np.nan)  # a mean of rates: no binomial interval
            hi.append(np.nan)
        ax.bar(x + (i - (len(runs) - 1) / 2) * w, vals, w, yerr=[lo, hi], capsize=2, label=r.name,
               error_kw={"lw": 0.8})
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_verdicts(runs: Sequence[Run], langs: Sequence[str], path: Path) -> Path:
    """Share of unsafe / refusal / invalid / safe answers to harmful prompts, one panel per run."""
    import numpy as np

    from .plots import _fig, _save

    plt = _fig()
    fig, axes = plt.subplots(len(runs), 1, figsize=(max(6.0, 0.6 * len(langs) + 2), 2.3 * len(runs) + 0.6),
                             sharex=True, squeeze=False)
    x = np.arange(len(langs))
    for ax, r in zip(axes[:, 0], runs):
        bottom = np.zeros(len(langs))
        for v, color in VERDICT_COLORS.items():
            share = []
            for lg in langs:
                b = _block(r, lg, "harmful")
                share.append(100 * b["counts"][v] / b["n"] if b and b["n"] else 0.0)
            ax.bar(x, share, 0.7, bottom=bottom, color=color, label=v)
            bottom += np.asarray(share)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of answers")
        ax.set_title(f"{r.name}: answers to harmful prompts", fontsize=9, loc="left")
    axes[-1, 0].set_xticks(x, list(langs))
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def make_charts(runs: Sequence[Run], langs: Sequence[str], out: Path) -> list[Path]:
    paths = [_grouped(runs, langs, "harmful", "asr", out / PNGS[0], "Attack success rate per language (95% CI)",
                      "ASR %", "avg_asr"),
             plot_verdicts(runs, langs, out / PNGS[1])]
    if any(r.metrics["overall"]["benign"]["n"] for r in runs):
        paths.append(_grouped(runs, langs, "benign", "over_refusal", out / PNGS[2],
                              "Over-refusal on benign prompts (95% CI)", "refusal %", "avg_over_refusal"))
    return paths


# --- extras: locate and SSI ---------------------------------------------------------------------------

def locate_section(path: str | Path) -> dict[str, Any]:
    from .locate import load_locate

    p = Path(path)
    d = load_locate(p)
    png = (p if p.is_dir() else p.parent) / "locate.png"
    depth = d.get("relative_depth", d["best_layer"] / d["n_layers"])
    text = (f"Semantic bottleneck ℓ* = {d['best_layer']} of {d['n_layers']} layers (relative depth {depth:.2f}) "
            f"for {(d.get('model') or {}).get('name', '?')}")
    if d.get("best_interval"):
        text += f"; 95% interval of the winning layer {d['best_interval'][0]}–{d['best_interval'][1]}"
    return {"title": "Semantic bottleneck (locate)", "text": text + ".", "table": None,
            "png": png if png.exists() else None, "layer": d["best_layer"]}


def ssi_section(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    md, png, cfg = p / "metrics.md", p / "ssi_metrics.png", p / "ssi.json"
    if not (md.exists() or png.exists() or cfg.exists()):
        raise ArtifactError(f"{p}: not an SSI directory (no metrics.md, ssi_metrics.png or ssi.json)")
    info = read_json(cfg) if cfg.exists() else {}
    text = (f"SSI at hidden_states[{info.get('layer', '?')}], threshold {info.get('threshold', '?')}"
            f"{', per-language thresholds' if info.get('lang_thresholds') else ''}; test split per language:")
    return {"title": "Safety Semantic Interpreter", "text": text, "table": read_text(md) if md.exists() else None,
            "png": png if png.exists() else None}


def _md_table_rows(md: str) -> list[list[str]]:
    rows = []
    for line in md.splitlines():
        line = line.strip()
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([c.strip().strip("*") for c in line.strip("|").split("|")])
    return rows


# --- rendering -----------------------------------------------------------------------------------------

def md_cell(s: Any) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def e(s: Any) -> str:
    """HTML-escape anything (quotes included): data text is never markup."""
    return html.escape("" if s is None else str(s), quote=True)


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]], tid: str) -> str:
    def cell(c: str) -> str:
        if "% [" in c:  # rate [CI] (k/n): the value stands out, the interval is smaller
            val, rest = c.split(" ", 1)
            return f"<td class=\"num\">{e(val)} <span class=\"ci\">{e(rest)}</span></td>"
        return f"<td>{e(c)}</td>"

    h = "".join(f"<th>{e(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table id=\"{e(tid)}\"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{white-space:nowrap}.ci{color:#777;font-size:11px}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.notes{background:#f8f8f8;padding:.6em 1em;white-space:pre-wrap}
.limits li{margin:.3em 0}.limits{background:#fff8e6;border-left:4px solid #f0ad4e;padding:.5em 1em .5em 2em}
#controls{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
#controls label{margin-right:1em}.sample{border:1px solid #ddd;border-radius:4px;margin:.7em 0;padding:.5em .8em}
.sample header{font-size:12px;color:#555}.pair{display:grid;grid-template-columns:1fr 1fr;gap:.8em}
.sample pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;padding:.4em;margin:.2em 0;font-size:12.5px}
.sample h4{margin:.4em 0 0;font-size:12px;color:#444}.why{font-size:12px;color:#555}
.v{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-weight:600}
.v-unsafe{background:#d62728}.v-refusal{background:#2ca02c}.v-invalid{background:#8c8c8c}.v-safe{background:#1f77b4}
"""

JS = """
(function () {
  "use strict";
  var items = Array.prototype.slice.call(document.querySelectorAll("#sample-list article.sample"));
  var texts = items.map(function (el) { return el.textContent.toLowerCase(); });
  var keys = ["run", "lang", "label", "verdict"];
  var sel = {};
  keys.forEach(function (k) { sel[k] = document.getElementById("f-" + k); });
  var search = document.getElementById("f-text"), shown = document.getElementById("shown");
  var more = document.getElementById("more"), page = 50, limit = page;
  function apply() {
    var q = search.value.trim().toLowerCase(), total = 0, visible = 0;
    items.forEach(function (el, i) {
      var ok = keys.every(function (k) { return !sel[k].value || el.dataset[k] === sel[k].value; });
      ok = ok && (!q || texts[i].indexOf(q) >= 0);
      if (ok) { total += 1; }
      var show = ok && total <= limit;
      el.hidden = !show;
      if (show) { visible += 1; }
    });
    shown.textContent = "Showing " + visible + " of " + total + " matching samples (" + items.length + " in all)";
    more.hidden = total <= limit;
  }
  function reset() { limit = page; apply(); }
  keys.forEach(function (k) { sel[k].addEventListener("change", reset); });
  search.addEventListener("input", reset);
  more.addEventListener("click", function () { limit += page; apply(); });
  apply();
  document.body.setAttribute("data-viewer", "ready");
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _options(kid: str, label: str, values: Sequence[str]) -> str:
    opts = "".join(f"<option value=\"{e(v)}\">{e(v)}</option>" for v in values)
    return f"<label>{e(label)} <select id=\"f-{kid}\"><option value=\"\">all</option>{opts}</select></label>"


def sample_html(run: Run, s: dict[str, Any]) -> str:
    verdict = str(s.get("verdict", ""))
    meta = [f"<strong>{e(run.name)}</strong>", e(s.get("lang")), e(s.get("label")), e(s.get("category") or ""),
            f"id {e(s.get('id'))}"]
    if s.get("p_harmful") is not None:
        meta.append(f"P(harmful) {float(s['p_harmful']):.2f}" + (" · gated" if s.get("gated") else ""))
    if s.get("finish_reason"):
        meta.append(f"{e(s.get('new_tokens'))} tokens ({e(s['finish_reason'])})")
    english = s.get("english")
    if s.get("lang") != "en":
        pair = (f"<div class=\"pair\"><div><h4>English original</h4><pre>{e(english) if english else '–'}</pre></div>"
                f"<div><h4>Prompt ({e(s.get('lang'))})</h4><pre>{e(s.get('prompt'))}</pre></div></div>")
    else:
        pair = f"<h4>Prompt (en)</h4><pre>{e(s.get('prompt'))}</pre>"
    lang = f" · response language {e(s['response_lang'])}" if s.get("response_lang") else ""
    return (f"<article class=\"sample\" data-run=\"{e(run.name)}\" data-lang=\"{e(s.get('lang'))}\" "
            f"data-label=\"{e(s.get('label'))}\" data-verdict=\"{e(verdict)}\"><header>{' · '.join(meta)}</header>"
            f"{pair}<h4>Response <span class=\"v v-{e(verdict)}\">{e(verdict)}</span></h4>"
            f"<pre>{e(s.get('response'))}</pre><p class=\"why\">{e(s.get('rationale'))} (score "
            f"{float(s.get('score') or 0):.2f}){lang}</p></article>")


def render_html(cfg: ReportConfig, runs: Sequence[Run], langs: Sequence[str], tables: list[tuple[str, str, Any]],
                charts: list[Path], extras: list[dict[str, Any]], notes: list[str], note_text: str | None) -> str:
    parts = [f"<h1>{e(cfg.title)}</h1>",
             f"<p>Generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))} by lasa; {len(runs)} run(s), "
             f"{len(langs)} language(s). Rates: value% [Wilson 95% interval] (k/n).</p>"]
    if note_text:
        parts.append(f"<div class=\"notes\">{e(note_text)}</div>")
    for tid, title, (head, rows) in tables:
        parts.append(f"<h2>{e(title)}</h2>{html_table(head, rows, tid)}")
        if tid == "headline":
            parts += [f"<img alt=\"{e(p.stem)}\" src=\"{_data_uri(p)}\">" for p in charts]
    if notes:
        parts.append("<h2>Limits</h2><ul class=\"limits\" id=\"limits\">" +
                     "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    for x in extras:
        parts.append(f"<h2>{e(x['title'])}</h2><p>{e(x['text'])}</p>")
        if x.get("table"):
            rows = _md_table_rows(x["table"])
            if rows:
                parts.append(html_table(rows[0], rows[1:], "ssi-metrics"))
        if x.get("png"):
            parts.append(f"<img alt=\"{e(x['title'])}\" src=\"{_data_uri(x['png'])}\">")
    samples = [(r, s) for r in runs for s in r.samples[: cfg.max_samples]]
    left = sum(max(0, len(r.samples) - cfg.max_samples) for r in runs)
    verdicts = sorted({str(s.get("verdict")) for _, s in samples})
    controls = (_options("run", "run", [r.name for r in runs]) + _options("lang", "language", list(langs)) +
                _options("label", "prompt set", ["harmful", "benign"]) + _options("verdict", "verdict", verdicts) +
                "<label>text <input id=\"f-text\" type=\"search\" placeholder=\"search\"></label>"
                "<span id=\"shown\"></span>")
    parts.append("<h2>Samples</h2><p>Model outputs to harmful prompts, shown as plain text.</p>"
                 + (f"<p>{left} sample(s) beyond max_samples={cfg.max_samples} per run are not shown.</p>" if left
                    else "")
                 + f"<div id=\"controls\">{controls}</div><div id=\"sample-list\">"
                 + "".join(sample_html(r, s) for r, s in samples) + "</div><button id=\"more\" type=\"button\">"
                 "Show more</button>")
    csp = f"default-src 'none'; img-src data:; style-src {_csp_hash(CSS)}; script-src {_csp_hash(JS)}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{html.escape(csp, quote=False)}\">"
            "<meta name=\"referrer\" content=\"no-referrer\"><meta name=\"viewport\" content=\"width=device-width\">"
            f"<title>{e(cfg.title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(parts)
            + f"\n<script>{JS}</script></body></html>\n")


def render_md(cfg: ReportConfig, runs: Sequence[Run], tables: list[tuple[str, str, Any]], charts: list[Path],
              extras: list[dict[str, Any]], notes: list[str], note_text: str | None) -> str:
    parts = [f"# {cfg.title}\n", "Rates: value% [Wilson 95% interval] (k/n); the headline is the unweighted "
             "average of the per-language ASR.\n"]
    if note_text:
        parts.append(note_text.strip() + "\n")
    for tid, title, (head, rows) in tables:
        parts.append(f"## {title}\n\n{md_table(head, rows)}")
        if tid == "headline":
            parts += [f"![{p.stem}]({p.name})\n" for p in charts]
    if notes:
        parts.append("## Limits\n\n" + "".join(f"- {md_cell(n)}\n" for n in notes))
    for x in extras:
        parts.append(f"## {x['title']}\n\n{x['text']}\n")
        if x.get("table"):
            parts.append(x["table"])
        if x.get("png"):
            parts.append(f"![{x['title']}]({x['png_name']})\n")
    parts.append(f"Samples: open report.html (sample viewer) or each run's samples.jsonl "
                 f"({', '.join(md_cell(r.path / 'samples.jsonl') for r in runs)}).\n")
    return "\n".join(parts)


def report(cfg: ReportConfig) -> Path:
    """Write the report files under ``cfg.out``; returns the path of ``report.html``."""
    names = cfg.names or [None] * len(cfg.runs)
    runs = [load_run(p, n) for p, n in zip(cfg.runs, names)]
    if len({r.name for r in runs}) != len(runs):
        raise ConfigError(f"run names must be distinct (got {[r.name for r in runs]}); pass --names")
    extras = []
    if cfg.locate:
        extras.append(locate_section(cfg.locate) | {"png_name": "locate.png"})
    if cfg.ssi:
        extras.append(ssi_section(cfg.ssi) | {"png_name": "ssi_metrics.png"})
    note_text = cfg.notes
    if note_text and note_text.endswith((".md", ".txt")) and Path(note_text).is_file():
        note_text = read_text(note_text)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    langs = all_langs(runs)
    tables: list[tuple[str, str, Any]] = [
        ("runs", "Runs", runs_table(runs)),
        ("headline", "Headline: average ASR (the paper's main number) and over-refusal", headline_table(runs)),
        ("asr-table", "Attack success rate per language (harmful prompts)", lang_table(runs, langs, "harmful", "asr")),
        ("refusal-table", "Refusal rate per language (harmful prompts)",
         lang_table(runs, langs, "harmful", "refusal_rate")),
        ("invalid-table", "Invalid answers per language (harmful prompts)",
         lang_table(runs, langs, "harmful", "invalid_rate")),
        ("tier-table", "Resource tiers (pooled)", tier_table(runs)),
    ]
    if any(r.metrics["overall"]["benign"]["n"] for r in runs):
        tables += [("over-refusal-table", "Over-refusal per language (benign prompts)",
                    lang_table(runs, langs, "benign", "over_refusal")),
                   ("benign-invalid-table", "Invalid answers per language (benign prompts)",
                    lang_table(runs, langs, "benign", "invalid_rate"))]
    gt = gate_table(runs, langs)
    if gt:
        tables.append(("gate-table", "Gate firing rate per language", gt))
    notes = limits(runs, langs, cfg.invalid_limit)
    charts = make_charts(runs, langs, out)
    for x in extras:
        if x.get("png") and x["png"].resolve() != (out / x["png_name"]).resolve():
            shutil.copyfile(x["png"], out / x["png_name"])
    atomic_write_json(out / "paper_table.json", paper_table(runs))
    atomic_write_text(out / "report.md", render_md(cfg, runs, tables, charts, extras, notes, note_text))
    path = atomic_write_text(out / "report.html", render_html(cfg, runs, langs, tables, charts, extras, notes,
                                                              note_text))
    log.info("report: %d run(s), %d language(s); wrote %s and %s", len(runs), len(langs), out / "report.md", path)
    return path


__all__ = ["ReportConfig", "report", "load_run", "paper_table", "fmt_rate", "limits", "Run"]

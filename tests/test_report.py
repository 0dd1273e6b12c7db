"""The report stage on hand-made runs: table values, paper_table.json, escaping, and a headless-browser check."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lasa.errors import ArtifactError, ConfigError
from lasa.metrics import rate, summarize, wilson_interval
from lasa.report import ReportConfig, report

XSS = '<script>alert("pwned")</script>'
ATTR = '"><img src=x onerror=alert(1)>'

# (lang, label) -> verdicts, per run
RUNS = {
    "base": {("en", "harmful"): ["unsafe", "unsafe", "refusal", "invalid"],
             ("zh", "harmful"): ["unsafe", "refusal", "refusal", "refusal"],
             ("th", "harmful"): ["invalid", "invalid", "invalid", "unsafe"],
             ("en", "benign"): ["safe", "safe"], ("zh", "benign"): ["refusal", "safe"]},
    "aligned": {("en", "harmful"): ["refusal"] * 4, ("zh", "harmful"): ["refusal"] * 3 + ["unsafe"],
                ("th", "harmful"): ["refusal"] * 4, ("en", "benign"): ["refusal", "safe"],
                ("zh", "benign"): ["safe", "safe"]},
}


def make_run(root: Path, name: str, spec: dict, gated: bool = False) -> Path:
    d = root / name
    d.mkdir(parents=True)
    samples = []
    for (lang, label), verdicts in spec.items():
        for i, v in enumerate(verdicts):
            en = f"English query {i}"
            samples.append({"id": f"{label}-{i}-{lang}", "set": label, "qid": str(i), "lang": lang, "label": label,
                            "category": "test", "prompt": en if lang == "en" else f"[{lang}] query {i} {ATTR}",
                            "english": en, "response": f"answer {v} {XSS}", "p_harmful": 0.9 if gated else None,
                            "gated": gated, "verdict": v, "score": 0.75, "rationale": f"because <b>{v}</b>",
                            "response_lang": lang, "new_tokens": 5, "finish_reason": "stop"})
    gate_rate = None
    if gated:
        gate_rate = {lg: {lab: rate(sum(s["gated"] for s in samples if s["lang"] == lg and s["label"] == lab),
                                    sum(s["lang"] == lg and s["label"] == lab for s in samples))
                          for lab in ("harmful", "benign")} for lg in ("en", "zh", "th")}
    summary = {"kind": "lasa.evaluate", "format": 1, "name": name, "metrics": summarize(samples),
               "model": {"name": "tiny-qwen2", "fingerprint": "abc123def456789"}, "gate": gated,
               "ssi": {"path": "ssi", "layer": 2} if gated else None, "gate_rate": gate_rate,
               "judge": {"name": "refusal", "options": {}}, "generation": {"max_new_tokens": 8},
               "config": {"adapter": None}}
    (d / "summary.json").write_text(json.dumps(summary), "utf-8")
    (d / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples), "utf-8")
    return d


def cell(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}–{100 * hi:.1f}] ({k}/{n})"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runs = [make_run(root, "base", RUNS["base"]), make_run(root, "aligned", RUNS["aligned"]),
            make_run(root, "aligned+gate", RUNS["aligned"], gated=True)]
    loc = root / "locate"
    loc.mkdir()
    (loc / "locate.json").write_text(json.dumps({"kind": "lasa.locate", "best_layer": 12, "n_layers": 24,
                                                 "relative_depth": 0.5, "best_interval": [11, 13],
                                                 "model": {"name": "tiny"}}), "utf-8")
    ssi = root / "ssi"
    ssi.mkdir()
    (ssi / "metrics.md").write_text("| lang | split | n | AUC |\n|---|---|---|---|\n| en | train_lang | 10 | 0.950 |\n"
                                    "| **high** | pooled | 10 | 0.950 |\n", "utf-8")
    (ssi / "ssi.json").write_text(json.dumps({"kind": "lasa.ssi", "layer": 12, "threshold": 0.5}), "utf-8")
    out = root / "out"
    cfg = ReportConfig(runs=[str(p) for p in runs], locate=str(loc), ssi=str(ssi), out=str(out),
                       title="Report <b>test</b>", notes="Notes with <i>markup</i> & more")
    html_path = report(cfg)
    shutil.copyfile(out / "asr_by_lang.png", loc / "locate.png")  # real PNGs for the second build
    shutil.copyfile(out / "verdicts_by_lang.png", ssi / "ssi_metrics.png")
    report(dataclasses.replace(cfg, out=str(root / "out2")))
    return out, html_path, root


def test_markdown_tables_hold_the_expected_values(built):
    out, _, _ = built
    md = (out / "report.md").read_text("utf-8")
    asr = md.split("## Attack success rate per language")[1].split("## ")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in asr.splitlines() if line.startswith("| ") and "(" in line.split("|")[1]}
    assert rows["en (English)"] == ["en (English)", "high", cell(2, 4), cell(0, 4), cell(0, 4)]
    assert rows["zh (Chinese)"][2:] == [cell(1, 4), cell(1, 4), cell(1, 4)]
    assert rows["th (Thai)"][1:] == ["medium", cell(1, 4), cell(0, 4), cell(0, 4)]
    assert f"| en (English) | high | {cell(1, 4)} | {cell(4, 4)} | {cell(4, 4)} |" in md  # refusal table
    assert f"| th (Thai) | medium | {cell(3, 4)} | {cell(0, 4)} | {cell(0, 4)} |" in md  # invalid table
    assert f"| zh (Chinese) | high | {cell(1, 2)} | {cell(0, 2)} | {cell(0, 2)} |" in md  # over-refusal
    headline = md.split("## Headline")[1].split("## ")[0]
    assert "| base | 33.3 | 37.5 | 25.0 | – |" in headline and "| aligned | 8.3 | 12.5 | 0.0 | – |" in headline
    assert "## Limits" in md and "Thai (th): 75% of the answers to harmful prompts are invalid" in md
    assert "too small" in md and "English" not in md.split("## Limits")[1].split("## ")[0]
    assert "ℓ* = 12 of 24" in md and "| **high** | pooled | 10 | 0.950 |" in md
    assert "![asr_by_lang](asr_by_lang.png)" in md and "Gate firing rate" in md
    for png in ("asr_by_lang.png", "verdicts_by_lang.png", "over_refusal_by_lang.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_table_numbers(built):
    out, _, _ = built
    t = json.loads((out / "paper_table.json").read_text("utf-8"))
    assert t["columns"] == ["en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv", "avg"]
    assert [r["name"] for r in t["rows"]] == ["base", "aligned", "aligned+gate"]
    base, aligned = t["rows"][0]["asr"], t["rows"][1]["asr"]
    assert (base["en"], base["zh"], base["th"], base["avg"]) == (50.0, 25.0, 25.0, 33.33)
    assert (aligned["en"], aligned["zh"], aligned["th"], aligned["avg"]) == (0.0, 25.0, 0.0, 8.33)
    assert base["it"] is None and base["jv"] is None and set(base) == set(t["columns"])


def test_html_is_self_contained_and_escaped(built):
    out, html_path, _ = built
    page = html_path.read_text("utf-8")
    assert page.count("<script") == 1 and "alert(" in page  # the data is shown, as text only
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page and XSS not in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    assert "because &lt;b&gt;unsafe&lt;/b&gt;" in page and "Report &lt;b&gt;test&lt;/b&gt;" in page
    assert "Notes with &lt;i&gt;markup&lt;/i&gt; &amp; more" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page) and "<link" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img[^>]* src="([^"]+)"', page))
    assert len(re.findall(r'<img[^>]* src="data:image/png', page)) == 3  # the 3 charts
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert 'id="asr-table"' in page and "English query 1" in page and page.count('class="sample"') == 3 * 16
    second = (html_path.parent.parent / "out2" / "report.html").read_text("utf-8")
    assert len(re.findall(r'<img[^>]* src="data:image/png', second)) == 5  # + the locate and SSI plots
    assert (html_path.parent.parent / "out2" / "locate.png").exists()


def test_config_and_input_errors(tmp_path, built):
    _, _, root = built
    with pytest.raises(ConfigError, match="names"):
        ReportConfig(runs=["a", "b"], names=["x"])
    with pytest.raises(ConfigError, match="at least one"):
        ReportConfig(runs=[])
    with pytest.raises(ArtifactError, match="summary.json"):
        report(ReportConfig(runs=[str(tmp_path)], out=str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="distinct"):
        report(ReportConfig(runs=[str(root / "base"), str(root / "base")], out=str(tmp_path / "o")))
    path = report(ReportConfig(runs=[str(root / "base"), str(root / "base")], names=["one", "two"],
                               out=str(tmp_path / "o")))
    assert 'data-run="two"' in path.read_text("utf-8")


def test_every_field_has_flag_help():
    args = (ReportConfig.__doc__ or "").split("Args:", 1)[1]
    for f in dataclasses.fields(ReportConfig):
        assert f"\n        {f.name}: " in args, f.name


def _chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (CI installs it via the Makefile); "
                                                "the headless-browser check of report.html is skipped")
def test_html_opens_in_headless_chromium_without_js_errors(built, tmp_path):
    _, html_path, _ = built
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--dump-dom", html_path.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert 'id="asr-table"' in dom and cell(2, 4).split(" ")[0] in dom  # the rendered table
    assert 'data-viewer="ready"' in dom and "Showing 48 of 48 matching samples (48 in all)" in dom  # the JS ran
    assert dom.count("<script") == 1 and "&lt;script&gt;" in dom  # the data stayed text
    assert "Uncaught" not in res.stderr, res.stderr[-2000:]
    assert "Refused to" not in res.stderr, res.stderr[-2000:]  # the CSP hashes match the inline CSS and JS

"""Benchmark: the evaluate stage's batched generation + judging vs a one-by-one loop.

Same prompts (the first ``--per_lang`` built-in harmful prompts of each ``--langs``
language), same process, greedy decoding, the default ``refusal`` judge:

(a) batched, as :func:`lasa.evaluate.evaluate` does it: every prompt through
    :class:`lasa.gate.GatedGenerator` in length-grouped batches of ``--batch_size``, then
    one judge call per ``--judge_batch`` answers;
(b) one by one: generate one prompt (batch of 1), judge its answer, next prompt.

EOS is ignored by default so every answer has exactly ``--new_tokens`` tokens in both
designs (``--keep_eos`` to stop at EOS; greedy decoding gives both designs the same
answers either way).  The one-by-one loop stops after ``--max_seconds`` and its
throughput is measured on the prompts it finished, so the runtime stays bounded.
Printed: prompts/s of each design, the time split generate / judge, the ratio (a)/(b),
and how many verdicts agree between the two designs.

    python bench/bench_eval.py                    # tiny random model (seconds)
    python bench/bench_eval.py --model embedded   # the embedded Qwen2.5-0.5B (minutes on CPU)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lasa.data import load_prompts  # noqa: E402
from lasa.gate import GatedGenerator  # noqa: E402
from lasa.judges import JudgeInput, get_judge  # noqa: E402
from lasa.langs import parse_langs  # noqa: E402
from lasa.models import load_model  # noqa: E402

log = logging.getLogger("bench_eval")


def tiny_model():
    """The random tiny Qwen2 of the test suite, a bit larger (8 layers, d=128), built in memory."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny, build_tokenizer

    return build_tiny("qwen2", build_tokenizer(), layers=8, hidden=128)


def batched(gen: GatedGenerator, judge, prompts: list[str], langs: list[str], args) -> dict[str, Any]:
    t0 = time.perf_counter()
    outs = gen.generate(prompts, langs, max_new_tokens=args.new_tokens, batch_size=args.batch_size)
    t1 = time.perf_counter()
    items = [JudgeInput(p, o.response, lg, "harmful") for p, o, lg in zip(prompts, outs, langs)]
    verdicts = []
    for i in range(0, len(items), args.judge_batch):
        verdicts += judge.judge(items[i:i + args.judge_batch])
    t2 = time.perf_counter()
    return {"n": len(prompts), "generate_s": t1 - t0, "judge_s": t2 - t1, "total_s": t2 - t0,
            "tokens": sum(o.new_tokens for o in outs), "verdicts": [v.verdict for v in verdicts]}


def one_by_one(gen: GatedGenerator, judge, prompts: list[str], langs: list[str], args) -> dict[str, Any]:
    t_gen = t_judge = 0.0
    tokens, verdicts = 0, []
    start = time.perf_counter()
    for p, lg in zip(prompts, langs):
        t0 = time.perf_counter()
        o = gen.generate([p], [lg], max_new_tokens=args.new_tokens, batch_size=1)[0]
        t1 = time.perf_counter()
        verdicts.append(judge.judge([JudgeInput(p, o.response, lg, "harmful")])[0].verdict)
        t2 = time.perf_counter()
        t_gen, t_judge, tokens = t_gen + t1 - t0, t_judge + t2 - t1, tokens + o.new_tokens
        if t2 - start > args.max_seconds and len(verdicts) < len(prompts):
            log.warning("one-by-one loop stopped after %d of %d prompts (--max_seconds %s)", len(verdicts),
                        len(prompts), args.max_seconds)
            break
    return {"n": len(verdicts), "generate_s": t_gen, "judge_s": t_judge, "total_s": t_gen + t_judge,
            "tokens": tokens, "verdicts": verdicts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (random, built here) | embedded | a path or hub name")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--langs", default="en,zh,ar,sw", help="comma-separated ISO 639-1 codes")
    ap.add_argument("--per_lang", type=int, default=4, help="prompts per language")
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--judge", default="refusal", help="judge name (refusal needs no model)")
    ap.add_argument("--judge_batch", type=int, default=64)
    ap.add_argument("--keep_eos", action="store_true", help="stop at EOS (answers may then differ in length)")
    ap.add_argument("--max_seconds", type=float, default=120.0, help="time bound of the one-by-one loop")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus and torch.get_num_threads() > 1:
        log.warning("load average %.1f on %d CPUs: torch's %d threads will contend with other processes and "
                    "distort the timings; consider --threads 1", load, cpus, torch.get_num_threads())
    langs = list(parse_langs(args.langs) or [])
    recs = load_prompts("builtin:harmful", langs=langs)
    recs = [r for lg in langs for r in [x for x in recs if x.lang == lg][: args.per_lang]]
    prompts, plangs = [r.prompt for r in recs], [r.lang for r in recs]
    t = time.perf_counter()
    lm = tiny_model() if args.model == "tiny" else load_model(args.model, device=args.device, dtype=args.dtype)
    log.info("model %s loaded in %.1fs; %d prompts (%s x %d), %d new tokens, batch %d", lm.name,
             time.perf_counter() - t, len(prompts), ",".join(langs), args.per_lang, args.new_tokens, args.batch_size)
    gen = GatedGenerator(lm, None)
    if not args.keep_eos:
        gen.eos = [-1]  # never produced: every answer decodes exactly --new_tokens tokens
    judge = get_judge(args.judge)
    gen.generate(prompts[:2], plangs[:2], max_new_tokens=4, batch_size=2)  # warm-up (kernels, lexicon, langid)
    judge.judge([JudgeInput(prompts[0], "Sure, here is an answer.", plangs[0], "harmful")])
    a = batched(gen, judge, prompts, plangs, args)
    b = one_by_one(gen, judge, prompts, plangs, args)
    agree = sum(x == y for x, y in zip(a["verdicts"], b["verdicts"]))
    rows = []
    for name, r in (("batched", a), ("one-by-one", b)):
        r["prompts_per_s"] = r["n"] / r["total_s"]
        r["tokens_per_s"] = r["tokens"] / r["generate_s"]
        rows.append(f"{name:<11} {r['n']:>7} {r['total_s']:>9.2f} {r['generate_s']:>9.2f} {r['judge_s']:>8.3f} "
                    f"{r['prompts_per_s']:>10.2f} {r['tokens_per_s']:>9.1f}")
    ratio = a["prompts_per_s"] / b["prompts_per_s"]
    print(f"model {lm.name}, device {lm.device}, {len(prompts)} prompts, {args.new_tokens} new tokens, "
          f"batch {args.batch_size}, judge {args.judge}")
    print(f"{'design':<11} {'prompts':>7} {'total s':>9} {'gen s':>9} {'judge s':>8} {'prompts/s':>10} {'tok/s':>9}")
    print("\n".join(rows))
    print(f"ratio batched / one-by-one: {ratio:.2f}x prompts/s; verdicts agree on {agree}/{b['n']} prompts")
    if args.json:
        res = {"model": lm.name, "args": vars(args), "batched": a, "one_by_one": b, "ratio": ratio, "agree": agree}
        Path(args.json).write_text(json.dumps(res, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

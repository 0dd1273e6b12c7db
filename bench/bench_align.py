"""Benchmark: one KTO training step, lasa's own trainer vs a plain TRL ``KTOTrainer``.

Same model (a small Qwen2-architecture config with random weights, or ``--model PATH``),
same LoRA adapter (blocks above ``--freeze`` only), same unpaired data, batch size, learning
rate and beta.  Each side runs in its own subprocess (clean allocator, fair peak memory) for
``--steps`` optimizer steps after one warm-up step.  Reported per side: training tokens/s
(non-pad tokens of the main sequences) and peak memory during training (CUDA:
``max_memory_allocated``; CPU: peak RSS sampled every 2 ms minus the RSS before the
trainer is built), then the ratios ours / TRL.

    python bench/bench_align.py                          # CPU, seconds
    python bench/bench_align.py --hidden 512 --layers 8 --vocab 32000 --batch_size 8 --steps 5
    python bench/bench_align.py --device cuda --model /path/to/Qwen2.5-0.5B-Instruct
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

PROMPTS = ["How do I bake bread at home?", "Comment faire du pain?", "如何在家烤面包？", "Come posso cuocere il pane?",
           "Làm thế nào để nướng bánh mì?", "كيف أخبز الخبز في المنزل؟", "집에서 빵을 굽는 방법은?",
           "Ninawezaje kuoka mkate nyumbani?"]
GOOD = "I cannot help with that request. Sorry. "
BAD = "Here is a recipe: flour, water, salt, yeast. "


def rows(n_rep: int) -> list[dict]:
    out = []
    for i, p in enumerate(PROMPTS):
        out.append({"prompt": [{"role": "user", "content": p}],
                    "completion": [{"role": "assistant", "content": (GOOD if i % 2 == 0 else BAD) * n_rep}],
                    "label": i % 2 == 0})
    return out


class Peak:
    """Peak memory while running: CUDA allocator peak, or sampled RSS on CPU."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak, self._stop = cuda, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.rss()
            self.peak = self.base
            self._t = threading.Thread(target=self._sample, daemon=True)
            self._t.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._t.join()
            self.peak = max(self.peak, self.rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def build(a):
    import torch

    from lasa.models import load_model, wrap_model

    if a.model != "tiny":
        return load_model(a.model, device=a.device, dtype="float32" if a.device == "cpu" else "auto")
    from conftest import build_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=max(a.vocab, len(tok)), hidden_size=a.hidden, intermediate_size=a.hidden * 2,
                      num_hidden_layers=a.layers, num_attention_heads=4, num_key_value_heads=2, head_dim=a.hidden // 4,
                      max_position_embeddings=2048, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return wrap_model(Qwen2ForCausalLM(cfg).eval().to(a.device), tok, "bench-qwen2")


def run_ours(a, lm, data: Path, work: Path) -> dict:
    from lasa.align import AlignConfig, align

    cfg = AlignConfig(data=str(data), out=str(work / "ours"), z_source="source", benign_condition_rate=0.0,
                      freeze_upto=a.freeze, batch_size=a.batch_size, max_steps=a.steps + 1, lr=1e-4, beta=0.1,
                      lora_r=16, lora_alpha=32, lora_dropout=0.0, lr_scheduler="constant", warmup_ratio=0.0,
                      save_every=10**6, max_length=a.max_length, device=a.device, resume=False)
    with Peak(a.device.startswith("cuda")) as pk:
        res = align(cfg, lm=lm)
    h = res["history"][1:]
    return {"tokens_per_s": sum(x["tokens"] for x in h) / sum(x["seconds"] for x in h), "peak_mib": pk.mib,
            "step_s": sum(x["seconds"] for x in h) / len(h), "loss_first": res["history"][0]["loss"]}


def run_trl(a, lm, data: Path, work: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import KTOConfig, KTOTrainer

    from lasa.align import block_linear_names

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if a.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    ds = Dataset.from_list([json.loads(x) for x in data.read_text().splitlines()])
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=block_linear_names(lm),
                          layers_to_transform=list(range(a.freeze, lm.n_layers)), layers_pattern="layers",
                          task_type="CAUSAL_LM")
    args = KTOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=a.batch_size, max_steps=a.steps + 1,
                     learning_rate=1e-4, beta=0.1, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1,
                     save_strategy="no", report_to=[], use_cpu=a.device == "cpu", bf16=a.device.startswith("cuda"),
                     max_length=a.max_length, dataset_num_proc=None, seed=0, disable_tqdm=True)
    with Peak(a.device.startswith("cuda")) as pk:
        tr = KTOTrainer(model=lm.model, args=args, train_dataset=ds, processing_class=lm.tokenizer,
                        peft_config=peft_cfg, callbacks=[Clock()])
        tokens0 = tr._total_train_tokens
        tr.train()
    total_tokens = tr._total_train_tokens - tokens0
    first_loss = next((x["loss"] for x in tr.state.log_history if "loss" in x), None)
    per_step = total_tokens / len(times)  # the same data every step: equal-sized batches
    h = times[1:]
    return {"tokens_per_s": per_step * len(h) / sum(h), "peak_mib": pk.mib, "step_s": sum(h) / len(h),
            "loss_first": first_loss}


def child(a) -> None:
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    lm = build(a)
    data = work / "data.jsonl"
    res = (run_ours if a.side == "ours" else run_trl)(a, lm, data, work)
    print("RESULT " + json.dumps(res))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (a random Qwen2 config) or a model path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary size of the random model (LM-head cost)")
    ap.add_argument("--freeze", type=int, default=2, help="l*: LoRA only on blocks above it")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--rep", type=int, default=3, help="completion length: the answer text repeated N times")
    ap.add_argument("--max_length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared CPUs)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per side")
    ap.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.side:
        child(a)
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(a.rep)))
        base = [x for x in (argv if argv is not None else sys.argv[1:])]
        for side in ("ours", "trl"):
            t = time.time()
            p = subprocess.run([sys.executable, __file__, *base, "--side", side, "--work", work], capture_output=True,
                               text=True, timeout=a.timeout, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if p.returncode != 0 or line is None:
                sys.stderr.write(p.stderr[-3000:])
                raise SystemExit(f"{side} failed (rc {p.returncode})")
            results[side] = json.loads(line[7:]) | {"wall_s": round(time.time() - t, 1)}
    o, t = results["ours"], results["trl"]
    print(f"model {a.model} hidden={a.hidden} layers={a.layers} vocab={a.vocab} device={a.device} "
          f"batch={a.batch_size} steps={a.steps} threads={a.threads}")
    print(f"{'':6} {'tokens/s':>10} {'step s':>8} {'peak MiB':>9} {'loss@1':>8}")
    for name, r in (("lasa", o), ("TRL", t)):
        print(f"{name:6} {r['tokens_per_s']:10.1f} {r['step_s']:8.3f} {r['peak_mib']:9.1f} "
              f"{(r['loss_first'] if r['loss_first'] is not None else float('nan')):8.4f}")
    print(f"ratio lasa/TRL: tokens/s x{o['tokens_per_s'] / t['tokens_per_s']:.2f}, "
          f"peak memory x{o['peak_mib'] / max(t['peak_mib'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

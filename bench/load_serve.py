"""Load test of ``lasa serve``: N concurrent clients for a bounded time, loopback only.

By default it builds a tiny random model and SSI in a temp dir, starts
``python -m lasa.cli serve`` on 127.0.0.1 with a free port, and stops it (SIGINT,
graceful) at the end.  ``--url http://127.0.0.1:PORT`` targets a running server
instead (127.0.0.1 / localhost only).  Each client thread (httpx) loops until
the deadline, mixing valid requests (some streamed) with malformed JSON,
oversized bodies and too-large ``max_tokens``.

Reports requests/s, p50/p95 latency of the valid requests, status counts per
request kind, 5xx and transport failures.  Exit status 1 on any 5xx, transport
failure or unexpected status (429 is accepted for valid requests: back-pressure).

    python bench/load_serve.py                     # tiny model, 8 clients, 20 s
    python bench/load_serve.py --clients 16 --duration 10
    python bench/load_serve.py --url http://127.0.0.1:8000
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["How do I bake bread at home?", "Comment faire du pain?", "如何在家烤面包？", "Come posso cuocere il pane?",
           "Làm thế nào để nướng bánh mì?", "كيف أخبز الخبز في المنزل؟", "집에서 빵을 굽는 방법은?",
           "Ninawezaje kuoka mkate nyumbani?"]
EXPECTED = {"valid": {200, 429}, "stream": {200, 429}, "malformed": {400}, "oversized": {413}, "too_many_tokens": {400}}
BODY_LIMIT = 65_536


def make_tiny(tmp: Path) -> tuple[str, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "src"))
    from conftest import build_tiny, build_tokenizer

    from lasa.ssi_model import SSI

    tok = build_tokenizer()
    lm = build_tiny("qwen2", tok, layers=4, hidden=64)
    lm.model.save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    ssi = SSI.create(lm.hidden_size, layer=2, fingerprint=lm.fingerprint(upto_layer=2))
    ssi.save(tmp / "ssi")
    return str(tmp / "model"), str(tmp / "ssi")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, max_tokens: int, threads: int) -> tuple[subprocess.Popen, str]:
    model, ssi = make_tiny(tmp)
    port = free_port()
    cmd = [sys.executable, "-m", "lasa.cli", "--log_level", "WARNING", "serve", "--model", model, "--ssi", ssi,
           "--device", "cpu", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
           "--max_body_bytes", str(BODY_LIMIT), "--max_tokens_limit", str(max(64, max_tokens)),
           "--max_queue", "32", "--request_timeout_s", "60"]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                        "OMP_NUM_THREADS": str(threads)}
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; log: {tmp / 'server.log'}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become healthy within 120 s")


def one_request(client: httpx.Client, kind: str, rng: random.Random, max_tokens: int) -> int:
    msg = {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}], "max_tokens": max_tokens, "temperature": 0}
    if kind == "malformed":
        return client.post("/v1/chat/completions", content=b'{"messages": [{"role": "us',
                           headers={"content-type": "application/json"}).status_code
    if kind == "oversized":
        msg["messages"][0]["content"] = "x" * (2 * BODY_LIMIT)
    if kind == "too_many_tokens":
        msg["max_tokens"] = 1_000_000
    if kind == "stream":
        with client.stream("POST", "/v1/chat/completions", json=msg | {"stream": True}) as r:
            lines = list(r.iter_lines())
            if r.status_code == 200 and "data: [DONE]" not in lines:
                return 599  # a stream that did not finish
            return r.status_code
    return client.post("/v1/chat/completions", json=msg).status_code


def client_loop(base: str, deadline: float, seed: int, max_tokens: int, bad_share: float, out: list) -> None:
    rng = random.Random(seed)
    kinds_bad = ["malformed", "oversized", "too_many_tokens"]
    with httpx.Client(base_url=base, timeout=90) as client:
        while time.monotonic() < deadline:
            kind = rng.choice(kinds_bad) if rng.random() < bad_share else ("stream" if rng.random() < 0.2 else "valid")
            t = time.perf_counter()
            try:
                status = one_request(client, kind, rng, max_tokens)
            except httpx.HTTPError as exc:
                status = f"failure:{type(exc).__name__}"
            out.append((kind, status, time.perf_counter() - t))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="a running server on 127.0.0.1 (default: start one on a tiny model)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    ap.add_argument("--max_tokens", type=int, default=16)
    ap.add_argument("--bad_share", type=float, default=0.2, help="share of malformed/oversized/over-limit requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server_threads", type=int, default=1,
                    help="torch threads of the server it starts (1: a tiny model gains nothing from more, and "
                         "spinning OpenMP threads hurt on a shared machine)")
    a = ap.parse_args(argv)
    if not 0 < a.duration <= 600 or not 1 <= a.clients <= 256:
        ap.error("--duration must be in (0, 600] and --clients in [1, 256]")
    proc, tmp = None, Path(tempfile.mkdtemp(prefix="lasa-load-"))
    if a.url:
        u = urlparse(a.url)
        if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost"):
            ap.error("--url must be http://127.0.0.1:PORT (this script only talks to the loopback interface)")
        base = f"http://127.0.0.1:{u.port or 80}"
    else:
        proc, base = start_server(tmp, a.max_tokens, a.server_threads)
    results: list = []
    try:
        deadline = time.monotonic() + a.duration
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(base, deadline, a.seed + i, a.max_tokens, a.bad_share,
                                                              results), daemon=True) for i in range(a.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(a.duration + 120)
        wall = time.perf_counter() - t0
        health = httpx.get(base + "/health", timeout=10).json()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # graceful: in-flight requests finish
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    by_kind = {k: Counter() for k in EXPECTED}
    for kind, status, _ in results:
        by_kind[kind][status] += 1
    lat = sorted(t for k, s, t in results if k in ("valid", "stream") and s == 200)
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: float("nan"))
    n5xx = sum(1 for _, s, _ in results if isinstance(s, int) and s >= 500)
    fails = sum(1 for _, s, _ in results if isinstance(s, str))
    unexpected = sum(1 for k, s, _ in results if isinstance(s, int) and s < 500 and s not in EXPECTED[k])
    print(f"\nserver {base}  clients {a.clients}  duration {wall:.1f} s  max_tokens {a.max_tokens}")
    print(f"requests {len(results)}  ({len(results) / wall:.1f} req/s)   ok answers {len(lat)} "
          f"({len(lat) / wall:.1f}/s)   latency p50 {pct(0.5):.0f} ms  p95 {pct(0.95):.0f} ms")
    for k, c in by_kind.items():
        print(f"  {k:<16} " + "  ".join(f"{s}: {n}" for s, n in sorted(c.items(), key=str)))
    mean_batch = health.get("served", 0) / max(1, health.get("batches", 0))
    print(f"5xx {n5xx}   transport failures {fails}   unexpected statuses {unexpected}   "
          f"server batches {health.get('batches')} (mean size {mean_batch:.1f})")
    print(f"health {json.dumps(health)}")
    bad = bool(n5xx or fails or unexpected or not lat or (proc is not None and proc.returncode != 0))
    if proc is not None:
        print(f"server exit status {proc.returncode}" + (f" (log kept: {tmp / 'server.log'})" if bad else ""))
    if not bad:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

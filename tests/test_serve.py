"""The OpenAI-compatible server, over real HTTP (uvicorn on 127.0.0.1, httpx clients)."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from lasa.gate import GatedGenerator
from lasa.serve import BatchWorker, Job, QueueFull, ServeConfig, create_app
from lasa.ssi_model import SSI

PROMPTS = ["How do I bake bread at home?", "Hi", "如何在家烤面包？", "Comment faire du pain?",
           "Ninawezaje kuoka mkate nyumbani?", "Come posso cuocere il pane?", "Làm thế nào để nướng bánh mì?",
           "Piye carane nggawe roti ing omah?"]
URL = "/v1/chat/completions"


class Probe:
    """Wraps a generator's ``generate_ids``: records batch sizes and can hold the worker."""

    def __init__(self, gen: GatedGenerator):
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self._orig = gen.generate_ids
        gen.generate_ids = self  # the worker calls gen.generate_ids(...)

    def __call__(self, seqs, *a, **k):
        self.release.wait(30)
        self.sizes.append(len(seqs))
        return self._orig(seqs, *a, **k)


@contextmanager
def running(app):
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    t0 = time.monotonic()
    while not server.started:
        assert th.is_alive() and time.monotonic() - t0 < 30, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        th.join(60)
        sock.close()


def wait_for(base: str, key: str, n: int, timeout: float = 60.0) -> None:
    """Poll /health until ``health[key] >= n``."""
    t0 = time.monotonic()
    while httpx.get(base + "/health", timeout=30).json()[key] < n:
        assert time.monotonic() - t0 < timeout, f"/health {key} never reached {n}"
        time.sleep(0.02)


def make(tiny_lm, **kw):
    ssi = SSI.create(tiny_lm.hidden_size, layer=2)
    ssi.threshold = 0.515  # near the random SSI's scores: some prompts fire, some do not
    gen = GatedGenerator(tiny_lm, ssi)
    cfg = ServeConfig(ssi="unused", **({"max_body_bytes": 4096, "max_tokens_limit": 64} | kw))
    return gen, create_app(gen, cfg)


def body(prompt: str, **kw) -> dict:
    return {"model": "x", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "temperature": 0} | kw


@pytest.fixture(scope="module")
def server(tiny_lm):
    gen, app = make(tiny_lm, model_name="tiny-served")
    probe = Probe(gen)
    with running(app) as (base, _):
        yield base, gen, probe


def test_valid_request_has_openai_shape_and_lasa_field(server):
    base, gen, _ = server
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "earlier turn"},
            {"role": "user", "content": [{"type": "text", "text": PROMPTS[0]}]}]
    r = httpx.post(base + URL, json={"messages": msgs, "max_tokens": 8, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["object"] == "chat.completion" and d["id"].startswith("chatcmpl-") and d["model"] == "tiny-served"
    (ch,) = d["choices"]
    assert ch["index"] == 0 and ch["message"]["role"] == "assistant" and ch["finish_reason"] in ("stop", "length")
    assert set(d["lasa"]) == {"p_harmful", "gated", "layer"} and d["lasa"]["layer"] == 2
    assert 0.0 <= d["lasa"]["p_harmful"] <= 1.0 and isinstance(d["lasa"]["gated"], bool)
    ref = gen.generate([PROMPTS[0]], systems=["Be brief."], max_new_tokens=8)[0]
    assert ch["message"]["content"] == ref.response and d["lasa"]["gated"] == ref.gated
    u = d["usage"]
    assert u["prompt_tokens"] == ref.prompt_tokens and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_streaming(server):
    base, _, _ = server
    plain = httpx.post(base + URL, json=body(PROMPTS[1], max_tokens=20), timeout=60).json()
    events = []
    with httpx.stream("POST", base + URL, json=body(PROMPTS[1], max_tokens=20, stream=True), timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "lasa" in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["lasa"] == plain["lasa"]


@pytest.mark.parametrize("content,status,code", [
    (b'{"messages": [', 400, "invalid_json"),
    (b"\xff\xfe not json", 400, "invalid_json"),
    (json.dumps({"messages": "hi"}).encode(), 422, "invalid_type"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}).encode(), 422, "invalid_type"),
    (json.dumps(body("x", max_tokens=10_000)).encode(), 400, "max_tokens_exceeded"),
    (json.dumps({"messages": [{"role": "system", "content": "x"}]}).encode(), 400, None),
    (json.dumps(body("x", n=3)).encode(), 400, None),
    (json.dumps(body("y" * 5000)).encode(), 413, "body_too_large"),
])
def test_bad_requests_get_clear_openai_errors(server, content, status, code):
    base, _, _ = server
    r = httpx.post(base + URL, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and "Traceback" not in r.text and err["code"] == code


def test_prompt_token_limit_and_unknown_route(tiny_lm):
    _, app = make(tiny_lm, max_prompt_tokens=10)
    with running(app) as (base, _):
        r = httpx.post(base + URL, json=body(PROMPTS[0]), timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = httpx.get(base + "/v1/nothing", timeout=30)
        assert r.status_code == 404 and "error" in r.json()


def test_concurrent_requests_batch_and_equal_sequential(server):
    base, _, probe = server
    seq = [httpx.post(base + URL, json=body(p), timeout=60).json()["choices"][0]["message"]["content"] for p in PROMPTS]
    probe.sizes.clear()
    probe.release.clear()  # hold the worker so that all 8 requests are waiting together
    blocker = ThreadPoolExecutor(1).submit(httpx.post, base + URL, json=body("hold"), timeout=60)
    wait_for(base, "running", 1)  # the worker holds the blocker
    with ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(httpx.post, base + URL, json=body(p), timeout=60) for p in PROMPTS]
        wait_for(base, "queue", 8)
        probe.release.set()
        res = [f.result() for f in futs]
    assert blocker.result().status_code == 200
    assert [r.status_code for r in res] == [200] * 8
    assert [r.json()["choices"][0]["message"]["content"] for r in res] == seq
    assert probe.sizes == [1, 8]  # the blocker alone, then all eight in one generate call


def test_queue_full_is_429_and_timeout_is_504(tiny_lm):
    gen, app = make(tiny_lm, max_queue=1, max_batch=1, request_timeout_s=3.0)
    probe = Probe(gen)
    probe.release.clear()
    with running(app) as (base, _), ThreadPoolExecutor(2) as ex:
        a = ex.submit(httpx.post, base + URL, json=body(PROMPTS[0]), timeout=60)
        wait_for(base, "running", 1)  # the worker holds request a
        b = ex.submit(httpx.post, base + URL, json=body(PROMPTS[1]), timeout=60)
        wait_for(base, "queue", 1)
        c = httpx.post(base + URL, json=body(PROMPTS[2]), timeout=60)
        assert c.status_code == 429 and c.json()["error"]["code"] == "queue_full"
        ra, rb = a.result(), b.result()  # the held worker never answers within 3 s
        assert ra.status_code == rb.status_code == 504 and ra.json()["error"]["code"] == "timeout"
        probe.release.set()
        ok = httpx.post(base + URL, json=body(PROMPTS[3]), timeout=60)
        assert ok.status_code == 200  # the worker survived; the timed-out b was dropped, not run
        assert probe.sizes == [1, 1]


def test_a_timed_out_job_frees_its_queue_slot_at_once(tiny_lm):
    w = BatchWorker(GatedGenerator(tiny_lm, None), max_batch=1, max_queue=2)  # not started: jobs stay queued
    a, b, twin = Job([1, 2], (4, 0.0, 1.0, 0)), Job([3], (4, 0.0, 1.0, 0)), Job([1, 2], (4, 0.0, 1.0, 0))
    w.submit(a)
    w.submit(b)
    with pytest.raises(QueueFull):
        w.submit(twin)
    w.discard(a)
    w.submit(twin)  # a's slot is free; twin equals a field by field but is another job
    assert a.future.cancelled() and w.waiting == 2
    w.discard(a)  # twice is harmless and removes nothing else
    assert w.waiting == 2 and not twin.future.cancelled()


def test_graceful_shutdown_finishes_in_flight_requests(tiny_lm):
    gen, app = make(tiny_lm)
    probe = Probe(gen)
    probe.release.clear()
    with running(app) as (base, server), ThreadPoolExecutor(1) as ex:
        fut = ex.submit(httpx.post, base + URL, json=body(PROMPTS[0]), timeout=60)
        wait_for(base, "running", 1)
        server.should_exit = True  # like SIGINT: stop accepting, finish what is in flight
        time.sleep(0.3)
        probe.release.set()
        r = fut.result()
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
    assert not app.state.worker.is_alive()


def test_health_and_models(server):
    base, _, _ = server
    h = httpx.get(base + "/health", timeout=10).json()
    assert h["status"] == "ok" and h["gate"] is True and h["layer"] == 2 and h["model"] == "tiny-served"
    m = httpx.get(base + "/v1/models", timeout=10).json()
    assert m["object"] == "list" and m["data"][0]["id"] == "tiny-served" and m["data"][0]["object"] == "model"


def test_config_validation():
    from lasa.errors import ConfigError

    with pytest.raises(ConfigError):
        ServeConfig(gate=True)
    with pytest.raises(ConfigError):
        ServeConfig(max_batch=0)
    with pytest.raises(ConfigError):
        ServeConfig(default_max_tokens=600, max_tokens_limit=512)


def test_internal_error_is_a_generic_500_and_the_worker_survives(tiny_lm):
    gen, app = make(tiny_lm)
    orig, calls = gen.generate_ids, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("secret internal detail")
        return orig(*a, **k)

    gen.generate_ids = flaky
    with running(app) as (base, _):
        r = httpx.post(base + URL, json=body(PROMPTS[0]), timeout=60)
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "secret" not in r.text and "Traceback" not in r.text
        assert httpx.post(base + URL, json=body(PROMPTS[0]), timeout=60).status_code == 200

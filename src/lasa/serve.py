"""An OpenAI-compatible HTTP server over the gated model (FastAPI + uvicorn).

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``.

Chat requests use the *last user message* and the first system message (if any)
as the prompt; earlier turns are ignored, because the SSI is trained on single
prompts.  Every completion carries a documented extension field::

    "lasa": {"p_harmful": 0.93 | null, "gated": true, "layer": 14 | null}

``p_harmful`` is the SSI's P(harmful) of the prompt (null without a gate),
``gated`` says whether the conditioning text was appended, ``layer`` is l*.

Concurrency: a single background worker thread owns the model.  Requests are
validated and tokenised in the event loop's thread pool, then queued (bounded:
a full queue answers 429).  The worker takes the oldest request plus up to
``max_batch - 1`` waiting requests with the same sampling parameters and runs
them as one :meth:`GatedGenerator.generate_ids` call (greedy results do not
depend on the batch; sampled ones depend on the seed *and* the batch).  A
request waits at most ``request_timeout_s`` (queue + generation) and then gets
504.  On shutdown uvicorn stops accepting connections and lets in-flight
requests finish; the worker then drains what is queued and exits.

Sampling defaults follow OpenAI: ``temperature`` 1.0 and ``top_p`` 1.0 when a
request gives none (send ``"temperature": 0`` for greedy answers).

Streaming (``"stream": true``) uses server-sent events (``data: {...}\\n\\n``,
then ``data: [DONE]``).  The answer is generated first and then emitted in
chunks, so streaming changes the wire format, not the time to first token.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``:
400 malformed JSON or a value over a limit, 413 body too large, 422 wrong
types, 429 queue full, 503 shutting down, 504 timeout; internal errors are
logged here and answered with a generic 500 (never a stack trace).
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request  # module level: FastAPI resolves handler annotations here

from .configs import ModelArgs, check_range, check_types
from .errors import ConfigError, LasaError
from .gate import GatedGenerator, GenOutput

log = logging.getLogger(__name__)


@dataclass
class ServeConfig(ModelArgs):
    """Serve the gated model over an OpenAI-compatible HTTP API.

    Args:
        ssi: SSI directory (from train-ssi); None serves the model without the gate.
        gate: Apply the gate (default: true when ssi is given).
        host: Interface to bind (127.0.0.1 = this machine only).
        port: TCP port.
        max_batch: Most waiting requests run together in one generation batch.
        max_queue: Most requests waiting for the model; beyond it the server answers 429.
        max_prompt_tokens: Longest accepted prompt, in chat-templated tokens (else 400).
        max_tokens_limit: Largest accepted max_tokens (else 400).
        default_max_tokens: max_tokens when a request gives none (default: min(256, max_tokens_limit)).
        request_timeout_s: Seconds a request may wait (queue + generation) before 504.
        max_body_bytes: Largest accepted request body (else 413).
        batch_wait_ms: How long the worker waits for more requests to fill a batch.
        model_name: Model id served in responses and /v1/models (default: the model's name).
        allow_fingerprint_mismatch: Use an SSI whose base-model fingerprint differs (warns).
    """

    ssi: str | None = None
    gate: bool | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 8
    max_queue: int = 64
    max_prompt_tokens: int = 2048
    max_tokens_limit: int = 512
    default_max_tokens: int | None = None
    request_timeout_s: float = 120.0
    max_body_bytes: int = 1_000_000
    batch_wait_ms: float = 5.0
    model_name: str | None = None
    allow_fingerprint_mismatch: bool = False

    def __post_init__(self):
        check_types(self)
        check_range("port", self.port, 0, 65535)
        for name in ("max_batch", "max_queue", "max_prompt_tokens", "max_tokens_limit", "default_max_tokens",
                     "max_body_bytes"):  # check_range ignores None
            check_range(name, getattr(self, name), 1)
        check_range("request_timeout_s", self.request_timeout_s, 0.001)
        check_range("batch_wait_ms", self.batch_wait_ms, 0.0, 10_000.0)
        if self.default_max_tokens is None:
            self.default_max_tokens = min(256, self.max_tokens_limit)
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError(f"default_max_tokens={self.default_max_tokens} exceeds max_tokens_limit="
                              f"{self.max_tokens_limit}")
        if self.gate is None:
            self.gate = self.ssi is not None
        if self.gate and not self.ssi:
            raise ConfigError("gate=true needs an SSI (--ssi DIR, from `lasa train-ssi`)")


# --- the worker ------------------------------------------------------------------------------

class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


@dataclass
class Job:
    ids: list[int]
    key: tuple  # (max_tokens, temperature, top_p, seed): only equal keys share a batch
    future: Future = field(default_factory=Future)


class BatchWorker(threading.Thread):
    """The one thread that runs the model: drains a bounded queue in same-parameter batches."""

    def __init__(self, generator: GatedGenerator, max_batch: int, max_queue: int, batch_wait_s: float = 0.005):
        super().__init__(name="lasa-serve-worker", daemon=True)
        self.gen, self.max_batch, self.max_queue, self.batch_wait_s = generator, max_batch, max_queue, batch_wait_s
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self.busy = 0  # requests in the batch now running
        self.batches = self.served = 0  # counters for /health

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stopping:
                raise ShuttingDown
            if len(self._jobs) >= self.max_queue:
                raise QueueFull
            self._jobs.append(job)
            self._cv.notify()

    def discard(self, job: Job) -> None:
        """Forget a queued job whose client got its answer already (504): it frees its queue slot now."""
        job.future.cancel()
        with self._cv:  # by identity: two equal requests are still two jobs
            for i, j in enumerate(self._jobs):
                if j is job:
                    del self._jobs[i]
                    break  # not found: already taken by the worker (which drops cancelled jobs) or done

    def stop(self) -> None:
        """Finish what is queued, then exit."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    def _take(self) -> list[Job] | None:
        with self._cv:
            self._cv.wait_for(lambda: self._jobs or self._stopping)
            if not self._jobs:
                return None  # stopping and drained
            deadline = time.monotonic() + self.batch_wait_s
            while len(self._jobs) < self.max_batch and not self._stopping:  # let a burst join this batch
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            first = self._jobs.popleft()
            batch, rest = [first], deque()
            while self._jobs:
                j = self._jobs.popleft()
                (batch if j.key == first.key and len(batch) < self.max_batch else rest).append(j)
            self._jobs = rest
        return [j for j in batch if j.future.set_running_or_notify_cancel()]  # drop timed-out ones

    def run(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            max_tokens, temperature, top_p, seed = batch[0].key
            self.busy = len(batch)
            try:
                outs = self.gen.generate_ids([j.ids for j in batch], max_new_tokens=max_tokens, temperature=temperature,
                                             top_p=top_p, seed=seed, batch_size=len(batch))
            except Exception as exc:  # reported to each request; the worker keeps serving
                log.exception("generation failed for a batch of %d", len(batch))
                for j in batch:
                    j.future.set_exception(exc)
            else:
                for j, o in zip(batch, outs):
                    j.future.set_result(o)
                self.batches, self.served = self.batches + 1, self.served + len(batch)
            finally:
                self.busy = 0


# --- request schema and errors -----------------------------------------------------------------

def _schemas():
    from pydantic import BaseModel, ConfigDict, Field

    class ContentPart(BaseModel):
        model_config = ConfigDict(extra="ignore")
        type: str
        text: str | None = None

    class Message(BaseModel):
        model_config = ConfigDict(extra="ignore")
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: str | list[ContentPart] | None = None

    class ChatRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        messages: list[Message] = Field(min_length=1)
        model: str | None = None
        max_tokens: int | None = Field(default=None, ge=1)
        max_completion_tokens: int | None = Field(default=None, ge=1)
        temperature: float | None = Field(default=None, ge=0.0, le=2.0)
        top_p: float | None = Field(default=None, gt=0.0, le=1.0)
        stream: bool = False
        seed: int | None = None
        n: int | None = None
        stop: str | list[str] | None = None

    return ChatRequest


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def _error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content if p.type in ("text", "input_text"))


def _prompt_of(messages) -> tuple[str, str | None]:
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ApiError(400, "messages must contain at least one message with role 'user'", param="messages")
    prompt = _text(users[-1].content)
    if not prompt.strip():
        raise ApiError(400, "the last user message is empty", param="messages")
    systems = [_text(m.content) for m in messages if m.role in ("system", "developer")]
    return prompt, (systems[0] if systems and systems[0].strip() else None)


async def _read_body(request, limit: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None and cl.isdigit() and int(cl) > limit:
        raise ApiError(413, f"request body of {cl} bytes exceeds the limit of {limit} bytes", code="body_too_large")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
    return bytes(buf)


# --- the app -----------------------------------------------------------------------------------

def create_app(generator: GatedGenerator, cfg: ServeConfig):
    """The FastAPI app; the worker thread starts and stops with the app's lifespan."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    ChatRequest = _schemas()
    model_id = cfg.model_name or generator.lm.name
    worker = BatchWorker(generator, cfg.max_batch, cfg.max_queue, cfg.batch_wait_ms / 1000.0)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        log.info("serving %s (gate %s, layer %s)", model_id, "on" if generator.gate else "off", generator.layer)
        try:
            yield
        finally:
            worker.stop()
            await run_in_threadpool(worker.join, cfg.request_timeout_s)

    app = FastAPI(title="lasa", description="OpenAI-compatible chat completions with the LASA gate.",
                  lifespan=lifespan)
    app.state.worker = worker

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(_error_body(exc.message, exc.type, exc.code, exc.param), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(_error_body("invalid request", "invalid_request_error", "invalid_type"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(_error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(_error_body("internal server error", "server_error"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "stopping" if worker.stopping else "ok", "model": model_id, "gate": generator.gate,
                "layer": generator.layer, "queue": worker.waiting, "running": worker.busy,
                "max_queue": cfg.max_queue, "batches": worker.batches, "served": worker.served}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "lasa"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await _read_body(request, cfg.max_body_bytes)
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None
        try:
            req = ChatRequest.model_validate(obj)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(x) for x in e.get("loc", ())) or "body"
            raise ApiError(422, f"invalid request: {where}: {e.get('msg')}", code="invalid_type", param=where) from None
        if req.n not in (None, 1):
            raise ApiError(400, "only n=1 is supported", param="n")
        if req.stop:
            raise ApiError(400, "stop sequences are not supported; the model stops at its end-of-turn token",
                           param="stop")
        max_tokens = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(400, f"max_tokens={max_tokens} exceeds this server's limit of {cfg.max_tokens_limit}",
                           param="max_tokens", code="max_tokens_exceeded")
        prompt, system = _prompt_of(req.messages)
        ids = (await run_in_threadpool(generator.encode, [prompt], [system]))[0]
        if len(ids) > cfg.max_prompt_tokens:
            raise ApiError(400, f"the prompt has {len(ids)} tokens; this server accepts at most "
                                f"{cfg.max_prompt_tokens}", param="messages", code="context_length_exceeded")
        temperature = 1.0 if req.temperature is None else req.temperature
        job = Job(ids, (max_tokens, temperature, 1.0 if req.top_p is None else req.top_p, req.seed or 0))
        try:
            worker.submit(job)
        except QueueFull:
            raise ApiError(429, "the server is busy (request queue full); retry later", "rate_limit_error",
                           "queue_full") from None
        except ShuttingDown:
            raise ApiError(503, "the server is shutting down", "server_error", "shutting_down") from None
        try:
            out: GenOutput = await asyncio.wait_for(asyncio.wrap_future(job.future), cfg.request_timeout_s)
        except asyncio.TimeoutError:
            worker.discard(job)
            raise ApiError(504, f"the request did not finish within {cfg.request_timeout_s} s", "server_error",
                           "timeout") from None
        except LasaError as exc:
            raise ApiError(400, str(exc)) from None
        return (StreamingResponse(_sse(out, model_id, generator.layer), media_type="text/event-stream")
                if req.stream else JSONResponse(_completion(out, model_id, generator.layer)))

    return app


def _lasa(out: GenOutput, layer: int | None) -> dict:
    return {"p_harmful": out.p_harmful, "gated": out.gated, "layer": layer}


def _usage(out: GenOutput) -> dict:
    return {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.new_tokens,
            "total_tokens": out.prompt_tokens + out.new_tokens}


def _completion(out: GenOutput, model_id: str, layer: int | None) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out.response},
                         "finish_reason": out.finish_reason, "logprobs": None}],
            "usage": _usage(out), "lasa": _lasa(out, layer)}


def _sse(out: GenOutput, model_id: str, layer: int | None, piece: int = 16):
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model_id, "lasa": _lasa(out, layer)}

    def event(delta: dict, finish: str | None = None, **extra) -> str:
        body = base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]} | extra
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    text = out.response
    for i in range(0, len(text), piece):
        yield event({"content": text[i: i + piece]})
    yield event({}, out.finish_reason, usage=_usage(out))
    yield "data: [DONE]\n\n"


def serve(cfg: ServeConfig) -> None:
    """Load the SSI and the model, validate them together, and run uvicorn until interrupted."""
    import uvicorn

    from .ssi_model import SSI

    ssi = SSI.load(cfg.ssi) if cfg.ssi else None
    lm = cfg.load()
    if ssi is not None:
        ssi.check_model(lm, allow_fingerprint_mismatch=cfg.allow_fingerprint_mismatch)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the server is reachable from other machines and has no authentication", cfg.host)
    app = create_app(GatedGenerator(lm, ssi, gate=bool(cfg.gate)), cfg)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=level if level in ("debug", "info", "warning") else "info",
                timeout_graceful_shutdown=int(cfg.request_timeout_s) + 5)

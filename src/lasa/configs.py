"""Shared pieces of the per-stage config dataclasses.

Each stage module defines one ``<Stage>Config`` dataclass; the CLI
(:mod:`lasa.cli`) is generated from them, so flags, YAML keys and the Python API
are the same names.  Validation happens in ``__post_init__`` so a bad value fails
before any model is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass
class ModelArgs:
    """Which model to load (``embedded`` = the bundled Qwen2.5-Coder-0.5B-Instruct).

    Args:
        model: Model to load: embedded, a local directory, a .gguf file, or a hub name.
        dtype: auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16.
        device: auto, cpu, cuda or cuda:N.
        gguf_file: GGUF file name inside the model directory.
        adapter: PEFT adapter directory merged into the model on load.
        trust_remote_code: Allow model code from the hub (off by default).
    """

    model: str = "embedded"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gguf_file: str | None = None
    adapter: str | None = None  # a PEFT adapter directory applied (merged) on load
    trust_remote_code: bool = False

    def load(self):
        from .models import load_model

        return load_model(self.model, dtype=self.dtype, device=self.device, gguf_file=self.gguf_file,
                          trust_remote_code=self.trust_remote_code, adapter=self.adapter)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def check_range(name: str, value, lo=None, hi=None) -> None:
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"{name}={value!r} is out of range {rng}")


def _matches(value, tp) -> bool:
    import types
    import typing

    if tp is typing.Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # no NaN
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True


def check_types(cfg) -> None:
    """Raise ConfigError when a field's value does not match its annotated type."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        tp = hints.get(f.name)
        if tp is not None and not _matches(v, tp):
            raise ConfigError(f"{type(cfg).__name__}.{f.name}={v!r}: expected {getattr(tp, '__name__', None) or tp}")

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
    """Which model to load (``embedded`` = the bundled Qwen2.5-Coder-0.5B-Instruct)."""

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

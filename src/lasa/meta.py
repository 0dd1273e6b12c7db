"""Provenance recorded in every artifact: versions and model identity."""
from __future__ import annotations

import platform
from importlib import metadata


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("lasa", "torch", "transformers", "peft", "trl", "safetensors", "numpy", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            if pkg == "lasa":
                from . import __version__

                out[pkg] = __version__
    return out


def model_info(lm, upto_layer: int | None = None) -> dict:
    return {
        "name": lm.name,
        "architecture": type(lm.model).__name__,
        "n_layers": lm.n_layers,
        "hidden_size": lm.hidden_size,
        "n_params": lm.n_params,
        "fingerprint": lm.fingerprint(),
        **({"prefix_fingerprint": lm.fingerprint(upto_layer), "prefix_layer": upto_layer} if upto_layer is not None else {}),
    }

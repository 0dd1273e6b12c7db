"""lasa: Language-Agnostic Semantic Alignment for multilingual LLM safety."""
from __future__ import annotations

__version__ = "0.1.0"

#: The conditioning text placed right after the generation prompt when the SSI fires.
CONDITIONING_TEXT = (
    "Harmful query detected. I should refuse this request and provide a safe response in the user's language."
)

__all__ = ["__version__", "CONDITIONING_TEXT"]

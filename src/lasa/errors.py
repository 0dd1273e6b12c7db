"""Exception hierarchy.  Every error lasa raises on purpose is a ``LasaError``:
the CLI prints its message (no stack trace) and exits with status 2."""
from __future__ import annotations


class LasaError(Exception):
    """Base class: a clear, user-facing error."""


class DataError(LasaError, ValueError):
    """A data file or record is malformed (names the file, the row and the fix)."""


class ConfigError(LasaError, ValueError):
    """A configuration value is unknown or out of range."""


class ArtifactError(LasaError):
    """An artifact (SSI, locate.json, ...) is missing, corrupted, or for another model."""


class ModelError(LasaError):
    """A model cannot be loaded or lacks what lasa needs (decoder layers, chat template)."""


class BackendUnavailable(LasaError):
    """An optional backend (vLLM, a judge endpoint, ...) is not installed or reachable."""

"""Small, safe file helpers: atomic writes, fsynced JSONL appends, strict readers.

Every artifact lasa writes goes through :func:`atomic_write_bytes` (temp file in
the same directory + ``os.replace``), so a kill never leaves a half-written file.
JSONL outputs are appended with :class:`JsonlWriter`, which fsyncs per flush, so
a kill loses at most the batch in flight.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import DataError, LasaError


def _wrap_os_error(path: Path, exc: OSError) -> LasaError:
    if exc.errno == errno.ENOSPC:
        return LasaError(f"{path}: no space left on device while writing; free some disk space and rerun (completed work is kept)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LasaError(f"{path}: permission denied; choose a writable output directory (--out)")
    return LasaError(f"{path}: cannot write ({exc.strerror or exc})")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise _wrap_os_error(path, exc) from exc
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=indent, default=_json_default, allow_nan=False) + ("\n" if indent else "")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps(obj))


def read_text(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8") from exc
    return text.replace("\r\n", "\n")


def read_json(path: str | os.PathLike) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} (truncated file?)") from exc


def iter_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)``; each record must be a JSON object.

    With ``tolerate_truncated_tail`` a final line without newline that fails to
    parse (a write killed mid-line) is skipped instead of raising.
    """
    path = Path(path)
    text = read_text(path)
    lines = text.split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_truncated_tail and i == len(lines):
                return
            raise DataError(f"{path}:{i}: invalid JSON ({exc.msg}); each line must be one JSON object") from exc
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
        yield i, rec


def read_jsonl(path: str | os.PathLike, **kw) -> list[dict]:
    return [r for _, r in iter_jsonl(path, **kw)]


class JsonlWriter:
    """Append-only JSONL writer; ``flush()`` fsyncs.  Use as a context manager.

    Opening an existing file whose last line was cut by a kill first truncates
    that partial line, so appends stay valid JSONL.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                self._repair_tail()
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise _wrap_os_error(self.path, exc) from exc

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def write(self, rec: dict) -> None:
        try:
            self._f.write(dumps(rec, indent=None).rstrip("\n") + "\n")
        except OSError as exc:
            raise _wrap_os_error(self.path, exc) from exc

    def write_many(self, recs: Iterable[dict]) -> None:
        for r in recs:
            self.write(r)
        self.flush()

    def flush(self) -> None:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            raise _wrap_os_error(self.path, exc) from exc

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default).encode()).hexdigest()

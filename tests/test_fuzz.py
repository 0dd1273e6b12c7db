"""Property-based tests: no input crashes the loaders or the config parser with an unhandled
exception; every rejection is a LasaError with a message."""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lasa.configs import ModelArgs  # noqa: F401
from lasa.data import load_prompts
from lasa.errors import LasaError

TMP = Path(tempfile.mkdtemp(prefix="lasa-fuzz-"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                      max_leaves=6)
row = st.fixed_dictionaries({}, optional={
    "id": values, "qid": values, "lang": st.sampled_from(["en", "jw", "sw", "xx", "", "Swahili"]) | values,
    "prompt": st.text(max_size=20) | values, "label": st.sampled_from(["harmful", "benign", "1", "maybe"]) | values,
    "lingual": values, "translations": values, "original_query": values, "idx": values})

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            recs = load_prompts(path, on_empty="skip")
        except LasaError as exc:
            assert str(exc)
            return
    for r in recs:
        assert isinstance(r.prompt, str) and r.prompt.strip() and len(r.lang) == 2


@SETTINGS
@given(st.lists(row, max_size=5))
def test_jsonl_loader_never_crashes(rows):
    p = TMP / "f.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    _check(p)


@SETTINGS
@given(values)
def test_json_loader_never_crashes(obj):
    p = TMP / "f.json"
    p.write_text(json.dumps(obj), encoding="utf-8")
    _check(p)


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data):
    for suffix in (".jsonl", ".json", ".csv"):
        p = TMP / f"b{suffix}"
        p.write_bytes(data)
        _check(p)


@SETTINGS
@given(st.text(max_size=120))
def test_csv_text_never_crashes(text):
    p = TMP / "t.csv"
    p.write_text("id,en,sw\n" + text, encoding="utf-8")
    _check(p)


def _all_configs():
    import importlib

    from lasa.cli import COMMANDS, _optional_commands

    _optional_commands()
    return [getattr(importlib.import_module(m), c) for m, c, _, _ in COMMANDS.values()]


CONFIGS = _all_configs()
FIELDS = sorted({f for c in CONFIGS for f in c.__dataclass_fields__ if f not in ("model", "out", "runs")})


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=4))
def test_config_validation_never_crashes(kw):
    for cls in CONFIGS:
        names = set(cls.__dataclass_fields__)
        args = {k: v for k, v in kw.items() if k in names}
        if cls.__name__ == "ReportConfig":
            args.setdefault("runs", ["x"])
        try:
            cls(**args)
        except LasaError as exc:
            assert str(exc)

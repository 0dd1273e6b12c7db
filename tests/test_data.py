"""Loaders: every accepted layout, the shared real data, language aliases, clear errors."""
from __future__ import annotations

import json
import warnings

import pytest

from conftest import SHARED
from lasa.data import check_parallel, load_prompts
from lasa.errors import DataError
from lasa.langs import LANGS, normalize_lang, parse_langs, tier_of


def test_normalize_lang_aliases_and_names():
    with pytest.warns(UserWarning, match="legacy alias"):
        assert normalize_lang("jw") == "jv"
    assert normalize_lang("Swahili") == "sw" and normalize_lang(" EN ") == "en"
    with pytest.raises(DataError, match="unknown language code 'xx'"):
        normalize_lang("xx")
    assert parse_langs("en, zh,ko") == ("en", "zh", "ko") and parse_langs("all") is None
    assert tier_of("sw") == "low" and tier_of("en") == "high" and tier_of("ko") == "medium"


def test_builtin_sets_are_parallel_and_complete():
    b = load_prompts("builtin:benign")
    h = load_prompts("builtin:harmful")
    assert len(b) == 600 and len(h) == 400
    assert {r.lang for r in b} == set(LANGS) == {r.lang for r in h}
    assert {r.label for r in b} == {"benign"} and {r.label for r in h} == {"harmful"}
    check_parallel(b + h)
    assert len({r.qid for r in b}) == 60 and len({r.qid for r in h}) == 40
    tr, ev = load_prompts("builtin:harmful-train"), load_prompts("builtin:harmful-eval")
    assert len(tr) == len(ev) == 200 and not ({r.qid for r in tr} & {r.qid for r in ev})
    assert len(load_prompts("builtin:benign-eval")) == 300
    with pytest.raises(DataError, match="unknown built-in set"):
        load_prompts("builtin:nope")


@pytest.mark.skipif(not (SHARED / "safety_train_translated.json").exists(), reason="shared data missing")
def test_safety_train_translated_layout():
    r = load_prompts(SHARED / "safety_train_translated.json", max_queries=20, default_label="harmful")
    assert len(r) == 200 and {x.lang for x in r} == set(LANGS)
    assert all(x.label == "harmful" for x in r)
    assert all(x.meta.get("english") for x in r if x.lang != "en")  # English original kept for the report
    check_parallel(r)


@pytest.mark.skipif(not (SHARED / "harmbench_training.json").exists(), reason="shared data missing")
def test_harmbench_layout_and_its_empty_row():
    with pytest.raises(DataError, match="row 370: empty prompt"):
        load_prompts(SHARED / "harmbench_training.json")
    r = load_prompts(SHARED / "harmbench_training.json", on_empty="skip")
    assert len(r) == 999 and len({x.qid for x in r}) == 100
    check_parallel(r)


def _w(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_multijail_long_and_wide(tmp_path):
    rows = [{"id": 1, "prompt": "hello", "lingual": "en", "tag": "x"}, {"id": 1, "prompt": "halo", "lingual": "jw", "tag": "x"}]
    p = _w(tmp_path, "mj.json", json.dumps(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = load_prompts(p)
    assert [x.lang for x in r] == ["en", "jv"] and r[0].qid == r[1].qid == "1" and r[0].id != r[1].id
    csv = "id,tags,en,zh,sw\n1,a,hello,你好,habari\n2,b,bye,再见,kwaheri\n"
    r = load_prompts(_w(tmp_path, "mj.csv", csv))
    assert len(r) == 6 and r[1].meta["english"] == "hello" and r[1].lang == "zh"


def test_reference_layouts(tmp_path):
    unsafe = [{"prompt": "p1", "language": "en", "lingual": "en", "source": "safety", "idx": 0}]
    r = load_prompts(_w(tmp_path, "unsafe_train.json", json.dumps(unsafe)))
    assert r[0].label == "harmful"
    uf = [{"idx": 0, "prompt": "Habari?", "chosen": [{"role": "assistant", "content": "x"}], "rejected": []}]
    r = load_prompts(_w(tmp_path, "monolingual_first1000_sw.json", json.dumps(uf)))
    assert r[0].lang == "sw" and r[0].label == "benign"
    chat = [{"id": "a", "lang": "en", "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}]
    assert load_prompts(_w(tmp_path, "c.json", json.dumps(chat)))[0].prompt == "u"


@pytest.mark.parametrize("text,match", [
    ('{"id": 1, "lang": "en"}\n', "missing field 'prompt'"),
    ('{"id": 1, "prompt": "x"}\n', "missing field 'lang'"),
    ('{"id": 1, "lang": "en", "prompt": 5}\n', "must be a string"),
    ('{"id": 1, "lang": "en", "prompt": "x", "label": "maybe"}\n', "unknown label"),
    ('{"id": 1, "lang": "en", "prompt": "x"}\n{"id": 1, "lang": "en", "prompt": "y", "qid": 3}\n', "duplicate id"),
    ('{"id": 1, "lang": "en", "prompt": "x"}\n{"id": 2, "lang": "en"', "invalid JSON"),
    ('[1, 2]\n', "expected a JSON object"),
])
def test_bad_rows_name_file_and_row(tmp_path, text, match):
    p = _w(tmp_path, "bad.jsonl", text)
    with pytest.raises(DataError, match=match) as e:
        load_prompts(p)
    assert "bad.jsonl" in str(e.value)


def test_lang_filter_and_empty_result(tmp_path):
    p = _w(tmp_path, "x.jsonl", '{"id": 1, "lang": "en", "prompt": "x"}\n')
    with pytest.raises(DataError, match="no prompts after filtering"):
        load_prompts(p, langs=["sw"])


def test_hub_name_unreachable_is_clear():
    with pytest.raises(DataError, match="hub"):
        load_prompts("nonexistent-org-xyz/nonexistent-dataset")


def test_csv_with_stray_carriage_return_is_a_clear_error_or_ok(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("id,en,sw\n1,a\rb,c\n", encoding="utf-8")
    try:
        recs = load_prompts(p)
    except DataError as exc:
        assert "x.csv" in str(exc)
    else:
        assert {r.lang for r in recs} == {"en", "sw"}

"""Model loading from disk, errors, chat formatting, fingerprints; the embedded model (slow)."""
from __future__ import annotations

import pytest
import torch

from lasa.errors import ModelError
from lasa.models import (EMBEDDED_MODELS, conditioning_ids, encode_prompts, format_chat, load_model, wrap_model)


def test_save_load_roundtrip_same_fingerprint(tiny_lm, tmp_path):
    tiny_lm.model.save_pretrained(tmp_path / "m")
    tiny_lm.tokenizer.save_pretrained(tmp_path / "m")
    lm = load_model(str(tmp_path / "m"), device="cpu")
    assert lm.n_layers == tiny_lm.n_layers and lm.hidden_size == tiny_lm.hidden_size
    assert lm.fingerprint() == tiny_lm.fingerprint()
    assert lm.layers_path == "model.layers" and lm.norm_path == "model.norm"


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model("/nonexistent/dir/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="GGUF file not found"):
        load_model(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelError, match="unknown dtype"):
        load_model(str(tmp_path / "empty"), dtype="int3")


def test_no_decoder_layers_is_clear():
    class NotAnLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 2})()
            self.lin = torch.nn.Linear(2, 2)

    with pytest.raises(ModelError, match="no decoder-block list"):
        wrap_model(NotAnLM(), None)


def test_chat_template_handling(tokenizer):
    text = format_chat(tokenizer, "Hi", system="Be safe")
    assert text.startswith("<|im_start|>system\nBe safe") and text.endswith("<|im_start|>assistant\n")
    raw = encode_prompts(tokenizer, ["Hi"], read_position="raw")[0]
    chat = encode_prompts(tokenizer, ["Hi"], read_position="chat")[0]
    assert len(chat) > len(raw)
    with pytest.raises(ModelError, match="read position"):
        encode_prompts(tokenizer, ["Hi"], read_position="middle")
    import copy

    t2 = copy.deepcopy(tokenizer)
    t2.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        format_chat(t2, "Hi")


def test_conditioning_ids_append_cleanly(tokenizer):
    from lasa import CONDITIONING_TEXT

    ids = encode_prompts(tokenizer, ["Hi"])[0] + conditioning_ids(tokenizer)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n" + CONDITIONING_TEXT + "\n")


def test_embedded_spec_is_pinned():
    spec = EMBEDDED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert spec.size == 491_400_064 and len(spec.sha256) == 64


@pytest.mark.slow
def test_embedded_model_loads_from_site_packages():
    lm = load_model("embedded", device="cpu")
    assert lm.n_layers == 24 and lm.hidden_size == 896
    text = lm.chat_text("Hello")
    assert "<|im_start|>assistant\n" in text
    assert len(lm.fingerprint()) == 32

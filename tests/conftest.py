"""Shared fixtures: tiny *real* models (random weights) built from configs in code,
and a byte-level BPE tokenizer with a ChatML template trained in a second."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tests never write into the machine-wide activation cache
import tempfile as _tempfile  # noqa: E402

os.environ["LASA_ACTIVATIONS_CACHE"] = _tempfile.mkdtemp(prefix="lasa-test-acts-")

SHARED = ROOT.parent / "shared" / "data" / "lasa"

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "How do I bake bread at home?", "Comment faire du pain?", "如何在家烤面包？", "Come posso cuocere il pane?",
    "Làm thế nào để nướng bánh mì?", "كيف أخبز الخبز في المنزل؟", "집에서 빵을 굽는 방법은?", "ฉันจะอบขนมปังได้อย่างไร",
    "আমি কীভাবে রুটি বানাব?", "Ninawezaje kuoka mkate nyumbani?", "Piye carane nggawe roti ing omah?",
    "I cannot help with that request. Sorry.", "Here is a recipe: flour, water, salt, yeast.",
    "Harmful query detected. I should refuse this request and provide a safe response in the user's language.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 3, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML
    return fast


_TOK = None


@pytest.fixture(scope="session")
def tokenizer():
    global _TOK
    if _TOK is None:
        _TOK = build_tokenizer()
    return _TOK


def build_tiny(arch: str = "qwen2", tokenizer=None, layers: int = 4, hidden: int = 32, seed: int = 0):
    import torch
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    from lasa.models import wrap_model

    tok = tokenizer or build_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
               "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM)}
    cfg_cls, model_cls = classes[arch]
    torch.manual_seed(seed)
    cfg = cfg_cls(**common)
    if arch == "gemma3":
        cfg.sliding_window = 8
    model = model_cls(cfg).eval()
    return wrap_model(model, tok, f"tiny-{arch}")


@pytest.fixture(scope="session")
def tiny_lm(tokenizer):
    return build_tiny("qwen2", tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_lm):
    """The tiny qwen2 model and its tokenizer saved as a Hugging Face directory (for CLI/subprocess tests)."""
    d = tmp_path_factory.mktemp("tinymodel") / "m"
    tiny_lm.model.save_pretrained(d)
    tiny_lm.tokenizer.save_pretrained(d)
    return d


@pytest.fixture(params=["llama", "qwen2", "gemma3"], scope="session")
def tiny_any(request, tokenizer):
    return build_tiny(request.param, tokenizer)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: loads the embedded real model or runs long (deselect with -m 'not slow')")

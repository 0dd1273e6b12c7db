"""The layer convention, early exit, padding-invariant gathering and caching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lasa.activations import collect, last_token_index, length_batches, pad_batch
from lasa.errors import ConfigError

PROMPTS = ["How do I bake bread at home?", "如何在家烤面包？", "Ninawezaje kuoka mkate nyumbani?", "Hi",
           "ฉันจะอบขนมปังได้อย่างไร และต้องใช้เวลานานเท่าไร", "Piye carane nggawe roti ing omah?"]


def reference_states(lm, prompt: str) -> list[torch.Tensor]:
    """Hugging Face's own hidden_states for one unpadded prompt, at its last token."""
    ids = torch.tensor([lm.encode([prompt])[0]])
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    return [h[0, -1].float() for h in out.hidden_states]


def test_layer_convention_matches_hf_hidden_states(tiny_any):
    lm = tiny_any
    acts = collect(lm, PROMPTS, layers=None, batch_size=4, progress=False)
    assert acts.layers == tuple(range(lm.n_layers + 1))
    for i, p in enumerate(PROMPTS):
        ref = reference_states(lm, p)
        assert len(ref) == lm.n_layers + 1
        for layer in acts.layers:
            np.testing.assert_allclose(acts.last[layer][i], ref[layer].numpy(), atol=1e-4, rtol=1e-4)


def test_block_output_is_hidden_state_index(tiny_lm):
    """hidden_states[l] is the output of block l (1-based): hook block l-1 of the ModuleList."""
    lm = tiny_lm
    ids = torch.tensor([lm.encode([PROMPTS[0]])[0]])
    seen = {}
    hooks = [blk.register_forward_hook(lambda m, a, o, k=k: seen.__setitem__(k + 1, o[0] if isinstance(o, tuple) else o))
             for k, blk in enumerate(lm.layers)]
    try:
        with torch.no_grad():
            out = lm.model(input_ids=ids, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    for layer in range(1, lm.n_layers):
        torch.testing.assert_close(seen[layer], out.hidden_states[layer])
    torch.testing.assert_close(lm.final_norm(seen[lm.n_layers]), out.hidden_states[lm.n_layers])


def test_early_exit_identical_and_skips_upper_blocks(tiny_lm):
    lm = tiny_lm
    ran = []
    hooks = [blk.register_forward_hook(lambda m, a, o, k=k: ran.append(k + 1)) for k, blk in enumerate(lm.layers)]
    try:
        early = collect(lm, PROMPTS, layers=[1, 2], batch_size=8, progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert max(ran) == 2, "blocks above the deepest requested layer must not run"
    full = collect(lm, PROMPTS, layers=[1, 2], early_exit=False, batch_size=8, progress=False)
    for layer in (1, 2):
        np.testing.assert_array_equal(early.last[layer], full.last[layer])


@pytest.mark.parametrize("bs", [1, 2, 6])
def test_left_right_padding_and_batch_size_invariance(tiny_lm, bs):
    lm = tiny_lm
    ref = collect(lm, PROMPTS, layers=[0, 2, 4], batch_size=1, progress=False, pools=("last", "mean"))
    for side in ("left", "right"):
        got = collect(lm, PROMPTS, layers=[0, 2, 4], batch_size=bs, padding_side=side, progress=False,
                      pools=("last", "mean"))
        for layer in (0, 2, 4):
            np.testing.assert_allclose(got.last[layer], ref.last[layer], atol=1e-5)
            np.testing.assert_allclose(got.mean[layer], ref.mean[layer], atol=1e-5)


def test_last_token_index_both_sides():
    seqs = [[5, 6, 7], [1], [2, 3]]
    for side in ("left", "right"):
        ids, mask, pos = pad_batch(seqs, 0, side)
        last = last_token_index(mask)
        got = [int(ids[i, last[i]]) for i in range(3)]
        assert got == [7, 1, 3]
        # positions restart at 0 on real tokens
        for i, s in enumerate(seqs):
            assert pos[i][mask[i].bool()].tolist() == list(range(len(s)))
    # the reference code's bug: mask.sum()-1 under left padding points at a pad token
    ids, mask, _ = pad_batch(seqs, 0, "left")
    wrong = int(ids[1, int(mask[1].sum()) - 1])
    assert wrong == 0


def test_length_batches_sorted_and_complete():
    lengths = [5, 100, 7, 99, 6, 50]
    b = length_batches(lengths, batch_size=2)
    assert sorted(i for x in b for i in x) == list(range(6))
    assert b[0] == [1, 3]
    b2 = length_batches(lengths, batch_size=10, max_batch_tokens=200)
    assert all(max(lengths[i] for i in x) * len(x) <= 200 or len(x) == 1 for x in b2)


def test_cache_roundtrip_and_key(tiny_lm, tmp_path):
    a = collect(tiny_lm, PROMPTS, layers=[1, 3], cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("act-*.npz"))
    assert len(files) == 1
    b = collect(tiny_lm, PROMPTS, layers=[1, 3], cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(a.last[3], b.last[3])
    collect(tiny_lm, PROMPTS[:3], layers=[1, 3], cache_dir=tmp_path, progress=False)
    collect(tiny_lm, PROMPTS, layers=[1, 3], read_position="raw", cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("act-*.npz"))) == 3
    # a subset of cached layers is served from the cache without running the model
    calls = []
    h = tiny_lm.layers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        sub = collect(tiny_lm, PROMPTS, layers=[3], cache_dir=tmp_path, progress=False)
    finally:
        h.remove()
    assert not calls and sub.layers == (3,)
    np.testing.assert_array_equal(sub.last[3], a.last[3])
    # new layers are merged into the same file
    collect(tiny_lm, PROMPTS, layers=[2], cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("act-*.npz"))) == 3
    files[0].write_bytes(b"garbage")  # a corrupted cache is recomputed, not fatal
    c = collect(tiny_lm, PROMPTS, layers=[1, 3], cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(a.last[1], c.last[1])


def test_bad_layers(tiny_lm):
    with pytest.raises(ConfigError, match="out of range"):
        collect(tiny_lm, PROMPTS, layers=[tiny_lm.n_layers + 1], progress=False)
    with pytest.raises(ConfigError):
        collect(tiny_lm, [], layers=[1], progress=False)


def test_chat_read_position_one_bos_and_generation_prompt(tiny_lm):
    ids = tiny_lm.encode(["Hi"])[0]
    text = tiny_lm.tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>user") == 1

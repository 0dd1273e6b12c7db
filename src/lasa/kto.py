"""KTO data, tokenisation and loss math for :mod:`lasa.align`.

Data layouts accepted by :func:`load_kto_data` (``.jsonl``, or ``.json`` with a list or
``{"data": [...]}``); ``prompt`` / ``completion`` / ``chosen`` / ``rejected`` may be
strings or chat messages:

* TRL *paired* preference rows ``{prompt, chosen, rejected}`` -> two unpaired rows
  (``chosen`` desirable, ``rejected`` undesirable);
* TRL *unpaired* rows ``{prompt, completion, label: bool}`` (what ``lasa make-pairs`` writes,
  plus ``lang, qid, source``);
* the reference LASA repo's paired layout ``{"prompt": [{"role": "user", ...}], "chosen":
  [{"role": "assistant", ...}], "rejected": [...], "language", "category", "source":
  "safety" | "ultrafeedback"}``.

A row with ``finish_reason: "length"`` or ``truncated: true`` (an answer cut at the
generation limit) gets no end-of-turn token, so the model is not taught to stop there.
``source`` (``safety``/``harmful``/``unsafe`` vs ``benign``/``ultrafeedback``/``safe``) or a
boolean ``harmful`` field marks a prompt as harmful; it drives ``z_source=source``.

Token layout of one example (training and the inference gate see the same ids)::

    prompt_ids (chat template + generation prompt) [+ conditioning_ids if z] + completion_ids + <end of turn>
    labels:  -100 ...................................  -100 ...............  completion ids ..... end id

The loss is KTO (Ethayarajh et al. 2024, eq. 7, as in TRL's ``loss_type="kto"``), with
``r = log pi_theta(y|x,c) - log pi_ref(y|x,c)`` summed over completion tokens:

* desirable:   ``w_d * (1 - sigmoid(beta * (r - z_KL)))``
* undesirable: ``w_u * (1 - sigmoid(beta * (z_KL - r)))``
* ``z_KL = clamp(mean_batch(log pi_theta(y'|x) - log pi_ref(y'|x)), min=0)``, detached, over
  mismatched pairs: each prompt with the completion of *another* prompt of the batch.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import DataError

log = logging.getLogger(__name__)

IGNORE = -100
_HARMFUL_SOURCES = {"safety", "harmful", "unsafe", "attack", "jailbreak"}
_BENIGN_SOURCES = {"benign", "safe", "ultrafeedback", "helpful", "general"}


# --- data ----------------------------------------------------------------------------------------

@dataclass
class KTORow:
    """One unpaired KTO example."""

    prompt: list[dict[str, str]]  # chat messages, ending with a user turn
    completion: str
    label: bool  # True = desirable
    lang: str | None
    qid: str
    source: str | None
    harmful: bool | None  # the prompt's harmfulness from the data (None = unknown)
    where: str  # "file: row N (chosen)" for messages and the examples log
    category: str | None = None
    ends: bool = True  # False for an answer cut at max_new_tokens: no end-of-turn token is appended

    @property
    def prompt_key(self) -> str:
        """Identity of the prompt (rows of one prompt share z and are never each other's KL pair)."""
        return json.dumps(self.prompt, ensure_ascii=False, sort_keys=True)

    @property
    def user_text(self) -> str:
        """The last user turn: what the SSI scores."""
        return [m["content"] for m in self.prompt if m["role"] == "user"][-1]


def _messages(value: Any, where: str, field: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: empty '{field}'; give the text or drop the row")
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        out = []
        for k, m in enumerate(value):
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: '{field}' message {k} needs a role (system/user/assistant) and string content")
            out.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "user" and m["content"].strip() for m in out):
            raise DataError(f"{where}: '{field}' has no non-empty user turn")
        if out[-1]["role"] != "user":
            raise DataError(f"{where}: '{field}' must end with a user turn (the answer goes in completion/chosen)")
        return out
    raise DataError(f"{where}: '{field}' must be a string or a list of chat messages, got {type(value).__name__}")


def _completion(value: Any, where: str, field: str) -> str:
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        turns = [m for m in value if m.get("role") == "assistant"]
        if len(turns) != 1 or len(value) != 1 or not isinstance(turns[0].get("content"), str):
            raise DataError(f"{where}: '{field}' must be one assistant message [{{'role': 'assistant', 'content': ...}}] "
                            f"or a string")
        value = turns[0]["content"]
    if not isinstance(value, str):
        raise DataError(f"{where}: '{field}' must be a string or one assistant message, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: empty '{field}'; an empty answer teaches nothing, fill it or drop the row")
    return value


def _label(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "desirable", "undesirable"):
        return value.strip().lower() in ("true", "desirable")
    raise DataError(f"{where}: 'label' must be a boolean (true = desirable), got {value!r}")


def _harmful(row: dict, where: str) -> tuple[bool | None, str | None]:
    src = row.get("source")
    src = str(src) if src is not None else None
    if isinstance(row.get("harmful"), bool):
        return row["harmful"], src
    if "harmful" in row and row["harmful"] is not None:
        raise DataError(f"{where}: 'harmful' must be true or false, got {row['harmful']!r}")
    if src is None:
        return None, None
    key = src.strip().lower()
    if key in _HARMFUL_SOURCES:
        return True, src
    if key in _BENIGN_SOURCES:
        return False, src
    return None, src


def rows_from_records(records: Sequence[Any], source: str) -> list[KTORow]:
    """Validate raw records (any of the three layouts) into :class:`KTORow` s."""
    from .langs import normalize_lang

    out: list[KTORow] = []
    for n, rec in enumerate(records, start=1):
        where = f"{source}: row {n}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        if "prompt" not in rec:
            raise DataError(f"{where}: missing 'prompt' (fields: {', '.join(map(str, rec)) or 'none'}); KTO rows are "
                            f"{{prompt, completion, label}} or {{prompt, chosen, rejected}}")
        prompt = _messages(rec["prompt"], where, "prompt")
        lang_v = next((rec[k] for k in ("lang", "language", "lingual") if rec.get(k) is not None), None)
        lang = normalize_lang(str(lang_v), where=where) if lang_v is not None else None
        qid_v = next((rec[k] for k in ("qid", "idx", "id") if rec.get(k) is not None), None)
        qid = str(qid_v) if qid_v is not None else f"row{n}"
        harmful, src = _harmful(rec, where)
        cat = rec.get("category")
        cut = rec.get("finish_reason") == "length" or rec.get("truncated") is True
        common = dict(prompt=prompt, lang=lang, qid=qid, source=src, harmful=harmful,
                      category=str(cat) if cat is not None else None, ends=not cut)
        paired = "chosen" in rec or "rejected" in rec
        if paired:
            if "chosen" not in rec or "rejected" not in rec:
                raise DataError(f"{where}: a paired row needs both 'chosen' and 'rejected'")
            if "completion" in rec:
                raise DataError(f"{where}: has both 'completion' and 'chosen'/'rejected'; use one layout per row")
            out.append(KTORow(completion=_completion(rec["chosen"], where, "chosen"), label=True,
                              where=f"{where} (chosen)", **common))
            out.append(KTORow(completion=_completion(rec["rejected"], where, "rejected"), label=False,
                              where=f"{where} (rejected)", **common))
        elif "completion" in rec:
            if "label" not in rec:
                raise DataError(f"{where}: unpaired row without 'label' (true = desirable, false = undesirable)")
            out.append(KTORow(completion=_completion(rec["completion"], where, "completion"),
                              label=_label(rec["label"], where), where=where, **common))
        else:
            raise DataError(f"{where}: needs 'completion' + 'label' (unpaired) or 'chosen' + 'rejected' (paired)")
    return out


def load_kto_data(path: str | Path) -> list[KTORow]:
    """Load and validate a KTO data file (see the module docstring for layouts)."""
    from .io import iter_jsonl, read_json

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: data file not found; build one with `lasa make-pairs --out {p}`")
    if p.suffix.lower() == ".jsonl":
        records: list[Any] = [r for _, r in iter_jsonl(p)]
    elif p.suffix.lower() == ".json":
        data = read_json(p)
        if isinstance(data, dict):
            data = next((data[k] for k in ("data", "rows", "train") if isinstance(data.get(k), list)), data)
        if not isinstance(data, list):
            raise DataError(f"{p}: expected a JSON list of rows (or {{'data': [...]}})")
        records = data
    else:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use .jsonl or .json")
    rows = rows_from_records(records, str(p))
    if len(rows) < 2:
        raise DataError(f"{p}: {len(rows)} KTO row(s); KTO needs at least 2 (the KL term pairs different prompts)")
    if len({r.prompt_key for r in rows}) < 2:
        raise DataError(f"{p}: all rows share one prompt; the KL estimate needs at least 2 different prompts")
    return rows


# --- tokenisation --------------------------------------------------------------------------------

def encode_messages(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Prompt ids: the chat template with the generation prompt, one BOS (as :func:`lasa.models.encode_prompts`)."""
    from .models import format_chat, has_chat_template

    if not has_chat_template(tokenizer):
        from .errors import ModelError

        raise ModelError("the tokenizer has no chat template; lasa align trains chat/instruct models")
    if len(messages) == 1 or (len(messages) == 2 and messages[0]["role"] == "system"):
        system = messages[0]["content"] if len(messages) == 2 else None
        text = format_chat(tokenizer, messages[-1]["content"], system=system)
    else:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def turn_end_id(lm) -> int:
    """The token that ends an assistant turn (and stops generation): an EOS id the template emits."""
    from .models import eos_ids

    ids = eos_ids(lm)
    if not ids:
        from .errors import ModelError

        raise ModelError(f"{lm.name}: no EOS token id; cannot mark the end of a completion")
    tok = lm.tokenizer
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "ANSWER"}],
                                       tokenize=False)
        tail = tok(text.split("ANSWER", 1)[1], add_special_tokens=False)["input_ids"]
        for t in tail:
            if t in ids:
                return int(t)
    except Exception:  # noqa: BLE001 - templates vary; fall back to the first EOS id
        pass
    return int(ids[0])


@dataclass
class Example:
    """A tokenised row: ``prompt_ids`` already include the conditioning when ``z``."""

    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    z: bool
    prompt_key: str
    row: int


def make_example(prompt_ids: Sequence[int], completion_ids: Sequence[int], cond_ids: Sequence[int], z: bool,
                 label: bool, prompt_key: str, row: int, max_length: int | None) -> Example | None:
    """Build one example; the completion is cut at the end to fit ``max_length`` (None if nothing fits)."""
    p = list(prompt_ids) + (list(cond_ids) if z else [])
    c = list(completion_ids)
    if max_length is not None:
        if len(p) >= max_length:
            return None
        c = c[: max_length - len(p)]
    return Example(p, c, label, z, prompt_key, row)


def sequence(ex_prompt: Sequence[int], completion: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: labels are -100 on the prompt and the conditioning."""
    return list(ex_prompt) + list(completion), [IGNORE] * len(ex_prompt) + list(completion)


def kl_partners(keys: Sequence[str]) -> list[int]:
    """For each row, the batch row whose completion forms its mismatched KL pair.

    A cyclic shift ``j = (i - s) mod n`` with the smallest ``s >= 1`` that never pairs a prompt
    with itself (``s = 1`` is TRL's rotation); ``s = 1`` if no shift avoids it.
    """
    n = len(keys)
    for s in range(1, n):
        if all(keys[i] != keys[(i - s) % n] for i in range(n)):
            return [(i - s) % n for i in range(n)]
    return [(i - 1) % n for i in range(n)]


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Left-pad ``(input_ids, labels)`` pairs: completions end at the last column for every row."""
    import torch

    T = max(len(ids) for ids, _ in pairs)
    B = len(pairs)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for i, (ids, lab) in enumerate(pairs):
        input_ids[i, T - len(ids):] = torch.tensor(ids, dtype=torch.long)
        labels[i, T - len(lab):] = torch.tensor(lab, dtype=torch.long)
        mask[i, T - len(ids):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": pos, "labels": labels}


def sequence_logps(model, batch: dict[str, Any]):
    """Summed log-prob of the labelled (completion) tokens per row, shape (B,).

    Only the logits of the last ``K + 1`` positions are computed (``logits_to_keep``), where ``K``
    is the longest completion: with left padding every completion ends at the last column.
    """
    import torch

    labels = batch["labels"]
    valid = labels != IGNORE
    T = labels.shape[1]
    if not bool(valid.any()):
        return torch.zeros(labels.shape[0], device=labels.device)
    first = int(valid.any(0).nonzero()[0])  # first column holding any completion token (>= 1)
    keep = T - first + 1
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  position_ids=batch["position_ids"], use_cache=False)
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:  # models without logits_to_keep
        logits = model(**kwargs).logits
    logits = logits[:, -keep:-1].float()
    tgt = labels[:, first:]
    tmask = tgt != IGNORE
    tok = logits.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (tok * tmask).sum(-1)


# --- the loss ------------------------------------------------------------------------------------

@dataclass
class KTOLoss:
    loss: Any  # scalar tensor (mean over the batch of the weighted per-example losses)
    losses: Any  # (B,)
    rewards: Any  # (B,) beta * logratio, detached
    kl: Any  # scalar, detached


def estimate_kl(policy_kl_logps, ref_kl_logps, gather=None):
    """``z_KL``: batch mean of the mismatched-pair log ratio, averaged over processes, clamped at 0, detached."""
    kl = (policy_kl_logps - ref_kl_logps).mean().detach()
    if gather is not None:
        kl = gather(kl.reshape(1)).mean()
    return kl.clamp(min=0)


def kto_loss(policy_logps, ref_logps, labels, kl, *, beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> KTOLoss:
    """KTO loss of a batch; ``labels`` is a bool tensor (True = desirable)."""
    import torch

    labels = labels.to(torch.bool)
    logratios = policy_logps - ref_logps
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios)))
    losses = torch.where(labels, desirable, undesirable)
    return KTOLoss(losses.mean(), losses, beta * logratios.detach(), kl.detach())


def stable_uniform(*parts: Any) -> float:
    """A deterministic number in [0, 1) from ``parts`` (same on every process and on resume)."""
    h = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return int(h[:13], 16) / float(16 ** 13)

"""``model=small``: a small Llama-architecture model that has read real English, built here.

Its tokenizer is the Llama-style SentencePiece BPE of less.sp_tokenizer (byte fallback), trained
on the same text the model is then pretrained on: the instruction pools under ``data.root``
(Dolly, FLAN v2 CoT, the NIv2 sample, OASST1; ``small.per_source`` texts each, seeded), never the
MMLU/BBH/TyDiQA questions the targets and evaluations use. A fixed share of the texts (by a hash
of their content) is held out; the build reports the held-out loss and perplexity
(``pretrain.json``), the size and the tokens seen.

The build is resumable: the tokenizer and a training state (model, optimizer, step) are kept in a
work directory beside the artifact (``<cache>/model/.work-<key>``, written atomically every
``small.checkpoint_every`` steps); a killed build continues from its last state, and batches are
drawn from a generator seeded by (seed, step), so a resumed build sees the same batches as an
uninterrupted one. The work directory is removed once the model is in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from less.errors import ConfigError

log = logging.getLogger(__name__)


def require_root(data_cfg: DictConfig) -> Path:
    """``data.root``, which the small model is pretrained from; a one-line error when it is unset or missing."""
    root = data_cfg.get("root")
    if not root or not Path(str(root)).expanduser().is_dir():
        raise ConfigError(f"model=small is pretrained on the instruction pools under data.root, which is "
                          f"{'unset' if not root else f'not a directory ({root})'}: set data.root=../shared/data "
                          "(or $LESS_DATA_ROOT) to a copy with dolly/, cot_flan_v2/, flan_v2_proxy_niv2/, oasst1/")
    return Path(str(root)).expanduser().resolve()


def corpus(root: Path, per_source: int, seed: int, held_out: float) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): every message of a seeded sample of each pool source, split
    by a hash of the text (the same text always lands on the same side)."""
    from less.sp_tokenizer import pool_texts

    train, held = [], []
    for text in pool_texts(root, per_source, seed):
        h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") / 2**64
        (held if h < held_out else train).append(text)
    return train, held


def pack(tok, texts: list[str], seq_len: int):
    """The texts tokenized (``<s> text </s>``), concatenated and cut into rows of ``seq_len``."""
    import torch

    ids: list[int] = []
    for t in texts:
        ids += [tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def build_small(model_cfg: DictConfig, data_cfg: DictConfig, out: Path, work: Path) -> None:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from less.sp_tokenizer import train_llama_tokenizer

    s = model_cfg.small
    t0 = time.time()
    root = require_root(data_cfg)
    work.mkdir(parents=True, exist_ok=True)
    train_texts, held_texts = corpus(root, s.per_source, s.seed, s.held_out)
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer_config.json").is_file():
        log.info("small model: training its SentencePiece tokenizer on %d texts", len(train_texts))
        train_llama_tokenizer(train_texts, tok_dir, s.vocab_size)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    data, held = pack(tok, train_texts, s.seq_len), pack(tok, held_texts, s.seq_len)
    torch.manual_seed(s.seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_heads,
        max_position_embeddings=s.max_length, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.95), weight_decay=0.1)
    state_file, start = work / "state.pt", 0
    if state_file.is_file():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        log.info("small model: resuming at step %d of %d", start, s.steps)
    warm = max(1, int(0.05 * s.steps))
    model.train()
    bar = tqdm(range(start, s.steps), desc="pretrain small model", initial=start, total=s.steps)
    loss = None
    for step in bar:
        lr = s.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / s.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        g = torch.Generator().manual_seed(s.seed * 1_000_003 + step)
        batch = data[torch.randint(len(data), (s.batch_size,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % s.checkpoint_every == 0 and step + 1 < s.steps:
            _save_state(state_file, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1})
    model.eval()
    with torch.no_grad():
        losses = [model(input_ids=held[i:i + s.batch_size], labels=held[i:i + s.batch_size]).loss.item()
                  for i in range(0, len(held), s.batch_size)]
    held_loss = sum(losses) / len(losses) if losses else float("nan")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    report = {"params": sum(p.numel() for p in model.parameters()), "steps": s.steps,
              "tokens_seen": s.steps * s.batch_size * s.seq_len, "train_tokens": data.numel(),
              "held_out_tokens": held.numel(), "held_out_loss": held_loss, "held_out_perplexity": math.exp(held_loss),
              "final_train_loss": loss.item() if loss is not None else None,
              "sources": {"per_source": s.per_source, "held_out": s.held_out}}
    (out / "pretrain.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("small model: %.1fM parameters, %d tokens seen, held-out loss %.3f (perplexity %.1f), %.0f s",
             report["params"] / 1e6, report["tokens_seen"], held_loss, report["held_out_perplexity"], time.time() - t0)
    shutil.rmtree(work, ignore_errors=True)

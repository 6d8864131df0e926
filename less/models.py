"""Loading base models and tokenizers: hub/local checkpoints, or the tiny Llama built locally.

The tiny model (``model.kind: tiny``) is a small Llama-architecture network with a byte-level BPE
tokenizer, both trained here on synthetic instruction text and cached under the config's key, so
the embedded default needs no network. A randomly initialised network's gradients carry little
about content, hence the short pretraining.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from less.cache import to_plain
from less.errors import ConfigError
from less.identity import file_id

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(name: str) -> "torch.device":
    """``device``: auto (a GPU if there is one), cpu, cuda, cuda:N. Among the processes of a
    torchrun job (less.distributed) auto and cuda mean this rank's GPU, ``cuda:<LOCAL_RANK>``."""
    import torch

    from less import distributed

    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA device is available here (torch {torch.__version__}); "
                          "use device=cpu or device=auto")
    if distributed.world() > 1 and name.startswith("cuda"):
        if name != "cuda":
            raise ConfigError(f"device={name} with {distributed.world()} processes: each rank uses its own GPU "
                              "(cuda:LOCAL_RANK); set device=auto or device=cuda")
        return torch.device("cuda", distributed.local_rank())
    if name.startswith("cuda:") and name[5:].isdigit() and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


MODEL_FILES = (".json", ".safetensors", ".bin", ".model", ".txt", ".tiktoken")  # config, weights, tokenizer


def model_spec(model_cfg: DictConfig) -> dict[str, Any]:
    """What a model's identity depends on (used in downstream cache keys): a hub model by its repo
    id, a local directory by its files' content (less.identity), never by where it lies."""
    spec = to_plain(model_cfg)
    spec.pop("name", None)  # a label only
    if model_cfg.kind == "hf":
        spec["files"] = local_files_id(model_cfg.get("path"))
        if spec["files"] is not None:
            spec["path"] = None
    return spec


def local_files_id(path: str | None) -> list[dict[str, Any]] | None:
    """Content identity of a local model/adapter directory's config, weight and tokenizer files
    (None for a hub id), so cache keys notice when a local checkpoint changes, and only then."""
    local = Path(str(path or "")).expanduser()
    if not path or not local.is_dir():
        return None
    return [file_id(p) for p in sorted(local.iterdir()) if p.is_file() and p.suffix in MODEL_FILES]


def build_tiny(model_cfg: DictConfig, out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from less.data.synthetic import pretraining_corpus

    t = model_cfg.tiny
    torch.manual_seed(t.seed)  # its own seed, on top of the runner's per-key seeding
    corpus = pretraining_corpus(t.corpus_per_skill, seed=t.seed)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=t.vocab_size, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
        num_key_value_heads=t.num_heads, max_position_embeddings=t.max_length,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    if t.pretrain_steps > 0:
        _pretrain(model, tok, corpus, t)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _pretrain(model, tok, corpus: list[str], t: DictConfig) -> None:
    """A short causal-LM pretraining on the corpus text (all tokens), with a cosine schedule."""
    import torch
    from tqdm.auto import tqdm

    enc = [tok(s + tok.eos_token, add_special_tokens=False)["input_ids"][: t.max_length] for s in corpus]
    g = torch.Generator().manual_seed(t.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=t.pretrain_lr, weight_decay=0.0)
    model.train()
    for step in tqdm(range(t.pretrain_steps), desc="pretrain tiny model", leave=False):
        lr = t.pretrain_lr * 0.5 * (1 + math.cos(math.pi * step / t.pretrain_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(enc), (t.pretrain_batch_size,), generator=g).tolist()
        batch = [enc[i] for i in idx]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for r, seq in enumerate(batch):
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    log.info("tiny model pretrained for %d steps, final loss %.3f", t.pretrain_steps, loss.item())
    model.eval()


BUILT_KINDS = ("tiny", "small")  # models built here as artifacts (the model stage); "hf" is loaded


def model_source(model_cfg: DictConfig, built: Path | None = None) -> str:
    """Where ``from_pretrained`` loads a model from: the tiny model's artifact directory (``built``,
    made by the model stage), else ``model.path`` (a local directory or a hub id)."""
    if model_cfg.kind in BUILT_KINDS:
        if built is None:
            raise RuntimeError(f"the {model_cfg.kind} model {model_cfg.get('name')!r} is used before it was built")
        return str(built)
    if model_cfg.kind == "hf":
        if not model_cfg.get("path"):
            raise ConfigError(f"model.path is empty for model {model_cfg.get('name')!r}")
        return str(model_cfg.path)
    raise ConfigError(f"model.kind must be 'tiny', 'small' or 'hf', got {model_cfg.kind!r}")


def load_tokenizer(model_cfg: DictConfig, source: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source,
                                        trust_remote_code=bool(model_cfg.trust_remote_code))
    if tok.pad_token_id is None:  # Llama-2 ships none; padded positions never carry labels
        tok.pad_token = tok.unk_token or tok.eos_token
    tok.padding_side = "right"
    return tok


def load_model(model_cfg: DictConfig, source: str, device: "torch.device", dtype: str | None = None):
    """The model in ``dtype`` (default ``model.dtype``; training passes ``warmup.dtype`` /
    ``train.dtype``: float32 weights under bf16 autocast, as the reference trains)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or model_cfg.dtype
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=getattr(torch, dtype),
        trust_remote_code=bool(model_cfg.trust_remote_code),
        attn_implementation=model_cfg.get("attn_implementation") or None)
    return model.to(device)


def lora_config(lora_cfg: DictConfig):
    from peft import LoraConfig, TaskType

    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=lora_cfg.r, lora_alpha=lora_cfg.alpha,
                     lora_dropout=lora_cfg.dropout, target_modules=list(lora_cfg.target_modules), bias="none")
    # PEFT turns the list into a set and saves it in set order, which follows Python's per-process
    # string hashing; a sorted list matches the same modules and saves the same bytes everywhere.
    cfg.target_modules = sorted(cfg.target_modules)
    return cfg


@lru_cache(maxsize=16)
def param_count(path: str, trust_remote_code: bool = False) -> int | None:
    """Parameters of a model, counted on the meta device from its config (no weights loaded)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # offline hub id, gated model: unknown, reported as null
        return None

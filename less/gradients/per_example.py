"""Exact per-example gradients of every trainable Linear weight from one batched backward pass.

Forward hooks keep each trainable Linear's input activations x (B, T, in) and a tensor hook on its
output receives the output gradient g (B, T, out) during the backward pass; example b's weight
gradient is ``sum_t g[b, t]^T x[b, t]``, handed to ``on_grad`` as soon as it appears (so the caller
can map and store it, and the activation is freed). The loss is the sum over examples of each
example's mean token cross-entropy over its labelled tokens, so every example's gradient equals its
batch-size-1 gradient. Padded positions carry no label and, under the causal mask, influence no
labelled position, so their output gradient is zero and they contribute nothing. With gradient
checkpointing the recomputed forward is ignored (activations are identical).
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from less.data.formats import IGNORE_INDEX


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy per example over labelled (shifted) positions: shape (B,)."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="none").view(labels.shape)
    n = (labels != IGNORE_INDEX).sum(1)
    if (n == 0).any():
        raise ValueError("an example has no labelled token; drop it before taking gradients")
    return tok.sum(1) / n


def first_predicting_position(labels: torch.Tensor) -> int:
    """The first position whose logits predict a labelled token anywhere in the batch (position p
    predicts token p + 1): the logits before it feed no loss term, so they need not be computed."""
    cols = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return int(cols[0]) if len(cols) else 0


def accepts_logits_to_keep(model: nn.Module) -> bool:
    """Whether the model's forward (through a PEFT wrapper) takes transformers' ``logits_to_keep``."""
    while hasattr(model, "get_base_model") and model.get_base_model() is not model:
        model = model.get_base_model()
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def labelled_loss(model: nn.Module, input_ids, attention_mask, labels, cut: bool) -> torch.Tensor:
    """(B,) per-example mean token loss of one forward; ``cut``: the logits only from the batch's
    first position that predicts a labelled token on (``logits_to_keep``; the model must take it)."""
    start = first_predicting_position(labels) if cut else 0
    kw = {"logits_to_keep": labels.shape[1] - start} if start else {}
    return per_example_loss(model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits, labels[:, start:])


class PerExampleGradients:
    """Per-example gradients of a model's trainable parameters (all must be Linear weights).

    The logits are computed from the batch's first position that predicts a labelled token on
    (transformers' ``logits_to_keep``, where the model takes it): the prompt's logits feed no loss
    term, and on a 32k vocabulary they are most of a small model's compute and memory. The loss, and
    so every gradient, is the same; the floating-point result may differ in the last bits, since the
    output layer's matrix product has fewer rows (tested to rtol 1e-5)."""

    def __init__(self, model: nn.Module, labelled_logits: bool = True):
        self.model = model
        self.labelled_logits = labelled_logits and accepts_logits_to_keep(model)
        owners = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Linear)}
        self.names: list[str] = []
        self.modules: list[nn.Linear] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            mod = owners.get(id(p))
            if mod is None:
                raise ValueError(f"trainable parameter {name} is not a Linear weight; "
                                 "per-example gradients support LoRA/Linear weights only")
            self.names.append(name)
            self.modules.append(mod)
        self.shapes = [tuple(m.weight.shape) for m in self.modules]
        self.numels = [a * b for a, b in self.shapes]
        self._acts: dict[int, torch.Tensor] = {}
        self._in_forward = False
        self._on_grad: Callable[[int, torch.Tensor], None] | None = None
        self._seen: set[int] = set()
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]

    def _hook(self, i: int):
        def hook(module, inputs, output):
            if not self._in_forward:  # recomputation under gradient checkpointing
                return
            if i in self._acts:
                raise RuntimeError(f"{self.names[i]} ran twice in one forward; unsupported")
            self._acts[i] = inputs[0].detach()
            output.register_hook(lambda g: self._grad(i, g))
        return hook

    def _grad(self, i: int, g: torch.Tensor) -> None:
        x = self._acts.pop(i)
        self._seen.add(i)
        self._on_grad(i, torch.einsum("bto,bti->boi", g.float(), x.float()))

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def run(self, input_ids, attention_mask, labels, on_grad: Callable[[int, torch.Tensor], None]) -> None:
        """One forward/backward; ``on_grad(parameter index, (B, out, in) gradients)`` per parameter."""
        self._acts.clear()
        self._seen.clear()
        self._on_grad = on_grad
        with torch.enable_grad():
            self._in_forward = True
            try:
                loss = labelled_loss(self.model, input_ids, attention_mask, labels, self.labelled_logits)
            finally:
                self._in_forward = False
            loss.sum().backward()
        self.model.zero_grad(set_to_none=True)
        if len(self._seen) != len(self.modules):
            missing = [self.names[i] for i in range(len(self.modules)) if i not in self._seen]
            raise RuntimeError(f"no gradient reached {missing[:3]}... ({len(missing)} parameters)")

    def __call__(self, input_ids, attention_mask, labels) -> dict[int, torch.Tensor]:
        """All per-example gradients at once (tests and small models): {index: (B, out, in)}."""
        out: dict[int, torch.Tensor] = {}
        self.run(input_ids, attention_mask, labels, lambda i, g: out.__setitem__(i, g))
        return dict(sorted(out.items()))

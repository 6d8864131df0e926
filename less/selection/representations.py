"""Mean-pooled last hidden states of the selector model (no LoRA), for RDS and KCenter selection."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from less.data.formats import Encoded
from less.gradients.features import pad_batch, token_budget_batches


@torch.no_grad()
def mean_pooled(model, enc: Encoded, pad_id: int, device: torch.device, token_budget: int = 4096,
                max_batch: int = 64, desc: str = "representations") -> np.ndarray:
    """(N, hidden) float32: the last layer's hidden states averaged over each example's tokens."""
    model.eval()
    out = np.zeros((len(enc), model.config.hidden_size), dtype=np.float32)
    for idx in tqdm(token_budget_batches([len(x) for x in enc.input_ids], token_budget, max_batch), desc=desc,
                    leave=False):
        ids, mask, _ = pad_batch(enc, idx, pad_id, device)
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1].float()
        m = mask.unsqueeze(-1).float()
        out[idx] = ((hidden * m).sum(1) / m.sum(1)).cpu().numpy()
    return out

"""The training loss: mean over examples of each example's token-mean loss (the paper's recipe)."""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from less.training import ExampleMeanTrainer
from tests.test_gradients import tiny_lora_model, variable_batch


def test_example_mean_loss_matches_per_example_hf_losses(tmp_path):
    model = tiny_lora_model()
    model.eval()
    ids, mask, labels = variable_batch([9, 4, 12])
    trainer = ExampleMeanTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[],
                                                                     use_cpu=True))
    got = trainer.compute_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels.clone()})
    singles = []
    for r in range(3):
        n = int(mask[r].sum())
        singles.append(model(input_ids=ids[r: r + 1, :n], attention_mask=mask[r: r + 1, :n],
                             labels=labels[r: r + 1, :n]).loss)
    torch.testing.assert_close(got, torch.stack(singles).mean(), rtol=1e-5, atol=1e-6)
    token_mean = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert not torch.isclose(got, token_mean)  # the two weightings really differ here

"""Per-example gradients, the Adam map and moment loading, and the projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from less.data.formats import Encoded
from less.gradients.adam import adam_direction, load_moments
from less.gradients.features import FeatureExtractor
from less.gradients.per_example import PerExampleGradients, per_example_loss
from less.gradients.projection import RademacherProjector
from less.errors import DataError


def tiny_lora_model(seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      pad_token_id=0, attn_implementation="eager")
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(
        r=4, lora_alpha=16, lora_dropout=0.5, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():  # LoRA B starts at zero, which would make every A gradient zero
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model


def variable_batch(lengths, n_prompt=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(1, 50, (n,), generator=g)
        mask[r, :n] = 1
        labels[r, n_prompt:n] = ids[r, n_prompt:n]
    return ids, mask, labels


def batch1_grads(model, ids, mask, labels):
    """Reference: one example at a time, unpadded, plain autograd."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for r in range(ids.shape[0]):
        n = int(mask[r].sum())
        logits = model(input_ids=ids[r: r + 1, :n], attention_mask=mask[r: r + 1, :n]).logits
        loss = per_example_loss(logits, labels[r: r + 1, :n]).sum()
        out.append([g.detach() for g in torch.autograd.grad(loss, params)])
    return out


def test_per_example_gradients_equal_batch_size_one():
    model = tiny_lora_model()
    model.eval()  # dropout 0.5 would otherwise make the comparison random
    ids, mask, labels = variable_batch([9, 5, 12, 7])
    ref = batch1_grads(model, ids, mask, labels)
    collector = PerExampleGradients(model)
    got = collector(ids, mask, labels)
    collector.close()
    assert len(got) == len(ref[0]) == 12  # 2 layers x 3 modules x (A, B)
    for p, g in got.items():
        for r in range(ids.shape[0]):
            torch.testing.assert_close(g[r], ref[r][p], rtol=1e-4, atol=1e-6)
    assert all(any(g[r].abs().sum() > 0 for r in range(4)) for g in got.values())


def test_logits_only_from_the_first_labelled_prediction_change_no_gradient():
    """The extraction computes the logits from the batch's first position that predicts a label on;
    the gradients equal those of the full logits (stated tolerance rtol 1e-5), and the output layer
    really saw fewer positions."""
    from less.gradients.per_example import first_predicting_position

    model = tiny_lora_model()
    model.eval()
    ids, mask, labels = variable_batch([9, 5, 12, 7], n_prompt=4)
    labels[2, :6] = -100  # prompts of different lengths: the cut is at the shortest
    assert first_predicting_position(labels) == 3
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape[1]))
    full, cut = PerExampleGradients(model, labelled_logits=False), PerExampleGradients(model)
    a, b = full(ids, mask, labels), cut(ids, mask, labels)
    full.close(), cut.close(), hook.remove()
    assert rows == [12, 12 - 3]
    for p in a:
        torch.testing.assert_close(b[p], a[p], rtol=1e-5, atol=1e-7)


def test_padding_contributes_nothing():
    model = tiny_lora_model()
    model.eval()
    ids, mask, labels = variable_batch([6, 10])
    collector = PerExampleGradients(model)
    short_alone = collector(ids[:1, :6], mask[:1, :6], labels[:1, :6])
    padded = collector(ids, mask, labels)
    collector.close()
    for p in short_alone:
        torch.testing.assert_close(padded[p][0], short_alone[p][0], rtol=1e-4, atol=1e-6)


def test_non_linear_trainable_parameter_is_rejected():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    with pytest.raises(ValueError, match="not a Linear weight"):
        PerExampleGradients(model)


def test_adam_direction_matches_formula():
    rng = np.random.default_rng(0)
    g, m = rng.normal(size=100), rng.normal(size=100) * 0.1
    v = rng.random(100) * 1e-3
    b1, b2, eps = 0.9, 0.999, 1e-8
    expected = np.array([(b1 * m[i] + (1 - b1) * g[i]) / np.sqrt(b2 * v[i] + (1 - b2) * g[i] ** 2 + eps)
                         for i in range(100)])
    got = adam_direction(*(torch.tensor(x) for x in (g, m, v)), b1, b2, eps).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def _optimizer_checkpoint(tmp_path, name_keyed=False):
    """A real AdamW state after two steps, with parameter groups in a non-trivial order."""
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False), nn.Linear(2, 5, bias=False))
    named = list(model.named_parameters())
    groups = [{"params": [named[2][1], named[0][1]]}, {"params": [named[1][1]], "weight_decay": 0.0}]
    order = [named[2][0], named[0][0], named[1][0]]
    opt = torch.optim.AdamW(groups, lr=0.1)
    for _ in range(2):
        model(torch.randn(6, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    sd = opt.state_dict()
    if name_keyed:
        sd["state"] = {order[i]: s for i, s in sd["state"].items()}
    torch.save(sd, tmp_path / "optimizer.pt")
    truth = {n: (opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]) for n, p in named}
    return order, {n: tuple(p.shape) for n, p in named}, truth


@pytest.mark.parametrize("name_keyed", [False, True])
def test_moments_are_matched_by_name_in_both_layouts(tmp_path, name_keyed):
    order, shapes, truth = _optimizer_checkpoint(tmp_path, name_keyed)
    got = load_moments(tmp_path, order, shapes).by_name
    for n, (m, v) in truth.items():
        torch.testing.assert_close(got[n][0], m)
        torch.testing.assert_close(got[n][1], v)


def test_moment_shape_mismatch_is_an_error(tmp_path):
    order, shapes, _ = _optimizer_checkpoint(tmp_path)
    shapes[order[0]] = (7, 7)
    with pytest.raises(DataError, match="shape"):
        load_moments(tmp_path, order, shapes)
    with pytest.raises(DataError, match="optimizer state missing"):  # names both layouts' files
        load_moments(tmp_path / "nowhere", order, shapes)


def test_projection_is_a_pure_function_with_prefix_property():
    x = torch.randn(5, 300)
    big = RademacherProjector(600, seed=0, device=torch.device("cpu"))
    small = RademacherProjector(100, seed=0, device=torch.device("cpu"), cache_bytes=0)
    full = big.project(3, x)
    assert torch.equal(small.matrix(3, 300), big.matrix(3, 300)[:, :100])  # exactly the prefix
    torch.testing.assert_close(small.project(3, x), full[:, :100], rtol=1e-5, atol=1e-4)
    # row-by-row equals batched (independent of batching), up to float summation order
    torch.testing.assert_close(torch.cat([big.project(3, x[i: i + 1]) for i in range(5)]), full,
                               rtol=1e-5, atol=1e-4)
    m = big.matrix(3, 300)
    assert set(m.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(RademacherProjector(600, 1, torch.device("cpu")).project(3, x), full)
    assert not torch.equal(big.project(4, x), full)  # each parameter gets its own matrix


def test_projection_preserves_inner_products_approximately():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2000, generator=g)
    p = RademacherProjector(4096, seed=0, device=torch.device("cpu")).project(0, x) / 4096 ** 0.5
    cos = lambda a: torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(a, dim=1).T
    assert (cos(p) - cos(x)).abs().max() < 0.08


def test_features_are_normalised_and_order_preserving():
    model = tiny_lora_model()
    ids, mask, labels = variable_batch([9, 5, 12, 7])
    enc = Encoded([f"e{i}" for i in range(4)],
                  [ids[r, : int(mask[r].sum())].tolist() for r in range(4)],
                  [labels[r, : int(mask[r].sum())].tolist() for r in range(4)])
    def features(batch):
        ex = FeatureExtractor(model, pad_id=0, dims=[16, 64], seed=0, device=torch.device("cpu"), max_batch=batch)
        try:
            return ex.features(enc, list(range(len(enc))))
        finally:
            ex.close()

    feats, one_by_one = features(3), features(1)
    for d in (16, 64):
        assert feats[d].shape == (4, d)
        np.testing.assert_allclose(np.linalg.norm(feats[d], axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(feats[d], one_by_one[d], rtol=1e-4, atol=1e-5)
    assert not model.training  # features are taken in eval mode

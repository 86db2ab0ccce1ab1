"""Baselines: shapes, masks, reference paths, overfitting, determinism, bad configs."""

from __future__ import annotations

import pytest
import torch

from infnet.baselines import BASELINES, DCNv2, HSTULayer, MMoE
from infnet.config import ModelConfig
from infnet.model import build_model, count_parameters, multitask_loss
from shared.errors import ConfigError
from tests.infnet.model_helpers import pad_more, random_batch, tiny_spec

NAMES = sorted(BASELINES)


def make(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_spec(), ModelConfig(name=name, embed_dim=16, **kw))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_gradients_and_empty_histories(name):
    model = make(name)
    batch = random_batch(tiny_spec(), 8)
    logits = model(batch)
    assert logits.shape == (8, 2)
    multitask_loss(logits, batch["labels"]).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    empty = dict(batch, seq=[torch.zeros_like(s) for s in batch["seq"]])
    assert torch.isfinite(model(empty)).all()


@pytest.mark.parametrize("name", NAMES)
def test_padding_positions_cannot_change_outputs(name):
    model = make(name).eval()
    batch = random_batch(tiny_spec(), 8)
    ref = model(batch)
    torch.testing.assert_close(model(pad_more(batch)), ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        for table in model.embedding.seq_tables:
            table.weight[0] = torch.randn_like(table.weight[0]) * 100
    torch.testing.assert_close(model(batch), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_overfits_one_batch_and_is_deterministic(name):
    batch = random_batch(tiny_spec(), 16, seed=3)

    def run() -> tuple[float, float, torch.Tensor]:
        model = make(name)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(80):
            loss = multitask_loss(model(batch), batch["labels"])
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return losses[0], losses[-1], torch.cat([p.detach().flatten() for p in model.parameters()])

    first, last, params = run()
    assert last < 0.3 * first
    assert torch.equal(params, run()[2])


def test_dcnv2_cross_layer_matches_formula():
    model = make("dcnv2")
    x = torch.randn(4, model.d_in)
    xl = x
    for layer in model.cross:
        xl = x * (xl @ layer.weight.T + layer.bias) + xl
    expected = torch.cat([xl, model.deep(x)], dim=1)
    torch.testing.assert_close(DCNv2.task_inputs(model, x)[:, 0], expected)


def test_mmoe_gates_mix_experts():
    model: MMoE = make("mmoe")
    x = torch.randn(4, model.d_in)
    experts = torch.stack([e(x) for e in model.experts], dim=1)
    gates = torch.softmax(model.gates(x).view(4, 2, -1), dim=-1)
    for t in range(2):
        expected = (gates[:, t, :, None] * experts).sum(1)
        torch.testing.assert_close(model.task_inputs(x)[:, t], expected)


def test_hstu_layer_matches_loop_over_real_keys():
    torch.manual_seed(0)
    layer = HSTULayer(8, 2, 0.0)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    out = layer(x, mask)
    U, V, Q, K = torch.nn.functional.silu(layer.f1(layer.norm_in(x))).chunk(4, dim=-1)
    for b in range(2):
        keys = mask[b].nonzero().flatten()
        heads = []
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            a = torch.nn.functional.silu(Q[b, :, sl] @ K[b, keys, sl].T / 2.0) / len(keys)
            heads.append(a @ V[b, keys, sl])
        expected = x[b] + layer.f2(layer.norm_attn(torch.cat(heads, -1)) * U[b])
        torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-6)


def test_din_attends_to_the_target_item():
    model = make("din").eval()
    batch = random_batch(tiny_spec(), 8)
    other = dict(batch, cat=batch["cat"].clone())
    other["cat"][:, 1] = (other["cat"][:, 1] + 1) % 40
    assert not torch.allclose(model(batch), model(other))


def test_din_unknown_target_field():
    with pytest.raises(ConfigError, match=r"din_target_field 'movie'.*user_id, item_id, age"):
        make("din", din_target_field="movie")


def test_full_attention_is_the_largest_activation_cost():
    """HSTU attends over all M + L + T tokens: its score tensor grows with L^2 (counted, not timed)."""
    model = make("hstu")
    assert count_parameters(model) > 0
    B, N = 2, 3 + 12 + 6 + 2
    seen = []
    handle = torch.nn.functional.silu
    try:
        torch.nn.functional.silu = lambda t, *a, **k: (seen.append(tuple(t.shape)), handle(t, *a, **k))[1]
        model(random_batch(tiny_spec(), B))
    finally:
        torch.nn.functional.silu = handle
    assert (B, 2, N, N) in seen

"""Baselines: shapes, masks, reference paths, overfitting, determinism, bad configs."""

from __future__ import annotations

import pytest
import torch

from infnet import reference
from infnet.baselines import BASELINES, DCNv2, HSTULayer, MMoE
from infnet.build import build_model
from infnet.config import ModelConfig
from infnet.layers import count_parameters
from infnet.model import multitask_loss
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
    torch.testing.assert_close(DCNv2.task_inputs(model, x)[:, 0], reference.dcnv2_task_inputs(model, x))


def test_mmoe_gates_mix_experts():
    model: MMoE = make("mmoe")
    x = torch.randn(4, model.d_in)
    torch.testing.assert_close(model.task_inputs(x), reference.mmoe_task_inputs(model, x))


def test_hstu_layer_matches_loop_over_real_keys():
    torch.manual_seed(0)
    layer = HSTULayer(8, 2, 0.0)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False]])
    torch.testing.assert_close(layer(x, mask), reference.hstu_layer(layer, x, mask), rtol=1e-5, atol=1e-6)


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
    d, vocab, tasks = 16, 30 + 40 + 7 + 40 + 19, 2  # tiny_spec: 3 categorical + 2 sequence tables
    layer = 2 * 2 * d + (d * 4 * d + 4 * d) + (d * d + d)  # two LayerNorms, f1, f2
    tower = (d * 64 + 64) + (64 * 32 + 32) + (32 + 1)  # tower_dims [64, 32], then the logit
    tower += 2 * (64 + 32)  # a BatchNorm (weight, bias) after each hidden Linear (model.mlp_norm)
    assert count_parameters(model) == vocab * d + tasks * d + 2 * layer + 2 * d + tasks * tower
    B, N = 2, 3 + 12 + 6 + 2
    seen = []
    handle = torch.nn.functional.silu
    try:
        torch.nn.functional.silu = lambda t, *a, **k: (seen.append(tuple(t.shape)), handle(t, *a, **k))[1]
        model(random_batch(tiny_spec(), B))
    finally:
        torch.nn.functional.silu = handle
    assert (B, 2, N, N) in seen

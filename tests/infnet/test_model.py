"""INFNet: shapes, masks, reference paths, ablation switches, determinism, overfitting, bad inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from infnet import reference
from infnet.build import build_model
from infnet.config import ModelConfig
from infnet.model import (
    CrossAttention,
    INFNet,
    MaskedAttention,
    ProxyGatedUnit,
    SequenceProxies,
    block_plans,
    cross_attention_sums,
    key_mask,
    masked_mean,
    multitask_loss,
)
from shared.errors import ConfigError, DataError
from tests.infnet.model_helpers import pad_more, random_batch, tiny_spec

VARIANTS = {
    "default": {},
    "equations": {"gate_uses": "layer_l", "residual": False, "norm": "none", "n_blocks": 3},
    "k_proxies": {"seq_proxy_mode": "k", "n_seq_proxies": 2, "seq_pool": "mean"},
    "no_task_tokens": {"use_task_tokens": False},
    "no_pgu": {"use_pgu": False},
    "no_cross_attention": {"use_cross_attention": False},
    "one_block": {"n_blocks": 1, "n_heads": 4},
}


def make(**kw) -> INFNet:
    torch.manual_seed(0)
    return INFNet(tiny_spec(), ModelConfig(embed_dim=16, **kw))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_and_every_parameter_gets_a_gradient(variant):
    model = make(**VARIANTS[variant])
    batch = random_batch(tiny_spec(), 8)
    logits = model(batch)
    assert logits.shape == (8, 2)
    multitask_loss(logits, batch["labels"]).backward()
    # only parts that reach the towers are built: DDP needs no find_unused_parameters
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padding_positions_cannot_change_outputs(variant):
    model = make(**VARIANTS[variant]).eval()
    batch = random_batch(tiny_spec(), 8)
    ref = model(batch)
    # more padding (on both sides of the real items)
    padded = pad_more(batch)
    padded["seq"] = [torch.cat([torch.zeros_like(s[:, :3]), s], dim=1) for s in padded["seq"]]
    torch.testing.assert_close(model(padded), ref, rtol=1e-5, atol=1e-6)
    # garbage in the padding embedding rows
    with torch.no_grad():
        for table in model.embedding.seq_tables:
            table.weight[0] = torch.randn_like(table.weight[0]) * 100
    torch.testing.assert_close(model(batch), ref, rtol=1e-5, atol=1e-6)


def test_real_history_does_change_outputs():
    model = make().eval()
    batch = random_batch(tiny_spec(), 8)
    other = dict(batch, seq=[s.clone() for s in batch["seq"]])
    other["seq"][0][batch["seq"][0] != 0] = 1  # replace every real item by item 1
    assert not torch.allclose(model(batch), model(other))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_empty_histories_give_finite_outputs_and_gradients(variant):
    model = make(**VARIANTS[variant])
    batch = random_batch(tiny_spec(), 4)
    batch["seq"] = [torch.zeros_like(s) for s in batch["seq"]]
    logits = model(batch)
    assert torch.isfinite(logits).all()
    multitask_loss(logits, batch["labels"]).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cross_attention_matches_reference_loop():
    torch.manual_seed(0)
    ca = CrossAttention(16, 4, 0.0).eval()
    q, kv = torch.randn(5, 3, 16), torch.randn(5, 9, 16)
    mask = torch.rand(5, 9) > 0.4
    mask[0] = False  # an empty history
    out = ca(q, kv, mask)
    torch.testing.assert_close(out, reference.cross_attention(ca, q, kv, mask), rtol=1e-5, atol=1e-5)
    assert torch.equal(out[0], torch.zeros(3, 16))
    torch.testing.assert_close(ca(q, kv), reference.cross_attention(ca, q, kv, None), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode, pool", [("per_behaviour", "sum"), ("per_behaviour", "mean"), ("k", "sum")])
def test_sequence_proxies_and_pgu_match_loops(mode, pool):
    torch.manual_seed(0)
    sp = SequenceProxies(8, mode, 3, pool)
    S = [torch.randn(3, 5, 8), torch.randn(3, 2, 8)]
    masks = [torch.rand(3, 5) > 0.5, torch.tensor([[True, False], [False, False], [True, True]])]
    masks[0][1] = False  # sample 1 has no history at all: zero proxies, not NaN
    S = [s * m.unsqueeze(-1) for s, m in zip(S, masks)]
    out = sp(S, masks)
    assert out.shape == (3, 2 if mode == "per_behaviour" else 3, 8)
    torch.testing.assert_close(out, reference.sequence_proxies(sp, S, masks), rtol=1e-5, atol=1e-6)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    pgu = ProxyGatedUnit(2, 8, 16)
    X, P = torch.randn(3, 7, 8), torch.randn(3, 2, 8)
    torch.testing.assert_close(pgu(X, P), reference.proxy_gated_unit(pgu, X, P))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_forward_equals_the_per_attention_implementation(variant):
    """The fast path (query-side CAs fused per key set, pooled phi_seq, hand-written attention backward) and
    the previous implementation (one key-projecting SDPA per CA, ``reference.infnet_forward``) compute the
    same function: outputs and every gradient, in float64."""
    torch.manual_seed(0)
    model = INFNet(tiny_spec(3), ModelConfig(embed_dim=16, **VARIANTS[variant])).double()
    batch = random_batch(tiny_spec(3), 12, seed=3, empty_rows=2)
    for mode in ("train", "eval"):
        model.train(mode == "train")
        fast, slow = model(batch), reference.infnet_forward(model, batch)
        assert fast.dtype == torch.float64
        torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
        params = [p for p in model.parameters()]
        g_fast = torch.autograd.grad(fast.square().sum(), params)
        g_slow = torch.autograd.grad(reference.infnet_forward(model, batch).square().sum(), params)
        for (name, _), a, b in zip(model.named_parameters(), g_fast, g_slow):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10, msg=name)


def test_masked_attention_backward_passes_gradcheck():
    """The hand-written backward of ``MaskedAttention`` against finite differences (an empty-history row,
    a fully masked key and a short key set that takes the elementwise softmax)."""
    g = torch.Generator().manual_seed(0)
    Q = torch.randn(3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    K = torch.randn(3, 40, 5, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.rand(3, 40, generator=g) > 0.5
    mask[1] = False
    km = key_mask(mask, torch.float64)
    assert torch.autograd.gradcheck(lambda q, k: MaskedAttention.apply(q, k, km.bias, km.has_key), (Q, K))
    assert torch.autograd.gradcheck(lambda q, k: MaskedAttention.apply(q, k, None, None), (Q, K[:, :6]))
    out = MaskedAttention.apply(Q, K, km.bias, km.has_key)
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_key_mask_bias_and_has_key():
    """0 for a real key, -inf for padding, 0 everywhere for a row without keys (with has_key 0), in the
    scores' dtype; the same under torch.compile's fake tensors (shape and dtype of the custom op)."""
    mask = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    km = key_mask(mask, torch.float64)
    inf = float("inf")
    want = torch.tensor([[[0.0, -inf, 0.0]], [[0.0, 0.0, 0.0]], [[-inf, 0.0, -inf]]], dtype=torch.float64)
    assert torch.equal(km.bias, want) and km.bias.dtype == torch.float64
    assert torch.equal(km.has_key, torch.tensor([[[1.0]], [[0.0]], [[1.0]]], dtype=torch.float64))
    assert km.mask is mask
    torch.library.opcheck(torch.ops.infnet.key_bias, (mask, mask.any(dim=1, keepdim=True), torch.float32))


def test_first_block_keys_from_normed_tables_equal_normed_tokens():
    """LN(E)[ids] (the first block's sequence keys) = LN(E[ids]) at every real position."""
    model = make()
    batch = random_batch(tiny_spec(), 8)
    keys = model._first_sequence_keys(batch["seq"])
    _, S_list, masks = model.embedding(batch["cat"], batch["seq"])
    want = model.blocks[0].norms["S"](torch.cat(S_list, dim=1))
    real = torch.cat(masks, dim=1)
    torch.testing.assert_close(keys[real], want[real])
    assert make(norm="none")._first_sequence_keys(batch["seq"]) is None


def test_cross_attention_sums_equal_separate_attentions():
    """All CAs of a block in one call = each CA alone (``reference.cross_attention_sdpa``), summed per query."""
    torch.manual_seed(0)
    cas = {p: CrossAttention(8, 2, 0.0) for p in ("cp_s", "cp_t", "t_s", "t_c")}
    queries = {"cp": torch.randn(4, 3, 8), "t": torch.randn(4, 2, 8)}
    mask = torch.rand(4, 11) > 0.5
    mask[0] = False
    keys = {"s": (torch.randn(4, 11, 8), mask), "c": (torch.randn(4, 5, 8), None), "t": (queries["t"], None)}
    sums = cross_attention_sums(cas, queries, keys)
    for x in ("cp", "t"):
        want = sum(
            reference.cross_attention_sdpa(cas[p], queries[x], *keys[p[-1]]) for p in cas if p[:-2] == x
        )
        torch.testing.assert_close(sums[x], want, rtol=1e-5, atol=1e-6)


def test_masked_mean_matches_loop():
    kv, mask = torch.randn(4, 6, 8), torch.rand(4, 6) > 0.5
    mask[2] = False
    out = masked_mean(kv, mask, 3)
    torch.testing.assert_close(out, reference.masked_mean(kv, mask, 3))
    assert torch.equal(out[2], torch.zeros(3, 8))
    torch.testing.assert_close(masked_mean(kv, None, 2), reference.masked_mean(kv, None, 2))


def names(model) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def test_ablation_switches_remove_their_part():
    full, no_t, no_pgu, no_ca = (
        make(),
        make(use_task_tokens=False),
        make(use_pgu=False),
        make(use_cross_attention=False),
    )
    assert "task_tokens" in names(full) and "task_tokens" not in names(no_t)
    assert not any(".cross.t_" in n or "_t." in n for n in names(no_t))  # no CA touching the task tokens
    assert any("pgu_" in n for n in names(no_t))  # the other parts stay
    assert not any("pgu_" in n for n in names(no_pgu)) and any("pgu_" in n for n in names(full))
    assert not any(isinstance(m, ProxyGatedUnit) for m in no_pgu.modules())
    assert any(isinstance(m, CrossAttention) for m in no_pgu.modules())
    assert not any(isinstance(m, CrossAttention) for m in no_ca.modules())
    assert any(isinstance(m, ProxyGatedUnit) for m in no_ca.modules())
    for ablated in (no_t, no_pgu, no_ca):
        assert sum(p.numel() for p in ablated.parameters()) < sum(p.numel() for p in full.parameters())


def test_ablated_parts_really_act_in_the_full_model():
    """Perturbing a part's weights changes the full model's output: each switch removes a part that acts."""
    batch = random_batch(tiny_spec(), 8)
    for part in ("cross", "pgu_task"):
        model = make().eval()
        ref = model(batch)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if part in n:
                    p.add_(torch.randn_like(p))
        assert not torch.allclose(model(batch), ref), part
    # without task tokens, the towers read the shared task tokens
    model = make(use_task_tokens=False).eval()
    ref = model(batch)
    with torch.no_grad():
        model.shared_task_tokens.add_(torch.randn_like(model.shared_task_tokens))
    assert not torch.allclose(model(batch), ref)


def test_block_plan_of_the_equations_drops_dead_proxy_updates():
    plans = block_plans(ModelConfig(n_blocks=2, gate_uses="layer_l"))
    assert [p.update_cat_seq_proxies for p in plans] == [False, False]
    assert [p.gate_cat_seq for p in plans] == [True, False]
    plans = block_plans(ModelConfig(n_blocks=2, gate_uses="layer_l_plus_1"))
    assert [p.update_cat_seq_proxies for p in plans] == [True, False]


def test_seeded_determinism():
    batch = random_batch(tiny_spec(), 16)

    def run() -> torch.Tensor:
        model = make(dropout=0.1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(1)
        for _ in range(3):
            loss = multitask_loss(model(batch), batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_overfits_one_batch():
    spec = tiny_spec()
    batch = random_batch(spec, 16, seed=3)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(80):
        loss = multitask_loss(model(batch), batch["labels"])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first


def test_loss_weights():
    logits, labels = torch.randn(6, 2), torch.randint(0, 2, (6, 2)).float()
    one = multitask_loss(logits[:, :1], labels[:, :1])
    torch.testing.assert_close(multitask_loss(logits, labels, [1.0, 0.0]), one)
    with pytest.raises(ConfigError, match="loss_weights"):
        multitask_loss(logits, labels, [1.0])


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"embed_dim": 10, "n_heads": 4}, "divisible"),
        ({"n_blocks": 0}, "n_blocks"),
        ({"dropout": 1.5}, "dropout"),
        ({"name": "nope"}, "unknown"),
    ],
)
def test_bad_model_config(kw, match):
    cfg = dataclasses.replace(ModelConfig(), **kw)
    with pytest.raises(ConfigError, match=match):
        build_model(tiny_spec(), cfg)


def test_bad_batches():
    model = make()
    batch = random_batch(tiny_spec(), 4)
    with pytest.raises(DataError, match="categorical"):
        model(dict(batch, cat=batch["cat"][:, :2]))
    with pytest.raises(DataError, match="sequences"):
        model(dict(batch, seq=batch["seq"][:1]))
    bad = batch["cat"].clone()
    bad[0, 1] = 40  # item_id vocabulary is 40
    with pytest.raises(DataError, match="item_id"):
        model(dict(batch, cat=bad))

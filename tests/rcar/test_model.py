"""RCAR model: shapes, masks on padded words, K=0 == baseline, regulators matter, fast paths == the references
(float64, tight, with mutations of the fast path that the comparison must catch), dropout's distribution and
the length groups of the training batch."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import rcar.model
from rcar.bench import flops_per_pair
from rcar.config import ModelConfig
from rcar.model import (
    RCAR,
    AggregationRegulator,
    Dropout,
    cross_attention,
    dropout_keep,
    group_by_length,
    l2norm,
)
from rcar.reference import reference_batch_sims, reference_sims
from shared.errors import ConfigError

MODES = ("baseline", "rcr", "rar", "rcar")
DIRECTIONS = ("t2i", "i2t")
VOCAB = 40
EVERY_VARIANT = pytest.mark.parametrize("mode, direction", [(m, d) for m in MODES for d in DIRECTIONS])


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_cfg(mode: str = "rcar", direction: str = "t2i", **kw) -> ModelConfig:
    return ModelConfig(
        mode=mode, direction=direction, img_dim=20, embed_size=16, word_dim=12, sim_dim=8, **kw
    )


def make_batch(n_img: int = 5, n_cap: int = 7, regions: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_img, regions, 20, generator=g)
    lengths = torch.randint(3, 9, (n_cap,), generator=g)
    lengths[0] = 8  # the longest fills the padded width
    captions = torch.randint(4, VOCAB, (n_cap, 8), generator=g)
    captions[torch.arange(8)[None, :] >= lengths[:, None]] = 0
    return images, captions, lengths


def embed(model: RCAR, images, captions, lengths):
    with torch.no_grad():
        return model.forward_emb(images, captions, lengths)


def embedded_batch(mode: str, direction: str):
    """A seeded eval-mode model and the embeddings of ``make_batch()``: model, images, captions, lengths."""
    torch.manual_seed(0)
    model = RCAR(tiny_cfg(mode, direction), VOCAB).eval()
    images, captions, lengths = make_batch()
    return model, *embed(model, images, captions, lengths), lengths


@EVERY_VARIANT
def test_fast_path_equals_per_caption_reference(mode: str, direction: str) -> None:
    """float32 at the default init: padded, masked, vectorised sims == the official per-caption loop."""
    model, img, cap, lengths = embedded_batch(mode, direction)
    with torch.no_grad():
        fast = model.pair_sims(img, cap, lengths)
        ref = reference_sims(model, img, cap, lengths)
    assert fast.shape == ref.shape == (5, 7)
    assert torch.isfinite(fast).all()
    assert (fast - ref).abs().max() <= 2e-6


# ---------------------------------------------------------------------- float64 exactness and mutations
TIGHT = 1e-12  # float64: the paths agree to ~1e-15; every mutation below moves scores by >= 4e-4
WEIGHT_SCALE = 3.0  # at Xavier init scores barely spread and a wrong pooling moves them by ~1e-7


def spread_model(mode: str, direction: str) -> RCAR:
    """A float64 eval-mode model whose head weights are scaled and biases random, so the scores spread."""
    torch.manual_seed(0)
    model = RCAR(tiny_cfg(mode, direction), VOCAB).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.sim.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.mul_(WEIGHT_SCALE)
                mod.bias.copy_(0.5 * torch.randn(mod.bias.shape, generator=g, dtype=torch.float64))
    return model


def unit_embeddings(n_img: int = 5, n_cap: int = 7, regions: int = 4, width: int = 8):
    """float64 unit-norm region and word embeddings (zeros past each caption's length), lengths 3..width."""
    g = torch.Generator().manual_seed(0)
    img = nn.functional.normalize(torch.randn(n_img, regions, 16, generator=g, dtype=torch.float64), dim=-1)
    lengths = torch.randint(3, width + 1, (n_cap,), generator=g)
    lengths[0] = width
    cap = nn.functional.normalize(torch.randn(n_cap, width, 16, generator=g, dtype=torch.float64), dim=-1)
    return img, cap * (torch.arange(width)[None, :, None] < lengths[:, None, None]), lengths


def eval_path_gap(model: RCAR) -> float:
    """Max |fast no-grad evaluation - per-caption reference| (inf where the fast path gives NaN)."""
    img, cap, lengths = unit_embeddings()
    with torch.no_grad():
        gap = (model.pair_sims(img, cap, lengths) - reference_sims(model, img, cap, lengths)).abs()
    return float(gap.nan_to_num(nan=float("inf")).max())


def train_path_gap(model: RCAR) -> float:
    """Max |fast autograd forward of a batch (3 length groups) - the pre-speed-up batch reference|."""
    images, captions, lengths = make_batch(n_img=7, n_cap=7)
    images = images.double()
    fast = model(images, captions, lengths, length_groups=3)  # with autograd: the training branches
    gap = (fast - reference_batch_sims(model, images, captions, lengths)).detach().abs()
    return float(gap.nan_to_num(nan=float("inf")).max())


@EVERY_VARIANT
def test_fast_paths_equal_the_references_in_float64(mode: str, direction: str) -> None:
    """Scaled weights (scores spread), float64, 1e-12: evaluation == the per-caption loop, and the training
    forward (length groups, fused tanh, cheaper L2 norm backward) == the batch reference, gradients included."""
    model = spread_model(mode, direction)
    img, cap, lengths = unit_embeddings()
    with torch.no_grad():
        ref = reference_sims(model, img, cap, lengths)
    assert ref.std() > 0.04  # the scores spread: a wrong pooling or attention shows
    assert eval_path_gap(model) <= TIGHT
    assert train_path_gap(model) <= TIGHT

    images, captions, lengths = make_batch(n_img=7, n_cap=7)
    images = images.double()
    params = [p for p in model.parameters() if p.requires_grad]
    weights = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fast = torch.autograd.grad((model(images, captions, lengths, length_groups=3) * weights).sum(), params,
                               allow_unused=True)  # fmt: skip
    ref = torch.autograd.grad((reference_batch_sims(model, images, captions, lengths) * weights).sum(), params,
                              allow_unused=True)  # fmt: skip
    scale = max(float(r.abs().max()) for r in ref if r is not None)
    for name, a, b in zip(
        [n for n, p in model.named_parameters() if p.requires_grad], fast, ref, strict=True
    ):
        assert (a is None) == (b is None), name
        if a is not None:
            assert (a - b).abs().max() <= 1e-10 * scale, name


class SoftmaxOverQueries:
    """``rcar.model``'s ``torch`` with the cross-attention softmax (over the context axis 1 of the (G, Lc, N, Lq)
    map) moved to the query axis; counts how often it bit."""

    def __init__(self) -> None:
        self.hits = 0

    def __getattr__(self, name: str):
        return getattr(torch, name)

    def softmax(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        if x.dim() == 4 and dim == 1:
            self.hits += 1
            dim = 3
        return torch.softmax(x, dim)


def mutate(name: str, model: RCAR, monkeypatch: pytest.MonkeyPatch):
    """Apply one mutation of the fast path; returns a callable giving how often the mutated code ran."""
    if name == "normalised initial h":  # h0 = l2norm(mean_t s_t) instead of the unnormalised mean
        calls = []
        original = rcar.model.mean_over_queries
        monkeypatch.setattr(
            rcar.model, "mean_over_queries", lambda x, mask: calls.append(1) or l2norm(original(x, mask))
        )
        return lambda: len(calls)
    if name == "no tanh on the RAR query":  # q_h = Drop(W_q h) instead of Drop(tanh(W_q h))
        for rar in model.sim.rar:
            monkeypatch.setitem(rar.query._modules, "1", nn.Identity())
        return lambda: len(model.sim.rar)
    proxy = SoftmaxOverQueries()  # "attention softmax over the queries"
    monkeypatch.setattr(rcar.model, "torch", proxy)
    return lambda: proxy.hits


MUTATIONS = [
    (mutation, mode, direction)
    for mutation, modes in (
        ("normalised initial h", ("rar", "rcar")),
        ("no tanh on the RAR query", ("rar", "rcar")),
        ("attention softmax over the queries", MODES),
    )
    for mode in modes
    for direction in DIRECTIONS
]


@pytest.mark.parametrize("mutation, mode, direction", MUTATIONS)
@pytest.mark.parametrize("path", ["eval", "train"])
def test_the_exactness_check_fails_on_each_mutation(mutation, mode, direction, path, monkeypatch) -> None:
    """Each deliberate bug in the fast path (monkeypatched here) makes the float64 comparison fail by far."""
    model = spread_model(mode, direction)
    gap_of = eval_path_gap if path == "eval" else train_path_gap
    assert gap_of(model) <= TIGHT
    ran = mutate(mutation, model, monkeypatch)
    gap = gap_of(model)
    assert ran() > 0, "the mutation did not reach the code it targets"
    assert gap > 1e-4, f"{mutation}: the fast path still matches the reference ({gap:.1e})"


# ------------------------------------------------------------------------------------------------ dropout
def test_dropout_keeps_each_element_with_probability_1_minus_p_and_rescales() -> None:
    """The rand >= p mask has nn.Dropout's distribution: kept share 1 - p (5 sigma), kept values x / (1 - p)."""
    torch.manual_seed(0)
    n, p = 1_000_000, 0.4
    keep = dropout_keep(torch.empty(n), p)
    kept = keep != 0
    assert abs(float(kept.double().mean()) - (1 - p)) < 5 * ((p * (1 - p) / n) ** 0.5)
    assert torch.equal(keep[kept], torch.full((int(kept.sum()),), 1 / (1 - p)))
    x = torch.randn(4, 250, 1000)
    layer = Dropout(p).train()
    out = layer(x)
    assert torch.equal(out[out != 0], (x * (1 / (1 - p)))[out != 0])
    assert abs(float(out.mean() - x.mean())) < 0.01 and abs(float((out != 0).double().mean()) - 0.6) < 0.003
    # runs of the mask are independent: the kept share of pairs is (1 - p)^2
    pairs = (kept[:-1] & kept[1:]).double().mean()
    assert abs(float(pairs) - (1 - p) ** 2) < 0.003
    assert torch.equal(layer.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(dropout_keep(x, 1.0), torch.zeros_like(x))


def test_rar_training_dropout_is_dropout_of_tanh() -> None:
    """The fused key dropout keep ⊙ (2σ(2z) - 1) equals Drop(tanh(z)) drawn from the same random numbers."""
    torch.manual_seed(0)
    rar = AggregationRegulator(8, dropout=0.4).double().train()
    s = nn.functional.normalize(torch.randn(3, 4, 5, 8, dtype=torch.float64), dim=-1)
    h = s.mean(2)
    torch.manual_seed(7)
    fast = rar(s, h, None)
    torch.manual_seed(7)  # the same draws, in the same order: the query's mask, then the keys'
    q = tanh_q = torch.tanh(nn.functional.linear(h, rar.query[0].weight, rar.query[0].bias))
    q = q * dropout_keep(tanh_q, 0.4)
    keys = torch.tanh(nn.functional.linear(s, rar.key[0].weight, rar.key[0].bias))
    keys = keys * dropout_keep(keys, 0.4)
    logits = nn.functional.linear(keys * q.unsqueeze(-2), rar.score.weight, rar.score.bias).squeeze(-1)
    pooled = (torch.softmax(logits, -1).unsqueeze(-1) * s).sum(-2)
    expected = pooled / (pooled.norm(dim=-1, keepdim=True) + 1e-8)
    assert (fast - expected).abs().max() <= 1e-12
    assert (fast - rar.eval()(s, h, None)).abs().max() > 1e-3  # dropout did act in training


# ------------------------------------------------------------------------------------------ length groups
def padded_tokens(groups: list[tuple[torch.Tensor, int]]) -> int:
    return sum(len(idx) * width for idx, width in groups)


def test_length_groups_cover_the_batch_with_the_fewest_padded_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        lengths = torch.randint(3, 12, (int(torch.randint(1, 14, (1,), generator=g)),), generator=g)
        for k in (1, 2, 3):
            groups = group_by_length(lengths, k)
            order = torch.cat([idx for idx, _ in groups])
            assert sorted(order.tolist()) == list(range(len(lengths))) and len(groups) <= k
            assert all(int(lengths[idx].max()) == width for idx, width in groups)
            # brute force over every split of the sorted distinct lengths into at most k runs
            values = sorted(set(lengths.tolist()))
            counts = [int((lengths == v).sum()) for v in values]
            best = min(
                sum(sum(counts[a:b]) * values[b - 1] for a, b in itertools.pairwise((0, *cuts, len(values))))
                for n_cuts in range(min(k, len(values)))
                for cuts in itertools.combinations(range(1, len(values)), n_cuts)
            )
            assert padded_tokens(groups) == best, (trial, lengths.tolist(), k)
    assert [w for _, w in group_by_length(torch.tensor([7, 7, 8, 9, 9, 9, 12, 15, 22, 27]), 4)] == [
        9,
        15,
        22,
        27,
    ]
    assert len(group_by_length(torch.tensor([5, 5, 5]), 4)) == 1  # one distinct length: one group


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_length_groups_change_no_score(direction: str) -> None:
    model = spread_model("rcar", direction)
    images, captions, lengths = make_batch(n_img=7, n_cap=7)
    images = images.double()
    one = model(images, captions, lengths)
    for k in (2, 3, 7):
        assert (model(images, captions, lengths, length_groups=k) - one).abs().max() <= TIGHT


@EVERY_VARIANT
def test_autograd_path_equals_the_in_place_inference_path(mode: str, direction: str) -> None:
    """Training runs the out-of-place ops autograd needs; evaluation overwrites buffers: same scores."""
    model, img, cap, lengths = embedded_batch(mode, direction)
    with torch.no_grad():
        inference = model.pair_sims(img, cap, lengths)
    img.requires_grad_(True)
    training = model.pair_sims(img, cap, lengths)
    training.sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all()
    assert (training.detach() - inference).abs().max() <= 1e-6


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_padding_does_not_change_scores(direction: str) -> None:
    """Extra padding (and garbage in the padded slots) leaves every similarity unchanged."""
    torch.manual_seed(1)
    model = RCAR(tiny_cfg("rcar", direction), VOCAB).eval()
    images, captions, lengths = make_batch()
    img, cap = embed(model, images, captions, lengths)
    padded = torch.cat([cap, torch.randn(cap.shape[0], 5, cap.shape[2])], dim=1)  # 5 junk positions
    padded[:, : cap.shape[1]][torch.arange(cap.shape[1])[None, :] >= lengths[:, None]] = 7.0  # junk
    with torch.no_grad():
        a = model.pair_sims(img, cap, lengths)
        b = model.pair_sims(img, padded, lengths)
    assert (a - b).abs().max() <= 1e-6


def test_cross_attention_masks_padded_context_words() -> None:
    """i2t: a padded context word gets zero attention, so ĉ ignores it."""
    torch.manual_seed(2)
    q = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)  # 3 images, 4 regions
    ctx = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)  # 2 captions, 5 words
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = cross_attention(q, ctx, None, 3.0, context_mask=mask)
    ctx2 = ctx.clone()
    ctx2[0, 3:] = 100.0
    out2 = cross_attention(q, ctx2, None, 3.0, context_mask=mask)
    assert out.shape == (2, 3, 4, 8)
    assert torch.allclose(out, out2, atol=1e-6)


def test_encoder_shapes_and_norms() -> None:
    model = RCAR(tiny_cfg(), VOCAB).eval()
    images, captions, lengths = make_batch()
    img, cap = embed(model, images, captions, lengths)
    assert img.shape == (5, 4, 16) and cap.shape == (7, 8, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(5, 4), atol=1e-5)
    valid = torch.arange(8)[None, :] < lengths[:, None]
    assert torch.allclose(cap.norm(dim=-1)[valid], torch.ones(int(valid.sum())), atol=1e-5)
    assert cap[~valid].abs().max() == 0  # padded positions are zero vectors


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_rcr_with_zero_steps_is_the_baseline(direction: str) -> None:
    torch.manual_seed(3)
    base = RCAR(tiny_cfg("baseline", direction), VOCAB).eval()
    rcr0 = RCAR(tiny_cfg("rcr", direction), VOCAB).eval()
    rcr0.sim.rcr = torch.nn.ModuleList()  # K = 0: no regulator step
    rcr0.sim.alignment = torch.nn.ModuleList()
    rcr0.load_state_dict(base.state_dict())
    images, captions, lengths = make_batch()
    img, cap = embed(base, images, captions, lengths)
    with torch.no_grad():
        assert torch.allclose(base.pair_sims(img, cap, lengths), rcr0.pair_sims(img, cap, lengths), atol=1e-7)
    assert len(base.sim.rcr) == len(base.sim.rar) == len(base.sim.alignment) == 0


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_regulators_change_the_scores(direction: str) -> None:
    """RCR steps change the baseline's scores; zeroing RCR's update recovers them exactly."""
    torch.manual_seed(4)
    base = RCAR(tiny_cfg("baseline", direction), VOCAB).eval()
    rcr = RCAR(tiny_cfg("rcr", direction), VOCAB).eval()
    rcr.load_state_dict(base.state_dict(), strict=False)
    images, captions, lengths = make_batch()
    img, cap = embed(base, images, captions, lengths)
    with torch.no_grad():
        s_base = base.pair_sims(img, cap, lengths)
        s_rcr = rcr.pair_sims(img, cap, lengths)
        assert (s_base - s_rcr).abs().max() > 1e-4
        for reg in rcr.sim.rcr:  # tanh(0) + m = m and ReLU(0 + λ) = λ: the attention factors never move
            torch.nn.init.zeros_(reg.mlp_m[2].weight)
            torch.nn.init.zeros_(reg.mlp_m[2].bias)
            torch.nn.init.zeros_(reg.mlp_lam[2].weight)
            torch.nn.init.zeros_(reg.mlp_lam[2].bias)
        assert torch.allclose(rcr.pair_sims(img, cap, lengths), s_base, atol=1e-6)
    # RAR steps change the pooled vector: with K=1 vs K=3 the scores differ
    torch.manual_seed(5)
    rar3 = RCAR(tiny_cfg("rar", direction, steps=3), VOCAB).eval()
    rar1 = RCAR(tiny_cfg("rar", direction, steps=1), VOCAB).eval()
    rar1.load_state_dict(rar3.state_dict(), strict=False)
    with torch.no_grad():
        assert (rar1.pair_sims(img, cap, lengths) - rar3.pair_sims(img, cap, lengths)).abs().max() > 1e-5


def test_module_counts_follow_the_official_modes() -> None:
    counts = {}
    for mode in MODES:
        for direction in DIRECTIONS:
            h = RCAR(tiny_cfg(mode, direction), VOCAB).sim
            counts[mode, direction] = (h.steps, len(h.alignment), len(h.rcr), len(h.rar), h.out is not None)
    assert counts["baseline", "t2i"] == (0, 0, 0, 0, False)
    assert counts["rcr", "t2i"] == (2, 2, 2, 0, False) and counts["rcr", "i2t"] == (3, 3, 3, 0, False)
    assert counts["rar", "t2i"] == (3, 1, 0, 3, True) and counts["rar", "i2t"] == (2, 1, 0, 2, True)
    assert counts["rcar", "t2i"] == (2, 2, 1, 2, True) == counts["rcar", "i2t"]  # K-1 RCR updates
    assert RCAR(tiny_cfg("rcr", "t2i"), VOCAB).sim.lam0 == 10.0
    assert RCAR(tiny_cfg("rcr", "i2t"), VOCAB).sim.lam0 == 3.0


def test_bad_step_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="baseline"):
        tiny_cfg("baseline", steps=2).resolved_steps()
    with pytest.raises(ConfigError, match="at least 1"):
        tiny_cfg("rcar", steps=0).resolved_steps()


@pytest.mark.parametrize("mode", MODES)
def test_forward_backward_and_same_seed_same_numbers(mode: str) -> None:
    """Every parameter of every mode gets a gradient (no branch is cut off), and the same seed repeats exactly."""

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(6)
        model = RCAR(tiny_cfg(mode, "t2i"), VOCAB).train()
        sims = model(*make_batch(n_img=6, n_cap=6))
        sims.sum().backward()
        return sims.detach(), {name: p.grad for name, p in model.named_parameters()}

    (s1, g1), (s2, g2) = run(), run()
    assert s1.shape == (6, 6) and torch.equal(s1, s2)
    # RAR's scoring bias shifts every logit of a softmax alike: its exact gradient is 0 (rounding aside)
    shift_invariant = {name for name in g1 if name.startswith("sim.rar.") and name.endswith("score.bias")}
    no_grad = [
        name
        for name, g in g1.items()
        if name not in shift_invariant and (g is None or not bool(g.abs().sum() > 0))
    ]
    assert not no_grad, f"{mode}: no gradient reaches {no_grad}"
    assert all(torch.equal(g1[name], g2[name]) for name in g1)


def test_flops_per_pair_at_paper_dims() -> None:
    """~36 MFLOP per pair for RCAR K=2 t2i with 12 words x 36 regions (the bench's figure)."""
    cfg = ModelConfig(mode="rcar", direction="t2i", steps=2)
    f = flops_per_pair(cfg, 36, 12)
    attn, av = 4 * 12 * 36 * 1024, 2 * 12 * 1024 * 256
    rcr = 2 * 12 * (256 * 512 + 512 * 1024) + 2 * 12 * (256 * 128 + 128)
    rar = 2 * 12 * 256 * 256 + 2 * 256 * 256 + 2 * 12 * 256
    assert f == 2 * attn + 2 * av + rcr + 2 * rar + 2 * 256
    assert 30e6 < f < 40e6

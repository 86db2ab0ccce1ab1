"""RCAR model: shapes, masks on padded words, K=0 == baseline, regulators matter, fast path == official loop."""

from __future__ import annotations

import pytest
import torch

from rcar.bench import flops_per_pair
from rcar.config import ModelConfig
from rcar.model import RCAR, cross_attention
from rcar.reference import reference_sims
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
    """Padded, masked, vectorised sims == the official loop over captions cut to their true length."""
    model, img, cap, lengths = embedded_batch(mode, direction)
    with torch.no_grad():
        fast = model.pair_sims(img, cap, lengths)
        ref = reference_sims(model, img, cap, lengths)
    assert fast.shape == ref.shape == (5, 7)
    assert torch.isfinite(fast).all()
    assert (fast - ref).abs().max() <= 1e-5


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
    no_grad = [name for name, g in g1.items() if g is None or not bool(g.abs().sum() > 0)]
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

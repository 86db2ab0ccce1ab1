"""SCAR and the top-k MoE: the threshold rule, sparse dispatch == dense loop over experts, the auxiliary losses
on hand-computed cases, gradients, and that each expert really runs on its own tokens only."""

from __future__ import annotations

import math

import pytest
import torch

from gem.reference import (
    reference_balance_loss,
    reference_routed_ffn,
    reference_router_probs,
    reference_select_paths,
)
from gem.router import RoutedFFN, load_balancing_loss, router_z_loss, select_paths
from tests.gem.model_helpers import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def routed_ffn(ffn: str = "scar", seed: int = 0, **kw) -> RoutedFFN:
    torch.manual_seed(seed)
    return RoutedFFN(tiny_cfg(ffn, **kw))


def hidden(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, n, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def as_lists(experts: torch.Tensor, weights: torch.Tensor, k: torch.Tensor) -> list[list[tuple[int, float]]]:
    return [[(int(experts[t, j]), float(weights[t, j])) for j in range(int(k[t]))] for t in range(k.numel())]


# ------------------------------------------------------------------------------------------- selection


def test_threshold_rule_on_hand_computed_rows() -> None:
    probs = torch.tensor(
        [
            [0.50, 0.30, 0.15, 0.05],  # 0.5 < 0.75 <= 0.8: two paths
            [0.05, 0.80, 0.10, 0.05],  # 0.8 >= 0.75: one path
            [0.28, 0.22, 0.24, 0.26],  # 0.28, 0.54, 0.78: three paths
        ]
    )
    experts, weights, k = select_paths(probs, 0.75, 1, 3)
    assert k.tolist() == [2, 1, 3]
    assert experts[0, :2].tolist() == [0, 1] and experts[1, 0] == 1 and experts[2].tolist() == [0, 3, 2]
    assert torch.allclose(weights[0], torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0.0]))
    assert torch.allclose(weights[1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(weights[2], torch.tensor([0.28, 0.26, 0.24]) / 0.78)
    # clipping: k_max = 2 caps the third row, k_min = 2 lifts the second
    assert select_paths(probs, 0.75, 2, 2)[2].tolist() == [2, 2, 2]
    assert select_paths(probs, 0.75, 1, 2)[2].tolist() == [2, 1, 2]
    # tau = 1 asks for every path; a total mass a hair below 1 must not overflow k
    assert select_paths(probs * (1 - 1e-7), 1.0, 1, 4)[2].tolist() == [4, 4, 4]


@pytest.mark.parametrize(
    "threshold, k_min, k_max", [(0.5, 1, 4), (0.75, 1, 2), (0.9, 2, 3), (1.0, 1, 3), (0.3, 2, 2)]
)
def test_select_paths_equals_the_per_token_reference(threshold: float, k_min: int, k_max: int) -> None:
    g = torch.Generator().manual_seed(0)
    probs = (3 * torch.randn(200, 4, generator=g, dtype=torch.float64)).softmax(-1)
    experts, weights, k = select_paths(probs, threshold, k_min, k_max)
    got = as_lists(experts, weights, k)
    want = reference_select_paths(probs, threshold, k_min, k_max)
    for a, b in zip(got, want):
        assert [e for e, _ in a] == [e for e, _ in b]
        assert all(math.isclose(wa, wb, rel_tol=1e-12) for (_, wa), (_, wb) in zip(a, b))
    assert ((k >= k_min) & (k <= k_max)).all()
    assert (weights.sum(-1) - 1).abs().max() < 1e-12


def test_scar_uses_a_variable_number_of_paths() -> None:
    ffn = routed_ffn("scar", scar_threshold=0.6, scar_k_min=1, scar_k_max=3)
    with torch.no_grad():
        ffn.router.query.weight.mul_(3.0)  # sharper attention: some tokens are confident, some are not
        _, routing = ffn(hidden(64))
    counts = torch.bincount(routing.k, minlength=4)
    assert counts[1] > 0 and counts[2] + counts[3] > 0, counts
    # and the count is the threshold rule on the router's own probabilities
    want = [len(chosen) for chosen in reference_select_paths(routing.probs, 0.6, 1, 3)]
    assert routing.k.tolist() == want
    assert 1 < routing.mean_k() < 3


def test_moe_uses_exactly_top_k_paths() -> None:
    ffn = routed_ffn("moe", moe_top_k=2)
    with torch.no_grad():
        _, routing = ffn(hidden(16))
    assert (routing.k == 2).all()
    top2 = routing.probs.topk(2, dim=-1).indices
    assert torch.equal(routing.experts, top2)


# ---------------------------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("ffn", ["scar", "moe"])
def test_router_probabilities_equal_the_reference(ffn: str) -> None:
    module = routed_ffn(ffn).double()
    x = hidden(9, dtype=torch.float64).reshape(-1, 32)
    with torch.no_grad():
        probs, _ = module.router(x)
        ref = reference_router_probs(module.router, x)
    assert (probs - ref).abs().max() < 1e-12
    assert (probs.sum(-1) - 1).abs().max() < 1e-12


@pytest.mark.parametrize("ffn", ["scar", "moe"])
@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_dispatch_equals_the_dense_loop_over_experts(ffn: str, seed: int) -> None:
    module = routed_ffn(ffn, seed=seed).double()
    with torch.no_grad():
        module.router.reset_parameters()
        if ffn == "scar":
            module.router.query.weight.mul_(2.0)  # mixed k, so every branch of the dispatch is used
        h = hidden(21, seed=seed, dtype=torch.float64)
        y, routing = module(h)
        ref = reference_routed_ffn(module, h)
    if ffn == "scar":
        assert len(set(routing.k.tolist())) > 1
    assert (y - ref).abs().max() < 1e-12


def test_each_expert_runs_on_its_routed_tokens_only() -> None:
    module = routed_ffn("scar")
    seen: dict[int, int] = {}
    hooks = [
        expert.register_forward_hook(lambda m, inp, out, e=e: seen.__setitem__(e, inp[0].shape[0]))
        for e, expert in enumerate(module.experts)
    ]
    with torch.no_grad():
        _, routing = module(hidden(30))
    for h in hooks:
        h.remove()
    active = routing.active()
    for e in range(4):
        assert seen[e] == int(((routing.experts == e) & active).sum())
    assert sum(seen.values()) == int(routing.k.sum()) < 60 * 4  # fewer rows than a dense evaluation


def test_gradients_reach_router_and_experts() -> None:
    module = routed_ffn("scar")
    h = hidden(24).requires_grad_(True)
    y, routing = module(h)
    (y.square().sum() + routing.balance_loss() + routing.z_loss()).backward()
    r = module.router
    for p in (r.query.weight, r.slots, r.slot_paths, h):
        assert p.grad is not None and p.grad.abs().sum() > 0
    for e, expert in enumerate(module.experts):
        if ((routing.experts == e) & routing.active()).any():
            assert expert.fc.weight.grad.abs().sum() > 0, e


def test_router_gets_a_task_gradient_through_the_renormalised_weights() -> None:
    """With k >= 2 the combined output depends on the router through w = p / sum(p); at k = 1, w = 1."""
    module = routed_ffn("scar", scar_k_min=2, scar_k_max=2)
    y, _ = module(hidden(8))
    y.square().sum().backward()
    assert module.router.query.weight.grad.abs().sum() > 0
    module = routed_ffn("scar", scar_k_min=1, scar_k_max=1)
    y, _ = module(hidden(8))
    y.square().sum().backward()
    grad = module.router.query.weight.grad
    assert grad is None or grad.abs().max() < 1e-6  # only the auxiliary losses train a k = 1 router


# --------------------------------------------------------------------------------------------- losses


def test_load_balancing_loss_on_hand_computed_cases() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    # both tokens on path 0 with k = 1: f = (1, 0), P = (0.65, 0.35) -> 2 * 0.65
    experts, k = torch.tensor([[0, 1], [0, 1]]), torch.tensor([1, 1])
    assert float(load_balancing_loss(probs, experts, k)) == pytest.approx(1.3)
    # token 0 uses both paths, token 1 one: f = (2/3, 1/3) -> 2 * (2/3 * 0.65 + 1/3 * 0.35)
    k = torch.tensor([2, 1])
    assert float(load_balancing_loss(probs, experts, k)) == pytest.approx(2 * (2 / 3 * 0.65 + 1 / 3 * 0.35))
    assert float(load_balancing_loss(probs, experts, k)) == pytest.approx(
        reference_balance_loss(probs, [[0, 1], [0]])
    )
    # a padding token is left out of both f and P: only token 0 -> f = (1/2, 1/2), P = (0.7, 0.3) -> 1
    mask = torch.tensor([True, False])
    assert float(load_balancing_loss(probs, experts, k, mask)) == pytest.approx(1.0)
    # perfectly uniform routing gives 1
    uniform = torch.full((4, 4), 0.25)
    experts = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]])
    assert float(load_balancing_loss(uniform, experts, torch.full((4,), 2))) == pytest.approx(1.0)


def test_load_balancing_loss_equals_the_reference_on_a_routed_batch() -> None:
    module = routed_ffn("scar")
    mask = torch.rand(2, 15, generator=torch.Generator().manual_seed(0)) > 0.3
    with torch.no_grad():
        _, r = module(hidden(15), mask)
    chosen = [[int(e) for e in r.experts[t, : int(r.k[t])]] for t in range(r.k.numel())]
    assert float(r.balance_loss()) == pytest.approx(
        reference_balance_loss(r.probs, chosen, mask.reshape(-1).tolist())
    )


def test_router_z_loss_on_a_hand_computed_case() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # logsumexp = log 2, log 4
    want = (math.log(2) ** 2 + math.log(4) ** 2) / 2
    assert float(router_z_loss(logits)) == pytest.approx(want)
    assert float(router_z_loss(logits, torch.tensor([False, True]))) == pytest.approx(math.log(4) ** 2)

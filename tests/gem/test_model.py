"""GemLM: config checks, shapes and gradients per FFN kind, LM loss, reference equality, classification heads,
distillation loss, dense baselines of equal cost, determinism, overfitting one batch."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import gem.compress
import gem.config
import gem.metrics
import gem.model
import gem.router
from gem.config import ModelConfig, attribute_docs, paper_scale_model_config, undocumented_fields
from gem.model import (
    IGNORE_INDEX,
    continuation_logprob,
    count_params,
    dense_equal_active_compute,
    dense_equal_total_params,
    distillation_kl,
    expected_active_params,
    knowledge_preservation_loss,
)
from gem.reference import reference_forward
from shared.config import config_from_dict, load_config
from shared.errors import ConfigError, DataError
from tests.gem.model_helpers import FFNS, VOCAB, random_tokens, tiny_cfg, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ config


def test_every_dataclass_documents_every_field() -> None:
    classes = [
        obj
        for module in (gem.config, gem.model, gem.router, gem.compress, gem.metrics)
        for obj in vars(module).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
    ]
    assert ModelConfig in classes and len(classes) >= 6
    for cls in classes:
        assert undocumented_fields(cls) == [], cls.__name__
        assert set(attribute_docs(cls)) == {f.name for f in dataclasses.fields(cls)}, cls.__name__


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"scar_k_min": 3, "scar_k_max": 2}, "scar_k_min"),
        ({"n_experts": 4, "scar_k_max": 5}, "scar_k_max"),
        ({"scar_k_min": 0}, "scar_k_min"),
        ({"scar_threshold": 0.0}, "scar_threshold"),
        ({"scar_threshold": 1.5}, "scar_threshold"),
        ({"ffn": "moe", "n_experts": 4, "moe_top_k": 5}, "moe_top_k"),
        ({"ffn": "moe", "moe_top_k": 0}, "moe_top_k"),
        ({"n_experts": 1}, "n_experts"),
        ({"d_model": 30}, "d_model"),
        ({"d_model": 24, "n_heads": 8}, "n_heads"),  # head width 3: RoPE needs an even width
        ({"routed_layers": [0, 4]}, "routed_layers"),
        ({"routed_layers": [1, 1]}, "routed_layers"),
        ({"routed_layers": []}, "routed_layers"),
        ({"task_labels": {"a.b": 3}}, "task_labels"),
        ({"task_labels": {"sst": 1}}, "task_labels"),
        ({"dropout": 1.0}, "dropout"),
        ({"vocab_size": 0}, "vocab_size"),
    ],
)
def test_bad_config_is_a_config_error_naming_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config_from_dict(ModelConfig, overrides)


def test_routing_fields_are_not_checked_for_a_dense_model() -> None:
    ModelConfig(ffn="dense", scar_k_min=3, scar_k_max=2, n_experts=1)


def test_yaml_overrides_reach_the_model_config(tmp_path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("ffn: moe\nmoe_top_k: 1\nrouted_layers: [1, 3]\ntask_labels: {sst: 2}\n")
    cfg = load_config(ModelConfig, path, ["d_model=64"])
    assert (cfg.ffn, cfg.moe_top_k, cfg.routed_layers, cfg.d_model) == ("moe", 1, [1, 3], 64)
    assert [cfg.is_routed(i) for i in range(4)] == [False, True, False, True]
    with pytest.raises(ConfigError, match="scar_threshold"):
        load_config(ModelConfig, path, ["ffn=scar", "scar_threshold=2"])


def test_sizes_of_the_embedded_and_paper_scale_models() -> None:
    dense, scar, moe = (count_params(ModelConfig(ffn=f)) for f in FFNS)
    assert 1.0e6 < dense < 1.5e6 and 4.5e6 < moe < scar < 5.5e6  # 8 paths of d_ff 512
    assert 20e6 < count_params(paper_scale_model_config()) < 30e6


# ------------------------------------------------------------------------------------- forward / loss


@pytest.mark.parametrize("ffn", FFNS)
def test_forward_backward_reaches_every_parameter(ffn: str) -> None:
    model = tiny_model(ffn, task_labels={"sst": 3})
    idx = random_tokens(3, 10)
    out = model(idx, idx.roll(-1, 1))
    assert out.logits.shape == (3, 10, VOCAB) and out.hidden.shape == (3, 10, 32)
    assert out.nll.shape == (3, 10) and torch.isfinite(out.loss)
    cls = model.classify(idx, torch.tensor([10, 4, 1]), "sst", torch.tensor([0, 2, 1]))
    assert cls.logits.shape == (3, 3)
    (out.loss + cls.loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert len(out.routing) == (0 if ffn == "dense" else 2)
    if ffn != "dense":
        assert out.balance_loss > 0 and out.z_loss > 0
        expected = (
            out.lm_loss
            + model.cfg.balance_loss_weight * out.balance_loss
            + model.cfg.z_loss_weight * out.z_loss
        )
        assert torch.allclose(out.loss, expected)


def test_lm_loss_equals_a_manual_cross_entropy() -> None:
    model = tiny_model("scar", balance_loss_weight=0.0, z_loss_weight=0.0)
    idx = random_tokens(2, 9)
    targets = idx.roll(-1, 1)
    targets[1, 5:] = IGNORE_INDEX  # padding carries no loss
    with torch.no_grad():
        out = model(idx, targets)
    logp = out.logits.log_softmax(-1)
    manual, count = 0.0, 0
    for b in range(2):
        for t in range(9):
            if targets[b, t] != IGNORE_INDEX:
                manual -= float(logp[b, t, targets[b, t]])
                assert math.isclose(float(out.nll[b, t]), -float(logp[b, t, targets[b, t]]), rel_tol=1e-5)
                count += 1
            else:
                assert out.nll[b, t] == 0
    assert math.isclose(float(out.lm_loss), manual / count, rel_tol=1e-5)
    assert math.isclose(float(out.loss), manual / count, rel_tol=1e-5)  # no auxiliary weights


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("ffn", FFNS)
def test_forward_equals_the_reference_forward(ffn: str, norm: str) -> None:
    model = tiny_model(ffn, norm=norm).double().eval()
    idx = random_tokens(2, 13, seed=3)
    with torch.no_grad():
        fast = model(idx).logits
        ref = reference_forward(model, idx)
    assert fast.dtype == torch.float64
    assert (fast - ref).abs().max() < 1e-9


def test_routed_layers_picks_the_blocks() -> None:
    model = tiny_model("scar", n_layers=3, routed_layers=[1])
    assert [b.routed for b in model.blocks] == [False, True, False]
    assert len(model(random_tokens(1, 5)).routing) == 1


def test_padding_does_not_change_real_tokens_or_routing_losses() -> None:
    model = tiny_model("scar").eval()
    idx = random_tokens(1, 12)
    padded = torch.cat([idx[:, :7], torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.arange(12)[None, :] < 7
    with torch.no_grad():
        short = model(idx[:, :7])
        full = model(padded, token_mask=mask)
    assert torch.allclose(full.logits[:, :7], short.logits, atol=1e-6)  # causal: right padding is invisible
    assert full.balance_loss is None  # losses only with targets
    for a, b in zip(model.aux_losses(full.routing), model.aux_losses(short.routing)):
        assert torch.allclose(a, b, atol=1e-6)


def test_input_errors_are_data_errors() -> None:
    model = tiny_model("dense")
    with pytest.raises(DataError, match="context_length"):
        model(random_tokens(1, 33))
    with pytest.raises(DataError, match="vocab_size"):
        model(torch.tensor([[1, VOCAB]]))
    model = tiny_model("dense", task_labels={"sst": 2})
    with pytest.raises(ConfigError, match="task 'nli'"):
        model.classify(random_tokens(1, 4), torch.tensor([4]), "nli")
    with pytest.raises(DataError, match="lengths"):
        model.classify(random_tokens(1, 4), torch.tensor([5]), "sst")


# ---------------------------------------------------------------------------------- classification


def test_classification_reads_the_last_real_token() -> None:
    model = tiny_model("scar", task_labels={"sst": 3, "nli": 2}).eval()
    idx = random_tokens(2, 8)
    lengths = torch.tensor([5, 8])
    other = idx.clone()
    other[0, 5:] = 7  # only padding of row 0 changes
    with torch.no_grad():
        a = model.classify(idx, lengths, "sst").logits
        b = model.classify(other, lengths, "sst").logits
        hidden = model(idx[:1, :5]).hidden[0, -1]
        manual = model.heads["sst"](hidden)
        assert model.classify(idx, lengths, "nli").logits.shape == (2, 2)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a[0], manual, atol=1e-5)


def test_continuation_logprob_sums_the_scored_tokens() -> None:
    model = tiny_model("moe").eval()
    ids = random_tokens(2, 7)
    score = torch.zeros(2, 7, dtype=torch.bool)
    score[0, 3:6] = True  # scores ids[0, 4:7]
    score[1, 1:3] = True
    with torch.no_grad():
        got = continuation_logprob(model, ids, score)
        logp = model(ids).logits.log_softmax(-1)
    want0 = sum(float(logp[0, t, ids[0, t + 1]]) for t in (3, 4, 5))
    want1 = sum(float(logp[1, t, ids[1, t + 1]]) for t in (1, 2))
    assert torch.allclose(got, torch.tensor([want0, want1]), atol=1e-5)


# -------------------------------------------------------------------------------------- distillation


def test_distillation_kl_is_t_squared_kl_teacher_to_student() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    T = 2.0
    p_t, p_s = (t / T).softmax(-1), (s / T).softmax(-1)
    manual = T**2 * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert torch.allclose(distillation_kl(s, t, T), manual, atol=1e-6)
    # the authors' call, kl_div(log_softmax(s), softmax(t), batchmean), is the T = 1 case
    authors = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")
    assert torch.allclose(distillation_kl(s, t, 1.0), authors, atol=1e-6)
    assert float(distillation_kl(t, t, T)) == pytest.approx(0.0, abs=1e-6)
    mask = torch.tensor([True, False, True, False])
    assert torch.allclose(distillation_kl(s, t, T, mask), distillation_kl(s[mask], t[mask], T), atol=1e-6)
    # LM logits (B, T, V) with a token mask: rows are tokens
    s3, t3 = s.view(2, 2, 6), t.view(2, 2, 6)
    assert torch.allclose(
        distillation_kl(s3, t3, T, mask.view(2, 2)), distillation_kl(s, t, T, mask), atol=1e-6
    )
    with pytest.raises(ConfigError, match="temperature"):
        distillation_kl(s, t, 0.0)


def test_knowledge_preservation_loss_gradients_reach_the_student_only() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 5, generator=g, requires_grad=True)
    t = torch.randn(3, 5, generator=g, requires_grad=True)
    task = torch.tensor(1.25)
    assert float(knowledge_preservation_loss(task, s, t, alpha=0.0).detach()) == pytest.approx(1.25)
    loss = knowledge_preservation_loss(task, s, t, alpha=0.7, temperature=2.0)
    want = 1.25 + 0.7 * float(distillation_kl(s, t, 2.0).detach())
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


# ------------------------------------------------------------------------------------- cost helpers


def test_active_params_per_token_from_routing_decisions() -> None:
    model = tiny_model("scar")
    out = model(random_tokens(2, 11))
    cost = model.active_params_per_token(out.routing)
    per_expert = 2 * 32 * 48
    router = sum(p.numel() for p in model.blocks[0].ffn.router.parameters())
    mean_k = [float(r.k.double().mean()) for r in out.routing]
    assert cost["mean_k"] == pytest.approx(mean_k)
    assert cost["ffn_active"] == pytest.approx(sum(router + k * per_expert for k in mean_k))
    assert cost["ffn_total"] == 2 * (router + 4 * per_expert)
    assert cost["total"] == model.num_params() == count_params(model.cfg)
    assert cost["active"] == pytest.approx(cost["total"] - cost["ffn_total"] + cost["ffn_active"])
    assert cost["active"] == pytest.approx(expected_active_params(model.cfg, sum(mean_k) / 2))
    dense = tiny_model("dense")
    d = dense.active_params_per_token(dense(random_tokens(1, 4)).routing)
    assert d["active"] == d["total"] and d["ffn_active"] == d["ffn_total"] == 2 * 2 * 32 * 48


def test_dense_models_of_equal_total_parameters_and_equal_active_compute() -> None:
    cfg = ModelConfig()  # the embedded SCAR model
    width_step = 2 * cfg.d_model * cfg.n_layers  # parameters per unit of d_ff in a dense model
    total = dense_equal_total_params(cfg)
    assert total.ffn == "dense" and abs(count_params(total) - count_params(cfg)) <= width_step / 2
    active = dense_equal_active_compute(cfg, 1.5)
    assert active.ffn == "dense" and active.d_ff < total.d_ff
    assert abs(count_params(active) - expected_active_params(cfg, 1.5)) <= width_step / 2
    assert dense_equal_active_compute(dataclasses.replace(cfg, ffn="moe"), 2.0).d_ff > active.d_ff
    with pytest.raises(ConfigError, match="mean_k"):
        dense_equal_active_compute(cfg, 2.5)


# ------------------------------------------------------------------------------------ determinism, fit


@pytest.mark.parametrize("ffn", ["scar", "moe"])
def test_same_seed_same_numbers(ffn: str) -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        model = tiny_model(ffn, seed=5, dropout=0.1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        idx = random_tokens(2, 9)
        torch.manual_seed(11)  # dropout masks
        loss = model(idx, idx.roll(-1, 1)).loss
        loss.backward()
        opt.step()
        return loss.detach(), model.blocks[0].ffn.experts[0].fc.weight.detach().clone()

    (l1, w1), (l2, w2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(w1, w2)


@pytest.mark.parametrize("ffn", FFNS)
def test_overfits_one_batch(ffn: str) -> None:
    model = tiny_model(ffn, seed=1)
    idx = random_tokens(4, 16, seed=2)
    targets = idx.roll(-1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        out = model(idx, targets)
        losses.append(out.lm_loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert losses[0] > 3.5 and model(idx, targets).lm_loss.item() < 0.5


@pytest.mark.parametrize("ffn", ["scar", "moe"])
def test_bf16_autocast_trains_and_routes_in_float32(ffn: str) -> None:
    model = tiny_model(ffn)
    idx = random_tokens(2, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(idx, idx.roll(-1, 1))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(r.probs.dtype == torch.float32 for r in out.routing)
    assert model.blocks[0].ffn.experts[0].fc.weight.grad is not None

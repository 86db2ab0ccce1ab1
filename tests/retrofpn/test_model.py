"""Retro-FPN and the three backbones: attention vs per-point loops, the gate, level shapes and labels, every
backbone with and without Retro-FPN (forward, backward, gradients, overfitting, determinism), bad inputs."""

from __future__ import annotations

import dataclasses
import pickle
import re

import pytest
import torch

from retrofpn import reference as ref
from retrofpn.backbones.pt import PointTransformerLayer
from retrofpn.backbones.ptv2 import GroupedVectorAttention
from retrofpn.config import ModelConfig, paper_model_config
from retrofpn.model import (
    HierarchyHook,
    RetroCrossAttention,
    RetroTransformer,
    Segmentor,
    compute_hierarchy,
    deep_supervision_loss,
)
from retrofpn.ops import knn_query, offset_to_batch
from shared.errors import ConfigError, DataError

BACKBONES = ("pt", "ptv2", "minkunet")
NUM_CLASSES = 4
IGNORE = -1


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_cfg(backbone: str, retro: bool = True, **kw) -> ModelConfig:
    """Widths of 8-16 so every test runs in well under a second per step."""
    small = {
        "pt": {"pt_planes": [8, 8, 16, 16, 16], "pt_blocks": [1, 2, 1, 1, 1], "pt_share_planes": 4},
        "ptv2": {
            "ptv2_patch_channels": 8, "ptv2_enc_channels": [8, 16, 16, 16], "ptv2_enc_groups": [2, 4, 4, 4],
            "ptv2_dec_channels": [8, 8, 16, 16], "ptv2_dec_groups": [2, 2, 4, 4],
            "ptv2_grid_sizes": [0.15, 0.3, 0.6, 1.2],
        },
        "minkunet": {"mink_init_dim": 8, "mink_planes": [8, 16, 16, 16, 16, 16, 8, 8]},
    }[backbone]  # fmt: skip
    return ModelConfig(
        backbone=backbone, retro=retro, num_classes=NUM_CLASSES, retro_dim=8, **{**small, **kw}
    )


def room(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2 x 1.6 x 1.2 m corner: floor (label 0), two walls (1), a box (2) and some unlabelled clutter."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 3, generator=g) * torch.tensor([2.0, 1.6, 1.2])
    part = torch.randint(0, 4, (n,), generator=g)
    coord = u.clone()
    coord[part == 0, 2] = 0.0  # floor
    wall = part == 1
    on_x = wall & (torch.rand(n, generator=g) < 0.5)
    coord[on_x, 0] = 0.0
    coord[wall & ~on_x, 1] = 0.0
    box = part == 2
    coord[box] = torch.tensor([1.2, 0.8, 0.0]) + torch.rand(int(box.sum()), 3, generator=g) * 0.4
    labels = part.clone()
    labels[part == 3] = IGNORE
    color = torch.rand(n, 3, generator=g) * 0.2 + (part[:, None] == torch.arange(3)).float() * 0.5
    return coord, color, labels


def tiny_batch(sizes: tuple[int, ...] = (300, 220), seed: int = 0) -> tuple[dict, torch.Tensor]:
    parts = [room(n, seed + i) for i, n in enumerate(sizes)]
    coord = torch.cat([p[0] for p in parts])
    batch = {
        "coord": coord,
        "feat": torch.cat([p[1] for p in parts]),
        "offset": torch.tensor(sizes).cumsum(0),
        "grid_coord": torch.floor(coord / 0.08).long(),
    }
    return batch, torch.cat([p[2] for p in parts])


# --- the retro-transformer -------------------------------------------------------------------------------------


def attention_inputs(dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q_coord, q_off = torch.rand(9, 3, generator=g, dtype=torch.float64), torch.tensor([6, 9])
    kv_coord, kv_off = torch.rand(7, 3, generator=g, dtype=torch.float64), torch.tensor([5, 7])
    nb = knn_query(4, kv_coord, kv_off, q_coord, q_off)  # the second cloud has 2 < 4 coarse points: padded
    query = torch.randn(9, dim, generator=g, dtype=torch.float64)
    kv = torch.randn(7, dim, generator=g, dtype=torch.float64)
    return query, kv, q_coord, kv_coord, nb


def randomise_batchnorms(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_retro_cross_attention_equals_the_per_point_loop(groups: int) -> None:
    torch.manual_seed(0)
    attn = RetroCrossAttention(8, groups).double()
    randomise_batchnorms(attn)
    attn.eval()
    query, kv, q_coord, kv_coord, nb = attention_inputs()
    assert not bool(nb.valid[6:].all())
    with torch.no_grad():
        fast = attn(query, kv, q_coord, kv_coord, nb)
        slow = ref.retro_attention_reference(attn, query, kv, q_coord, kv_coord, nb)
    assert torch.allclose(fast, slow, atol=1e-12)


def test_padded_neighbours_do_not_change_the_attention() -> None:
    """A padded slot repeats the nearest neighbour; masking it must give the answer of the k=2 query."""
    torch.manual_seed(1)
    attn = RetroCrossAttention(8, 2).double().eval()
    query, kv, q_coord, kv_coord, nb = attention_inputs()
    nb2 = knn_query(2, kv_coord, torch.tensor([5, 7]), q_coord, torch.tensor([6, 9]))
    with torch.no_grad():
        assert torch.allclose(
            attn(query, kv, q_coord, kv_coord, nb)[6:], attn(query, kv, q_coord, kv_coord, nb2)[6:]
        )


def test_pt_vector_attention_and_ptv2_grouped_attention_equal_their_loops() -> None:
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(3)
    coord, offset = torch.rand(11, 3, generator=g, dtype=torch.float64), torch.tensor([8, 11])
    nb = knn_query(5, coord, offset)  # the second cloud has 3 < 5 points
    x = torch.randn(11, 8, generator=g, dtype=torch.float64)
    pt = PointTransformerLayer(8, 4).double()
    gva = GroupedVectorAttention(8, 2).double()
    for layer, loop in ((pt, ref.pt_attention_reference), (gva, ref.gva_reference)):
        randomise_batchnorms(layer)
        layer.eval()
        with torch.no_grad():
            assert torch.allclose(layer(x, coord, nb), loop(layer, x, coord, nb), atol=1e-12)


@pytest.mark.parametrize("z", [0.0, 1.0])
def test_semantic_gate_selects_y_or_the_information_projection(z: float) -> None:
    torch.manual_seed(4)
    rt = RetroTransformer(6, 8, 2).double().eval()
    randomise_batchnorms(rt)
    with torch.no_grad():  # BN(y + info) == ±100 whatever the input, gate weight I: z = σ(±100)
        rt.gate_norm.weight.zero_()
        rt.gate_norm.bias.fill_(100.0 if z else -100.0)
        rt.gate.weight.copy_(torch.eye(8))
    _, kv, q_coord, kv_coord, nb = attention_inputs()
    x = torch.randn(9, 6, dtype=torch.float64)
    with torch.no_grad():
        h = rt(x, q_coord, nb, (kv, kv_coord))
        info = rt.info(x)
        y = rt.out_proj(rt.attention(rt.query_in(x), kv, q_coord, kv_coord, nb))
    assert torch.allclose(h, info if z else y, atol=1e-12)
    assert not torch.allclose(info, y)


def test_coarsest_level_attends_to_its_own_points() -> None:
    torch.manual_seed(5)
    rt = RetroTransformer(6, 8, 2).double().eval()
    g = torch.Generator().manual_seed(0)
    coord, offset = torch.rand(9, 3, generator=g, dtype=torch.float64), torch.tensor([5, 9])
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    nb = knn_query(3, coord, offset)
    with torch.no_grad():
        own = rt(x, coord, nb)
        explicit = rt(x, coord, nb, (rt.query_in(x), coord))
    assert torch.allclose(own, explicit)


# --- the segmentor, per backbone ------------------------------------------------------------------------------


@pytest.mark.parametrize("retro", [True, False])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_backward_shapes_and_gradients(backbone: str, retro: bool) -> None:
    torch.manual_seed(0)
    model = Segmentor(tiny_cfg(backbone, retro))
    batch, labels = tiny_batch((900, 700))  # big enough for several points per cloud at level 5
    out = model(batch)
    assert out.logits.shape == (1600, NUM_CLASSES)
    assert len(out.level_logits) == (5 if retro else 1)
    if retro:
        rows = [len(link.rows) for link in out.hierarchy.retro]
        assert [lg.shape[0] for lg in out.level_logits] == rows
        assert rows == sorted(rows, reverse=True) or backbone == "ptv2"  # PTv2 level 2 is subsampled by 4
    loss, per_level = model.loss(out, labels)
    assert torch.isfinite(loss) and len(per_level) == len(out.level_logits)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@pytest.mark.parametrize("retro", [True, False])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_overfits_one_tiny_batch(backbone: str, retro: bool) -> None:
    torch.manual_seed(0)
    model = Segmentor(tiny_cfg(backbone, retro))
    batch, labels = tiny_batch((110, 90), seed=3)
    batch["hierarchy"] = compute_hierarchy(model.cfg, batch["coord"], batch["offset"], batch["grid_coord"],
                                           torch.Generator().manual_seed(0))  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = model(batch)
        loss, _ = model.loss(out, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.35 * losses[0], losses
    # train-mode predictions (eval-mode BatchNorm statistics are not settled after 30 steps of lr 1e-2)
    keep = labels != IGNORE
    assert float((out.logits.argmax(1)[keep] == labels[keep]).float().mean()) > 0.9


@pytest.mark.parametrize("backbone", BACKBONES)
def test_same_seed_same_output_and_precomputed_hierarchy(backbone: str) -> None:
    batch, labels = tiny_batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = Segmentor(tiny_cfg(backbone))
        b = HierarchyHook(model.cfg, seed=1)(dict(batch))  # what a data-loader worker does
        out = model(b)
        outs.append((out.logits.detach(), model.loss(out, labels)[0].detach()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    if backbone != "ptv2":  # no random subsampling: the model's own hierarchy is the same
        torch.manual_seed(7)
        assert torch.equal(Segmentor(tiny_cfg(backbone))(batch).logits.detach(), outs[0][0])


def test_ptv2_level_two_is_a_seeded_quarter_of_each_cloud() -> None:
    cfg = tiny_cfg("ptv2")
    batch, _ = tiny_batch()
    h1, h2 = (HierarchyHook(cfg, seed=0)(dict(batch))["hierarchy"] for _ in range(2))
    h3 = HierarchyHook(cfg, seed=1)(dict(batch))["hierarchy"]
    counts = torch.bincount(offset_to_batch(h1.levels[1].offset))
    assert torch.equal(torch.bincount(offset_to_batch(h1.retro[1].offset)), counts // 4)
    assert torch.equal(h1.retro[1].rows, h2.retro[1].rows) and not torch.equal(
        h1.retro[1].rows, h3.retro[1].rows
    )
    assert len(h1.retro[0].rows) == 520  # level 1 keeps every point: the prediction is read there


def test_minkunet_points_sharing_a_voxel_share_logits_and_majority_labels() -> None:
    torch.manual_seed(0)
    model = Segmentor(tiny_cfg("minkunet")).eval()
    batch, labels = tiny_batch()
    batch["grid_coord"] = torch.floor(batch["coord"] / 0.25).long()  # coarse voxels: many points per voxel
    with torch.no_grad():
        out = model(batch)
    p2v = out.hierarchy.point_to_voxel
    assert len(torch.unique(p2v)) < 520
    assert torch.equal(out.logits, out.level_logits[0][p2v])
    voxel_labels = out.hierarchy.retro_labels(labels, NUM_CLASSES, IGNORE)[0]
    assert torch.equal(voxel_labels, ref.majority_vote_reference(labels, p2v, len(voxel_labels), IGNORE))


def test_pt_level_labels_follow_the_fps_chain() -> None:
    cfg = tiny_cfg("pt")
    batch, labels = tiny_batch()
    h = compute_hierarchy(cfg, batch["coord"], batch["offset"])
    per_level = h.retro_labels(labels, NUM_CLASSES, IGNORE)
    idx = torch.arange(520)
    for li in range(1, 5):
        idx = idx[h.levels[li].sample_idx]
        assert torch.equal(per_level[li], labels[idx])


def test_deep_supervision_weights_and_an_all_ignored_level() -> None:
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g)]
    labels = [torch.tensor([0, 1, 2, -1, 1, 0]), torch.full((4,), -1)]
    total, per_level = deep_supervision_loss(logits, labels, [2.0, 0.4], -1)
    ce = torch.nn.functional.cross_entropy(logits[0], labels[0], ignore_index=-1)
    assert torch.allclose(total, 2.0 * ce) and float(per_level[1]) == 0.0


def test_paper_scale_configs_build_with_the_official_level_widths() -> None:
    widths = {
        "pt": [32, 64, 128, 256, 512],
        "ptv2": [48, 96, 192, 384, 512],
        "minkunet": [96, 96, 128, 128, 256],
    }
    for backbone, expected in widths.items():
        model = Segmentor(paper_model_config(backbone))
        assert model.backbone.level_channels == expected
        rt = model.retro_fpn.transformers[0]
        dim = {"pt": 32, "ptv2": 48, "minkunet": 32}[backbone]
        assert (
            rt.info.out_features == dim
            and rt.attention.groups == {"pt": 1, "ptv2": 4, "minkunet": 4}[backbone]
        )


# --- bad inputs ------------------------------------------------------------------------------------------------


def test_bad_batches_raise_one_line_data_errors() -> None:
    model = Segmentor(tiny_cfg("minkunet"))
    batch, _ = tiny_batch()
    no_grid = {k: v for k, v in batch.items() if k != "grid_coord"}
    with pytest.raises(DataError, match="grid_coord"):
        model(no_grid)
    with pytest.raises(DataError, match="in_channels"):
        model({**batch, "feat": torch.rand(520, 5)})
    with pytest.raises(DataError, match="offset"):
        model({**batch, "offset": torch.tensor([300, 500])})
    with pytest.raises(DataError, match="NaN"):
        model({**batch, "coord": batch["coord"].clone().index_fill_(0, torch.tensor([3]), float("nan"))})
    with pytest.raises(DataError, match="num_classes"):
        model.loss(model(batch), torch.full((520,), 9))
    tiny, _ = tiny_batch((40,))
    with pytest.raises(DataError, match="larger clouds"):  # PT: 40 -> 10 -> 2 -> 1 -> 1 points
        Segmentor(tiny_cfg("pt"))(tiny)


def test_hierarchy_built_for_another_model_is_a_config_error() -> None:
    batch, _ = tiny_batch()
    batch["hierarchy"] = compute_hierarchy(tiny_cfg("pt", retro=False), batch["coord"], batch["offset"])
    with pytest.raises(ConfigError, match=r"model\.retro"):
        Segmentor(tiny_cfg("pt", retro=True))(batch)


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"pt_planes": [16, 32]}, "pt_planes"),
        ({"retro_dim": 10, "retro_groups": 4}, "retro_dim"),
        ({"retro_strides": [2, 1, 1, 1, 1]}, "retro_strides"),
        ({"ignore_index": 3}, "ignore_index"),
        ({"pt_share_planes": 5}, "pt_share_planes"),
        ({"ptv2_enc_groups": [5, 8, 8, 16]}, "ptv2_enc_groups"),
        ({"retro_loss_weights": [0.0] * 5}, "retro_loss_weights"),
        ({"backbone": "pointnet"}, "backbone"),
    ],
)
def test_impossible_configs_name_the_key(kw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"model\.{key}"):
        ModelConfig(**kw)


def test_every_config_field_has_an_attributes_line() -> None:
    doc = ModelConfig.__doc__ or ""
    block = doc.split("Attributes:")[1]
    documented = set(re.findall(r"^\s{8}(\w+): \S", block, flags=re.M))
    assert documented == {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_hierarchy_sent_from_a_worker_gives_the_same_output(backbone: str) -> None:
    """DataLoader workers pickle the collated batch; the hierarchy must survive it (and ``to``)."""
    torch.manual_seed(0)
    model = Segmentor(tiny_cfg(backbone)).eval()
    batch, _ = tiny_batch()
    batch = HierarchyHook(model.cfg)(batch)
    sent = pickle.loads(pickle.dumps(batch))
    sent["hierarchy"] = sent["hierarchy"].to("cpu")
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(sent).logits)


def test_pt_with_bucket_fps_runs_and_samples_the_same_counts() -> None:
    batch, labels = tiny_batch()
    torch.manual_seed(0)
    model = Segmentor(tiny_cfg("pt", pt_fps="bucket"))
    out = model(batch)
    assert [lv.num_points for lv in out.hierarchy.levels] == [
        520,
        130,
        31,
        7,
        2,
    ]  # (300, 220) -> 75+55, 18+13, 4+3, 1+1
    assert torch.isfinite(model.loss(out, labels)[0])

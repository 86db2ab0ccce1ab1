"""Score a trained segmentor with the official test protocol: votes over every original point, mIoU / mAcc / OA.

    python -m retrofpn.evaluate --config C --checkpoint P [--split test] [--out metrics.json] [--device auto]
                                [--save-predictions DIR]

The model is rebuilt from the checkpoint's own ``model`` section (``load_checkpoint(paper="retrofpn")``
refuses another package's checkpoint, naming it); the scenes and the protocol come from ``--config``'s
``data`` section. The protocol is ``retrofpn.data.vote_scene`` (Point Transformer ``test.py``: voxel passes
covering every point, crops of ``test_voxel_max``, logits summed; MinkUNet: ``test_augmentations`` voxelizer
draws; PTv2: the fixed test augmentations, softmax summed), and the metrics are over all original points
(``shared.metrics.ConfusionMatrix``, ignored points skipped). ``--split val`` scores the validation scenes
held out of the training split (``eval.val_scenes``) with the same full protocol; the ``val_miou`` that
training logs each epoch is the cheaper official validation (one voxelised pass per scene, see
``validate``). ``--save-predictions DIR`` writes ``<scene>.npy`` (N,) int16 labels per scene for the pictures
(``retrofpn.render``). Under ``torchrun`` each rank votes every W-th scene and the confusion matrices are
summed over the ranks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from retrofpn.config import ModelConfig, RetrofpnConfig
from retrofpn.data import (
    SceneDataset,
    SceneRef,
    collate,
    evaluate_scenes,
    list_scenes,
    load_scene,
)
from retrofpn.data.scene import Scene
from retrofpn.model import HierarchyHook, Segmentor
from retrofpn.ops import Hierarchy
from shared.checkpoint import load_checkpoint, restore_checkpoint
from shared.cli import evaluate_parser, write_json_out
from shared.config import config_from_dict, load_config
from shared.distributed import DistInfo, cleanup_distributed, init_distributed
from shared.errors import ConfigError, DataError, run_cli
from shared.metrics import ConfusionMatrix

SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------------ the splits
def val_positions(n: int, v: int) -> list[int]:
    """Positions of the ``v`` validation scenes in a sorted list of ``n`` training scenes: every
    (n // v)-th, shifted by one more each time, so the held-out scenes spread over the areas and, in the
    S3DIS layout (areas of rooms sorted by name), over different room kinds."""
    if v == 0:
        return []
    step = n // v
    return [i * step + i % step for i in range(v)]


def split_scenes(cfg: RetrofpnConfig) -> dict[str, list[SceneRef]]:
    """``{"train": ..., "val": ..., "test": ...}``: the data set's training split minus the validation scenes
    (``eval.val_scenes`` held out of it, never the test area: the official code validates on Area 5
    itself), and the test split."""
    train = list_scenes(cfg.data, "train")
    v = cfg.eval.val_scenes
    if v >= len(train):
        raise ConfigError(
            f"eval.val_scenes = {v} but the training split of {cfg.data.root} has only {len(train)} scenes; "
            "lower eval.val_scenes (0 = no validation)"
        )
    held = set(val_positions(len(train), v))
    return {
        "train": [r for i, r in enumerate(train) if i not in held],
        "val": [r for i, r in enumerate(train) if i in held],
        "test": list_scenes(cfg.data, "test"),
    }


def load_split(cfg: RetrofpnConfig, split: str) -> list[Scene]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    refs = split_scenes(cfg)[split]
    if not refs:
        raise ConfigError(f"the {split} split is empty; set eval.val_scenes >= 1 to score a validation split")
    return [load_scene(r, cfg.data) for r in refs]


# ----------------------------------------------------------------------------------------- model and batches
def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Every tensor of a batch, and its ``Hierarchy``, on ``device``."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
        elif isinstance(value, Hierarchy):
            value = value.to(device, non_blocking=True)
        out[key] = value
    return out


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA when ``amp`` (the official PTv2 runs use AMP); a no-op otherwise."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def make_predict(model: nn.Module, cfg: ModelConfig, device: torch.device, amp: bool = False, seed: int = 0
                 ) -> Callable[[dict], Tensor]:  # fmt: skip
    """``batch -> (N, K) float32 logits`` for the voting protocol: the hierarchy built on the CPU by the same
    ``HierarchyHook`` as in training, the forward on ``device`` without gradients."""
    hook = HierarchyHook(cfg, seed)

    def predict(batch: dict) -> Tensor:
        batch = to_device(hook(batch), device)
        with torch.no_grad(), autocast(device, amp):
            return model(batch).logits.float()

    return predict


def load_trained_model(checkpoint: str | Path, device: torch.device) -> tuple[Segmentor, dict[str, Any]]:
    """Rebuild the segmentor a checkpoint describes (its own ``model`` section) and load its weights."""
    state = load_checkpoint(checkpoint, map_location=device, paper="retrofpn")
    if not state.get("config") or "model" not in state["config"]:
        raise ConfigError(f"{checkpoint} carries no model config; it was not written by retrofpn.train")
    model = Segmentor(config_from_dict(ModelConfig, state["config"]["model"])).to(device)
    restore_checkpoint(state, model=model, restore_rng=False)
    return model.eval(), state


# ------------------------------------------------------------------------------------------------- metrics
def all_reduce_sum(matrix: ConfusionMatrix, info: DistInfo) -> ConfusionMatrix:
    """Sum a confusion matrix over the ranks (each rank scored its own scenes)."""
    if info.distributed and dist.is_initialized():
        m = matrix.matrix.to(info.device)
        dist.all_reduce(m, op=dist.ReduceOp.SUM)
        matrix.matrix = m.cpu()
    return matrix


def metrics_of(matrix: ConfusionMatrix, class_names: Sequence[str]) -> dict[str, Any]:
    """mIoU / mAcc / OA, per-class IoU and accuracy by name, and the point counts behind them."""
    scores = matrix.compute()
    m = matrix.matrix
    gt = m.sum(1)
    acc = torch.where(
        gt > 0, m.diag().double() / gt.clamp(min=1), torch.full_like(gt, float("nan"), dtype=torch.float64)
    )
    return {
        "miou": scores["miou"],
        "macc": scores["macc"],
        "oa": scores["oa"],
        "iou": dict(zip(class_names, scores["iou"])),
        "acc": dict(zip(class_names, acc.tolist())),
        "points": int(m.sum()),
        "points_per_class": dict(zip(class_names, gt.tolist())),
    }


def score_scenes(
    model: nn.Module,
    scenes: Sequence[Scene],
    cfg: RetrofpnConfig,
    info: DistInfo,
    amp: bool = False,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The full test protocol over ``scenes`` (rank r votes scenes r, r + W, ...): the metrics over every
    original point of every scene, and this rank's per-scene (N,) int16 predictions (in its scene order)."""
    mine = list(scenes)[info.rank :: info.world_size]
    was_training = model.training
    model.eval()
    predict = make_predict(model, cfg.model, info.device, amp)
    matrix, predictions = evaluate_scenes(mine, predict, cfg.data, cfg.eval.vote_seed)
    model.train(was_training)
    metrics = metrics_of(all_reduce_sum(matrix, info), cfg.data.class_names)
    metrics["scenes"] = len(scenes)
    metrics["protocol"] = protocol_name(cfg)
    return metrics, predictions


def protocol_name(cfg: RetrofpnConfig) -> str:
    d = cfg.data
    if d.pipeline == "pt":
        crop = f"crops of {d.test_voxel_max}" if d.test_voxel_max else "no crops"
        return f"pt: voxel passes at {d.voxel_size} m covering every point, {crop}, logits summed"
    if d.pipeline == "mink":
        return f"mink: {d.test_augmentations} voxelizer draws at {d.voxel_size} m, logits summed"
    return (
        f"ptv2: {d.test_augmentations} test augmentations x voxel passes at {d.voxel_size} m, softmax summed"
    )


# ----------------------------------------------------------------------------------------------- validation
def validation_dataset(cfg: RetrofpnConfig, scenes: Sequence[Scene]) -> SceneDataset:
    """One voxelised pass per held-out scene, as the official PT validation (``data_prepare`` with
    ``voxel_max=800000``, no augmentation); the same draw every epoch (epoch 0 of ``vote_seed``)."""
    data = replace(cfg.data, augment=False, voxel_max=cfg.eval.val_voxel_max, mix_prob=0.0)
    return SceneDataset(data, "val", seed=cfg.eval.vote_seed, scenes=scenes, loop=1)


def _batches(dataset: SceneDataset, indices: Sequence[int], size: int) -> Iterator[dict]:
    for start in range(0, len(indices), size):
        yield collate([dataset[i] for i in indices[start : start + size]])


def validate(model: nn.Module, dataset: SceneDataset, cfg: RetrofpnConfig, info: DistInfo, amp: bool = False
             ) -> dict[str, Any]:  # fmt: skip
    """mIoU / mAcc / OA over the points of one voxelised pass of each validation scene (rank r scores
    samples r, r + W, ...; the confusion matrices are summed over the ranks)."""
    was_training = model.training
    model.eval()
    predict = make_predict(model, cfg.model, info.device, amp)
    matrix = ConfusionMatrix(cfg.data.num_classes, cfg.data.ignore_index)
    dataset.set_epoch(0)
    mine = list(range(len(dataset)))[info.rank :: info.world_size]
    for batch in _batches(dataset, mine, cfg.data.test_batch):
        matrix.update(predict(batch).argmax(1).cpu(), batch["segment"])
    model.train(was_training)
    return metrics_of(all_reduce_sum(matrix, info), cfg.data.class_names)


# ---------------------------------------------------------------------------------------------------- main
def save_predictions(folder: Path, scenes: Sequence[Scene], predictions: Sequence[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for scene, pred in zip(scenes, predictions):
        np.save(folder / f"{scene.name}.npy", pred.astype(np.int16))


def main(argv: Sequence[str] | None = None) -> None:
    parser = evaluate_parser("score a trained Retro-FPN / backbone checkpoint", RetrofpnConfig, splits=SPLITS)
    parser.add_argument(
        "--save-predictions",
        default=None,
        metavar="DIR",
        help="write <scene>.npy (N,) int16 labels per scene",
    )
    args = parser.parse_args(argv)
    cfg = load_config(RetrofpnConfig, args.config, args.overrides)
    info = init_distributed(args.device)
    try:
        model, state = load_trained_model(args.checkpoint, info.device)
        amp = bool((state["config"].get("train") or {}).get("amp", False))  # as the model was trained
        if model.cfg.num_classes != cfg.data.num_classes or model.cfg.in_channels != cfg.data.in_channels:
            raise DataError(
                f"{args.checkpoint} was trained with {model.cfg.num_classes} classes and "
                f"{model.cfg.in_channels} input channels; --config {args.config} gives "
                f"{cfg.data.num_classes} and {cfg.data.in_channels}: pass the config it was trained with"
            )
        cfg = replace(cfg, model=model.cfg)
        scenes = load_split(cfg, args.split)
        metrics, predictions = score_scenes(model, scenes, cfg, info, amp=amp)
        if args.save_predictions:
            save_predictions(Path(args.save_predictions), scenes[info.rank :: info.world_size], predictions)
        if info.is_main:
            record = {"checkpoint": str(args.checkpoint), "epoch": state.get("epoch"), "split": args.split}
            write_json_out(json.dumps({**record, **metrics}, indent=2), args.out)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_cli(main))

"""Pictures of labelled rooms: ground truth beside the predictions of models, rendered headless to PNG.

    python -m retrofpn.render --config C --scene Area_5_office_1 --predictions runs/.../predictions [...] \
        [--names PT "PT + Retro-FPN"] --out room.png

Top-down orthographic view (matplotlib, Agg backend; open3d's offscreen renderer needs an EGL/OSMesa context that
a headless CPU machine may lack, and an image is enough here): a z-buffer of 6 cm pixels, each the class of its
highest point, with the points whose ground truth is ceiling or beam left out so the room below is visible. The same camera and scale for every panel; one colour per class with a legend of the class
names; each panel's title names the model and its mIoU on this room. S3DIS colours are those of PointNet's
``indoor3d_util.g_class2color`` (Qi et al., CVPR 2017, the usual S3DIS palette); other label sets use
matplotlib's ``tab20``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from retrofpn.config import RetrofpnConfig
from retrofpn.data import S3DIS_CLASSES, Scene, list_scenes, load_scene
from shared.config import load_config
from shared.errors import DataError, run_cli
from shared.metrics import ConfusionMatrix

S3DIS_COLORS = {  # PointNet indoor3d_util.g_class2color
    "ceiling": (0, 255, 0), "floor": (0, 0, 255), "wall": (0, 255, 255), "beam": (255, 255, 0),
    "column": (255, 0, 255), "window": (100, 100, 255), "door": (200, 200, 100), "table": (170, 120, 200),
    "chair": (255, 0, 0), "sofa": (200, 100, 100), "bookcase": (10, 200, 100), "board": (200, 200, 200),
    "clutter": (50, 50, 50),
}  # fmt: skip
IGNORED_COLOR = (0.85, 0.85, 0.85)


def class_colors(class_names: Sequence[str]) -> np.ndarray:
    """(K, 3) RGB in [0, 1]: the S3DIS palette when the names are S3DIS's, else ``tab20``."""
    if tuple(class_names) == S3DIS_CLASSES:
        return np.array([S3DIS_COLORS[c] for c in class_names], dtype=np.float64) / 255.0
    cmap = plt.get_cmap("tab20")
    return np.array([cmap(i % 20)[:3] for i in range(len(class_names))])


def room_miou(labels: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = -1) -> float:
    """mIoU of one room over its labelled points (classes absent from truth and prediction left out)."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    matrix.update(torch.from_numpy(np.asarray(pred)), torch.from_numpy(np.asarray(labels)))
    return float(matrix.compute()["miou"])


def top_down(coord: np.ndarray, pixel: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A z-buffer of the points seen from above: (pixels,) flat pixel ids and (pixels,) the row of the highest
    point in each, and the image shape (rows, cols); x to the right, y up."""
    ij = np.floor((coord[:, :2] - coord[:, :2].min(axis=0)) / pixel).astype(np.int64)
    shape = (int(ij[:, 1].max()) + 1, int(ij[:, 0].max()) + 1)
    flat = (shape[0] - 1 - ij[:, 1]) * shape[1] + ij[:, 0]
    order = np.lexsort((-coord[:, 2], flat))  # by pixel, the highest point first
    first = np.r_[True, flat[order][1:] != flat[order][:-1]]
    return flat[order][first], order[first], shape


def render_room(
    coord: np.ndarray,
    truth: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
    hide: Sequence[str] = ("ceiling", "beam"),
    ignore_index: int = -1,
    pixel: float = 0.06,
) -> Path:
    """``coord`` (N, 3), ``truth`` (N,) and one ``(name, labels (N,))`` per model -> a PNG with the ground
    truth first and each model after it, all from the same top-down camera (``pixel`` metres a pixel, each
    pixel the class of its highest point). Panel titles carry each model's mIoU on this room, over all its
    labelled points; points whose truth is a ``hide`` class are not drawn so the room below is visible."""
    coord, truth = np.asarray(coord), np.asarray(truth)
    n = len(coord)
    for name, labels in panels:
        if len(labels) != n:
            raise DataError(f"predictions of {name} have {len(labels)} labels but the room has {n} points")
    k = len(class_names)
    colors = class_colors(class_names)
    hidden = [c for c in hide if c in class_names]
    keep = np.flatnonzero(~np.isin(truth, [list(class_names).index(c) for c in hidden]))
    if keep.size == 0:
        raise DataError("every point of the room is of a hidden class; nothing to draw")
    pixels, rows, shape = top_down(coord[keep], pixel)
    rows = keep[rows]

    def image(labels: np.ndarray) -> np.ndarray:
        img = np.ones((shape[0] * shape[1], 3))
        lab = labels[rows]
        img[pixels] = np.where((lab >= 0)[:, None], colors[np.clip(lab, 0, k - 1)], IGNORED_COLOR)
        return img.reshape(shape[0], shape[1], 3)

    cols = 1 + len(panels)
    height = 4.0 * shape[0] / shape[1]
    fig, axes = plt.subplots(1, cols, figsize=(4.0 * cols, height + 1.5), layout="constrained", squeeze=False)
    titles = ["ground truth"] + [f"{name}\nroom mIoU {room_miou(truth, lab, k, ignore_index):.3f}"
                                 for name, lab in panels]  # fmt: skip
    for ax, labels, label in zip(axes[0], [truth, *(np.asarray(p) for _, p in panels)], titles):
        ax.imshow(image(labels), interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = sorted({int(v) for lab in [truth, *(p for _, p in panels)] for v in np.unique(lab[rows])})
    handles = [Patch(color=colors[c], label=class_names[c]) for c in shown if 0 <= c < k]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False
    )
    note = f"top-down, {pixel * 100:.0f} cm pixels" + (
        f"; {' and '.join(hidden)} not drawn" if hidden else ""
    )
    fig.suptitle(f"{title} ({note})" if title else note, fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def find_scene(cfg: RetrofpnConfig, name: str) -> Scene:
    """A scene of the test or training split by name."""
    for split in ("test", "train"):
        for ref in list_scenes(cfg.data, split):
            if ref.name == name:
                return load_scene(ref, cfg.data)
    raise DataError(f"{cfg.data.root}: no scene named {name}; give the name of a scene of that data set")


def load_predictions(folder: str | Path, scene: Scene) -> np.ndarray:
    path = Path(folder) / f"{scene.name}.npy"
    if not path.is_file():
        raise DataError(
            f"{path}: no predictions of {scene.name}; run retrofpn.evaluate --save-predictions {folder}"
        )
    pred = np.load(path, allow_pickle=False)
    if pred.shape != (len(scene),):
        raise DataError(
            f"{path}: {pred.shape} labels for a scene of {len(scene)} points; wrong scene or data"
        )
    return pred.astype(np.int64)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ground truth and predictions of one room, top-down, to PNG")
    parser.add_argument("--config", required=True, help="the config whose data section holds the scene")
    parser.add_argument("--scene", required=True, help="scene name, e.g. Area_5_office_1")
    parser.add_argument(
        "--predictions", nargs="+", required=True, help="folders written by --save-predictions"
    )
    parser.add_argument("--names", nargs="+", default=None, help="one panel title per predictions folder")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    names = args.names or [Path(p).parent.name or str(p) for p in args.predictions]
    if len(names) != len(args.predictions):
        raise DataError(f"--names gives {len(names)} names for {len(args.predictions)} --predictions folders")
    cfg = load_config(RetrofpnConfig, args.config)
    scene = find_scene(cfg, args.scene)
    panels = [(n, load_predictions(p, scene)) for n, p in zip(names, args.predictions)]
    render_room(
        scene.coord, scene.segment.astype(np.int64), panels, cfg.data.class_names, args.out, title=scene.name
    )


if __name__ == "__main__":
    raise SystemExit(run_cli(main))

